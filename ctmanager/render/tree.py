"""Render the whole DC into an output folder, rack by rack.

    OUT/rack-101/openvz/<CTID>.conf|.mount|.umount   OpenVZ config + action scripts
    OUT/rack-101/lxc/<CTID>.config                   LXC config of the same CT
    OUT/rack-101/resolv/<CTID>.conf                  the CT's resolv.conf
    OUT/rack-101/storage/<storage-node>.exports      the storage node's export list

All-or-nothing: everything that changed is rendered in memory first; a template
error leaves the folder untouched. A rack folder that is new appears whole (built
aside, renamed into place); in an existing one each changed file is replaced
atomically. Unchanged work is skipped without rendering: OUT/.ctmanager-render.json
records, per CT, a hash of its inputs and the stat of the files written, like a
build system. A hand-edited file no longer matches its stat and is rendered again.
Files we never wrote are never deleted. Large renders use one forked process per
core, for rendering and again for writing (see parallel.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import files
from ..dc.model import rack_name
from ..dc.network import RackContext, rack_context
from ..errors import InputError
from ..store import Store, queries, rows
from ..store.db import Row
from . import output, parallel
from .ctfiles import CT_FILES, EXPORTS_FILE, TEMPLATES, ct_context, exports_context
from .engine import Engine
from .output import Rendered, Unit

MANIFEST = ".ctmanager-render.json"
FORMAT = 3
CHECK_PARALLEL_MIN = 4000  # units; below this, checking stats in one process is faster


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
    workers = workers if workers is not None else parallel.default_workers()
    base = str(outdir)
    units = _units(store, engine)
    old = _load_manifest(outdir)
    todo = _changed(base, units, old, workers)
    if todo:
        for name in TEMPLATES:  # compiled here, before any fork: syntax errors name file:line
            engine.template(name)
    stale = _stale(units, old, todo)
    report = RenderReport(rendered_units=len(todo), skipped_units=len(units) - len(todo))
    todo_set = set(todo)
    kept = {uid: old[uid] for uid in units if uid not in todo_set}  # skipped: all in `old`
    report.unchanged = sum(_entry_size(entry) for entry in kept.values())
    if diff:
        report.diff = _diff(outdir, output.render_all(engine, units, todo, workers), stale, report)
        return report
    if not todo and not stale and len(old) == len(units):
        return report  # nothing to do: not even the manifest is rewritten
    outdir.mkdir(parents=True, exist_ok=True)
    results = output.build(base, engine, units, todo, workers)
    manifest: dict[str, str] = kept
    for uid in todo:
        stats = []
        for rel, _, _ in units[uid].outputs:
            written, st = results[rel]
            if written:
                report.written.append(rel)
            else:
                report.unchanged += 1
            stats.append((rel, st))
        manifest[uid] = _entry(units[uid].key, stats)
    for rel in stale:
        try:
            with _folder(base, os.path.dirname(rel)) as fd:  # never a file where a planted link points
                os.unlink(os.path.basename(rel), dir_fd=fd)
            report.removed.append(rel)
        except FileNotFoundError:
            pass
    files.write_atomic(outdir / MANIFEST, json.dumps({"format": FORMAT, "units": manifest}).encode(), 0o644,
                       sync=False)
    return report


@contextlib.contextmanager
def _folder(base: str, rel: str) -> Iterator[int]:
    fd = files.open_dir(os.path.join(base, rel), under=base)
    try:
        yield fd
    finally:
        os.close(fd)


def _units(store: Store, engine: Engine) -> dict[str, Unit]:
    """Every CT and storage node, with a key over all of its inputs.

    Cheap on purpose: a no-change run builds 10,000 of these and renders none,
    so a CT's file list, context and typed Ct are only made if it is rendered.
    """
    dc = queries.dc_template(store)
    salt = hashlib.blake2b(digest_size=16)
    salt.update(engine.fingerprint(TEMPLATES).encode())
    salt.update(repr((CT_FILES, EXPORTS_FILE)).encode())  # same key => same file names
    salt.update(queries.template_text(store).encode())
    racks: dict[int, RackContext] = {}

    def rack(slot: int) -> RackContext:
        return racks.get(slot) or racks.setdefault(slot, rack_context(dc, slot))

    def ct_outputs(folder: str, ctid: int) -> tuple[tuple[str, str, int], ...]:
        return tuple((f"{folder}/{pat.format(ctid=ctid)}", tpl, mode) for pat, tpl, mode in CT_FILES)

    def ct_unit_context(row: Row) -> dict[str, Any]:
        ct = rows.ct_from_row(row)
        return engine.context(ct_context(ct, dc, rack(ct.rack)))

    units: dict[str, Unit] = {}
    for row in queries.ct_rows(store):
        ctid, slot = rows.placed(row)  # file and folder names: checked before any path is built
        folder = rack_name(slot)
        key = salt.copy()
        key.update(repr(tuple(row)).encode())
        units[f"ct/{ctid}"] = Unit(key.hexdigest(), folder, functools.partial(ct_outputs, folder, ctid),
                                   functools.partial(ct_unit_context, row))
    counts = queries.storage_counts(store)
    for slot in [r["slot"] for r in queries.racks(store)]:
        nodes = queries.nodes(store, rack=slot)
        hns = [n for n in nodes if n.role == "compute"]
        for node in (n for n in nodes if n.role == "storage"):
            ctx = exports_context(dc, rack(slot), node, hns, counts.get(node.hostname, 0))
            key = salt.copy()
            key.update(repr(sorted(ctx.items())).encode())
            pat, tpl, mode = EXPORTS_FILE
            outputs = ((f"{rack_name(slot)}/{pat.format(hostname=node.hostname)}", tpl, mode),)
            units[f"storage/{node.hostname}"] = Unit(key.hexdigest(), rack_name(slot), functools.partial(tuple, outputs),
                                                     functools.partial(engine.context, ctx))
    return units


def _changed(base: str, units: dict[str, Unit], old: dict[str, str], workers: int) -> list[str]:
    """Units to render: new inputs, or a file of theirs is not as we left it."""
    uids = list(units)
    if len(uids) < CHECK_PARALLEL_MIN:
        workers = 1
    check = functools.partial(_changed_part, base, units, old)
    return parallel.fork_map(check, parallel.split(uids, workers), workers)


def _changed_part(base: str, units: dict[str, Unit], old: dict[str, str], uids: Sequence[str]) -> list[str]:
    return [uid for uid in uids if not _unchanged(base, units[uid].key, old.get(uid))]


def _unchanged(base: str, key: str, entry: str | None) -> bool:
    """Same key (so the same file names), and every file as we left it: a hand edit changes its stat."""
    if entry is None or not entry.startswith(key + "\t"):
        return False
    try:
        for rel, mtime, size in _entry_files(entry):
            st = os.lstat(f"{base}/{rel}")  # a link put there is not as we left it
            if st.st_mtime_ns != mtime or st.st_size != size:
                return False
    except (FileNotFoundError, ValueError):  # gone, or a damaged entry: render again
        return False
    return True


def _stale(units: dict[str, Unit], old: dict[str, str], todo: list[str]) -> list[str]:
    """Files we wrote last time that nothing renders any more.

    Only units that are gone or re-rendered can have dropped a file: an
    unchanged key means unchanged file names.
    """
    stale: set[str] = set()
    for uid in [u for u in old if u not in units] + [u for u in todo if u in old]:
        unit = units.get(uid)
        now = {rel for rel, _, _ in unit.outputs} if unit else set()
        try:
            stale.update(rel for rel, _, _ in _entry_files(old[uid]) if rel not in now)
        except ValueError:  # damaged: we cannot tell which files were ours, so delete none
            pass
    if stale:  # a file may have moved from a removed unit to another one
        stale -= {rel for u in units.values() for rel, _, _ in u.outputs}
    return sorted(stale)


# ---- the manifest: uid -> "key<TAB>rel<TAB>mtime_ns<TAB>size<TAB>rel..." ----
# Flat strings, parsed only when needed: a no-change run loads 10,000 of them.
def _entry(key: str, stats: list[tuple[str, files.Stat]]) -> str:
    return "\t".join([key] + [f"{rel}\t{m}\t{size}" for rel, (m, size) in stats])


def _entry_size(entry: str) -> int:
    return entry.count("\t") // 3


def _entry_files(entry: str) -> list[tuple[str, int, int]]:
    """(rel, mtime_ns, size) of each file; ValueError if damaged or not a path inside the output."""
    parts = entry.split("\t")
    if len(parts) < 4 or len(parts) % 3 != 1:
        raise ValueError("damaged manifest entry")
    out = []
    for i in range(1, len(parts), 3):
        rel = parts[i]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"bad path in manifest: {rel!r}")
        out.append((rel, int(parts[i + 1]), int(parts[i + 2])))
    return out


def _diff(outdir: Path, rendered: Rendered, stale: list[str], report: RenderReport) -> str:
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


def _load_manifest(outdir: Path) -> dict[str, str]:
    try:
        data = json.loads((outdir / MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("units"), dict):
        return {}  # an older or foreign manifest: everything is checked by content
    return {uid: e for uid, e in data["units"].items() if isinstance(e, str)}
