"""Render the whole DC into an output folder, rack by rack.

    OUT/rack-101/openvz/<CTID>.conf|.mount|.umount   OpenVZ config + action scripts
    OUT/rack-101/lxc/<CTID>.config                   LXC config of the same CT
    OUT/rack-101/resolv/<CTID>.conf                  the CT's resolv.conf
    OUT/rack-101/storage/<storage-node>.exports      the storage node's export list

All-or-nothing: everything that changed is rendered in memory first; a template
error leaves the folder untouched. Unchanged work is skipped without rendering:
OUT/.ctmanager-render.json records, per CT, a hash of its inputs and the stat of
the files written, like a build system. A hand-edited file no longer matches its
stat and is rendered again. Files we never wrote are never deleted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import queries
from ..errors import InputError
from ..model import rack_name
from ..store import Store
from . import files
from .ctfiles import CT_FILES, EXPORTS_FILE, TEMPLATES, ct_context, exports_context, rack_context
from .engine import Engine

MANIFEST = ".ctmanager-render.json"
FORMAT = 1
PARALLEL_MIN = 2000  # below this many units, forking costs more than it saves
WRITE_THREADS = 4
WRITE_CHUNK = 512


@dataclass
class Unit:
    key: str
    outputs: list[tuple[str, str, int]]  # (relpath, template, mode)
    make_context: Callable[[], dict[str, Any]]  # built only if the unit is rendered


@dataclass
class RenderReport:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    rendered_units: int = 0
    skipped_units: int = 0
    diff: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "removed": self.removed, "unchanged": self.unchanged,
                "rendered_units": self.rendered_units, "skipped_units": self.skipped_units}


def render_tree(store: Store, outdir: Path, *, diff: bool = False, engine: Engine | None = None,
                workers: int | None = None) -> RenderReport:
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output {outdir} exists and is not a folder")
    engine = engine or Engine()
    units = _units(store, engine)
    old = _load_manifest(outdir)
    report = RenderReport()
    todo: list[str] = []
    manifest: dict[str, Any] = {}
    for uid, unit in units.items():
        prev = old.get(uid)
        if prev and prev["key"] == unit.key and sorted(prev["files"]) == sorted(r for r, _, _ in unit.outputs) and all(
            files.stat_matches(outdir / rel, st) for rel, st in prev["files"].items()
        ):
            manifest[uid] = prev
            report.skipped_units += 1
            report.unchanged += len(unit.outputs)
        else:
            todo.append(uid)
    rendered = _render(engine, units, todo, workers)  # may raise: nothing written yet
    report.rendered_units = len(todo)
    desired = {rel for u in units.values() for rel, _, _ in u.outputs}
    stale = sorted({rel for prev in old.values() for rel in prev["files"]} - desired)
    if diff:
        report.diff = _diff(outdir, rendered, stale, report)
        return report
    _write(outdir, units, todo, rendered, manifest, report)
    for rel in stale:
        try:
            (outdir / rel).unlink()
            report.removed.append(rel)
        except FileNotFoundError:
            pass
    files.write_atomic(outdir / MANIFEST, json.dumps({"format": FORMAT, "units": manifest}).encode(), 0o644)
    return report


def _units(store: Store, engine: Engine) -> dict[str, Unit]:
    dc = queries.dc_template(store)
    salt = hashlib.blake2b(digest_size=16)
    salt.update(engine.fingerprint(TEMPLATES).encode())
    salt.update((store.get_meta("template") or "").encode())
    racks = {}
    units: dict[str, Unit] = {}
    for row in store.query(f"SELECT {queries.CT_COLUMNS} FROM cts ORDER BY ctid"):
        ct = queries.ct_from_row(row)
        rack = racks.get(ct.rack) or racks.setdefault(ct.rack, rack_context(dc, ct.rack))
        key = salt.copy()
        key.update(repr(tuple(row)).encode())
        base = rack.name
        outputs = [(f"{base}/{pat.format(ctid=ct.ctid)}", tpl, mode) for pat, tpl, mode in CT_FILES]
        units[f"ct/{ct.ctid}"] = Unit(key.hexdigest(), outputs, functools.partial(ct_context, ct, dc, rack))
    counts = {r[0]: r[1] for r in store.query("SELECT storage, count(*) FROM cts GROUP BY storage")}
    for slot in [r["slot"] for r in queries.racks(store)]:
        rack = racks.get(slot) or rack_context(dc, slot)
        nodes = queries.nodes(store, rack=slot)
        hns = [n for n in nodes if n.role == "compute"]
        for node in (n for n in nodes if n.role == "storage"):
            ctx = exports_context(dc, rack, node, hns, counts.get(node.hostname, 0))
            key = salt.copy()
            key.update(json.dumps(ctx, sort_keys=True).encode())
            pat, tpl, mode = EXPORTS_FILE
            units[f"storage/{node.hostname}"] = Unit(key.hexdigest(), [(f"{rack_name(slot)}/{pat.format(hostname=node.hostname)}", tpl, mode)], functools.partial(dict, ctx))
    return units


# ---- rendering (optionally in forked workers) --------------------------
_JOB: tuple[Engine, dict[str, Unit], list[str]] | None = None


def _render_slice(bounds: tuple[int, int]) -> list[tuple[str, bytes, int]]:
    assert _JOB is not None
    engine, units, todo = _JOB
    out = []
    for uid in todo[bounds[0]:bounds[1]]:
        unit = units[uid]
        context = unit.make_context()
        for rel, tpl, mode in unit.outputs:
            out.append((rel, engine.render(tpl, context).encode(), mode))
    return out


def _render(engine: Engine, units: dict[str, Unit], todo: list[str], workers: int | None) -> list[tuple[str, bytes, int]]:
    global _JOB
    for name in TEMPLATES:  # syntax errors surface here, in this process, with file:line
        engine.template(name)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    _JOB = (engine, units, todo)
    try:
        if workers <= 1 or len(todo) < PARALLEL_MIN:
            return _render_slice((0, len(todo)))
        step = -(-len(todo) // (workers * 4))
        slices = [(i, min(i + step, len(todo))) for i in range(0, len(todo), step)]
        # fork: workers inherit the units without pickling them.
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return [item for part in pool.map(_render_slice, slices) for item in part]
    finally:
        _JOB = None


# ---- output ------------------------------------------------------------
def _write(outdir: Path, units: dict[str, Unit], todo: list[str], rendered: list[tuple[str, bytes, int]],
           manifest: dict[str, Any], report: RenderReport) -> None:
    for d in sorted({str(Path(rel).parent) for rel, _, _ in rendered}):
        (outdir / d).mkdir(parents=True, exist_ok=True)
    # Syscalls release the GIL: a few threads overlap the file system's latency.
    # Chunks, not one future per file (ThreadPoolExecutor.map ignores chunksize).
    def write_chunk(chunk: list[tuple[str, bytes, int]]) -> list[tuple[bool, files.Stat]]:
        return [files.write_if_changed(outdir / rel, data, mode) for rel, data, mode in chunk]

    chunks = [rendered[i:i + WRITE_CHUNK] for i in range(0, len(rendered), WRITE_CHUNK)]
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        results = [r for part in pool.map(write_chunk, chunks) for r in part]
    stats: dict[str, files.Stat] = {}
    for (rel, _, _), (written, st) in zip(rendered, results):
        stats[rel] = st
        if written:
            report.written.append(rel)
        else:
            report.unchanged += 1
    for uid in todo:
        manifest[uid] = {"key": units[uid].key, "files": {rel: stats[rel] for rel, _, _ in units[uid].outputs}}


def _diff(outdir: Path, rendered: list[tuple[str, bytes, int]], stale: list[str], report: RenderReport) -> str:
    parts = []
    for rel, data, _ in rendered:
        old = files.read(outdir / rel)
        if old == data:
            report.unchanged += 1
            continue
        report.written.append(rel)
        parts.append(files.unified(rel, old, data))
    for rel in stale:
        report.removed.append(rel)
        parts.append(files.unified(rel, files.read(outdir / rel), None))
    return "".join(parts)


def _load_manifest(outdir: Path) -> dict[str, Any]:
    try:
        data = json.loads((outdir / MANIFEST).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("units"), dict):
        return {}
    return data["units"]
