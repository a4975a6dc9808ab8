"""Render units and put their files in place: in two phases, so a failure anywhere
leaves the output folder as it was.

1. *Aside* (in forked workers for large renders, a rack wholly in one worker):
   render every file of the rack, then
   - a rack folder that does not exist yet is built as `.rack-N.new` next to it
     (an exclusive mkdir), with an exclusive create per file (a third of the cost
     of temp file + rename);
   - in an existing rack folder, a file whose content is unchanged is left alone
     and a changed one is written to its hidden temp name beside it.
2. *Commit* (in this process, only once every worker succeeded): rename the
   staged folders and the temp files into place. A new folder appears whole;
   each changed file is replaced atomically.

On any error the staged folders and temp files are removed and the error re-raised.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import files
from . import parallel
from .engine import Engine

PARALLEL_MIN = 2000  # files; below this, forking costs more than it saves

Rendered = list[tuple[str, bytes, int]]  # (relpath, content, mode)


@dataclass
class Unit:
    """One CT or storage node: the key over its inputs, its files, its context."""

    key: str
    folder: str  # the rack folder every output lives in
    make_outputs: Callable[[], tuple[tuple[str, str, int], ...]]  # (relpath, template, mode)
    make_context: Callable[[], dict[str, Any]]  # built only if the unit is rendered
    _outputs: tuple[tuple[str, str, int], ...] | None = field(default=None, repr=False)

    @property
    def outputs(self) -> tuple[tuple[str, str, int], ...]:
        if self._outputs is None:
            self._outputs = self.make_outputs()
        return self._outputs


@dataclass
class RackOutcome:
    folder: str
    staged: bool  # built as .<folder>.new
    results: list[tuple[str, bool, files.Stat]] = field(default_factory=list)  # (rel, written, stat)
    temps: list[tuple[str, str]] = field(default_factory=list)  # (temp, final)
    deferred: Rendered = field(default_factory=list)  # their folder is missing: written at commit


def render(engine: Engine, units: dict[str, Unit], uids: Sequence[str]) -> Rendered:
    out = []
    for uid in uids:
        unit = units[uid]
        context = unit.make_context()
        for rel, tpl, mode in unit.outputs:
            out.append((rel, engine.render(tpl, context).encode(), mode))
    return out


def render_all(engine: Engine, units: dict[str, Unit], uids: list[str], workers: int) -> Rendered:
    """Everything in memory (for --diff)."""
    if _files(units, uids) < PARALLEL_MIN:
        workers = 1
    return parallel.fork_map(functools.partial(render, engine, units), parallel.split(uids, workers), workers)


def build(base: str, engine: Engine, units: dict[str, Unit], uids: list[str], workers: int) -> dict[str, tuple[bool, files.Stat]]:
    """Render `uids` and put their files in place. Returns rel -> (written, stat)."""
    by_folder: dict[str, list[str]] = {}
    for uid in uids:
        by_folder.setdefault(units[uid].folder, []).append(uid)
    if _files(units, uids) < PARALLEL_MIN:
        workers = 1
    biggest_first = sorted(by_folder, key=lambda f: -len(by_folder[f]))
    parts = [biggest_first[i::workers] for i in range(max(1, min(workers, len(by_folder))))]
    aside = functools.partial(_aside, base, engine, units, by_folder, files.current_umask())
    try:
        outcomes = parallel.fork_map(aside, parts, workers)
        return _commit(base, outcomes)
    except BaseException:
        _discard(base, units, by_folder)
        raise


def _files(units: dict[str, Unit], uids: list[str]) -> int:
    return sum(len(units[u].outputs) for u in uids)


def _aside(base: str, engine: Engine, units: dict[str, Unit], by_folder: dict[str, list[str]], umask: int,
           folders: list[str]) -> list[RackOutcome]:
    rendered = {folder: render(engine, units, by_folder[folder]) for folder in folders}  # before any write
    outcomes = []
    for folder, items in rendered.items():
        if os.path.lexists(os.path.join(base, folder)):
            outcomes.append(_aside_existing(base, folder, items, umask))
        else:
            outcomes.append(_aside_staged(base, folder, items, umask))
    return outcomes


def _aside_staged(base: str, folder: str, items: Rendered, umask: int) -> RackOutcome:
    stage = os.path.join(base, f".{folder}.new")
    files.make_stage(stage)  # exclusive mkdir: a link planted at the staging name is refused
    cut = len(folder) + 1
    for sub in sorted({os.path.dirname(rel[cut:]) for rel, _, _ in items}):
        if sub:
            files.make_dirs(os.path.join(stage, sub), under=stage)
    out = RackOutcome(folder, staged=True)
    for rel, data, mode in items:
        out.results.append((rel, True, files.write_new(os.path.join(stage, rel[cut:]), data, mode, umask)))
    return out


def _aside_existing(base: str, folder: str, items: Rendered, umask: int) -> RackOutcome:
    out = RackOutcome(folder, staged=False)
    real: dict[str, bool] = {}  # folder -> exists as a real folder (a link in between is refused)
    for rel, data, mode in items:
        path = os.path.join(base, rel)
        head = os.path.dirname(rel)
        if head not in real:
            real[head] = _real_folder(base, head)
        st = files.same_content(path, data, mode) if real[head] else None
        if st is not None:
            out.results.append((rel, False, st))
        elif not real[head]:
            out.deferred.append((rel, data, mode))  # no new folders before the commit
        else:
            out.results.append((rel, True, files.write_temp(path, data, mode, umask)))
            out.temps.append((files.temp_name(path), path))
    return out


def _real_folder(base: str, rel: str) -> bool:
    """Whether base/rel exists; every folder from base down must be a real one."""
    try:
        os.close(files.open_dir(os.path.join(base, rel), under=base))
        return True
    except FileNotFoundError:
        return False


def _commit(base: str, outcomes: list[RackOutcome]) -> dict[str, tuple[bool, files.Stat]]:
    results: dict[str, tuple[bool, files.Stat]] = {}
    for o in outcomes:
        if o.staged:
            os.rename(os.path.join(base, f".{o.folder}.new"), os.path.join(base, o.folder))
        for _, final in o.temps:
            files.replace_temp(final)
        for rel, data, mode in o.deferred:
            results[rel] = (True, files.write_atomic(os.path.join(base, rel), data, mode, sync=False, under=base,
                                                     make_parents=True))
        for rel, written, st in o.results:
            results[rel] = (written, st)
    return results


def _discard(base: str, units: dict[str, Unit], by_folder: dict[str, list[str]]) -> None:
    for folder, uids in by_folder.items():
        stage = os.path.join(base, f".{folder}.new")
        if not os.path.islink(stage):  # a planted link is left alone (rmtree refuses it too)
            shutil.rmtree(stage, ignore_errors=True)
        if os.path.islink(os.path.join(base, folder)) or not os.path.isdir(os.path.join(base, folder)):
            continue
        for uid in uids:
            for rel, _, _ in units[uid].outputs:
                files.discard_temp(os.path.join(base, rel))
