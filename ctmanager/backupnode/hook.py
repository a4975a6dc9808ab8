"""The pre-backup hook: a CT whose apps need a consistent copy made first (a
database dump) asks for it with a marker in its own /data, and answers through it:

    /data/.ctbackup/hook      present: ask this CT before backing it up
    /data/.ctbackup/request   the daemon's question: a fresh nonce
    /data/.ctbackup/ready     the CT's answer: "<nonce> <exit code of the hook>"

Before a cycle that holds such a CT (at most once per `hook_every`), the daemon
writes the request and waits up to `hook_timeout` for the answer, then backs the
CT up either way (a hook that does not answer is logged; the data is backed up
as it is). Inside the CT, `ctbackup hook -- CMD ARGS` (a daemontools service of
the app's) keeps the marker while it runs, runs CMD for each request and
answers. The storage node never runs anything in a CT: it is two files in the
CT's /data, which both sides see. The watcher ignores them (watch.py).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .. import validate as v
from ..errors import CtmError
from ..files import make_dirs, write_atomic
from .watch import HOOK_DIR, READY, REQUEST

MARKER = "hook"
POLL = 0.2  # s between looks, on both sides


def wanted(ct_folder: Path) -> bool:
    return (ct_folder / HOOK_DIR / MARKER).exists()


def _write(path: Path, text: str, under: Path) -> None:
    """The daemon runs as the storage node's root and the folder is the CT's: a link
    planted at the file or at HOOK_DIR is refused, never written through."""
    write_atomic(path, text.encode(), 0o644, under=under)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def ask(folders: dict[int, Path], timeout: float, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> dict[int, int | None]:
    """Ask each CT (CTID -> its folder) and wait for all answers, `timeout` at most:
    CTID -> the hook's exit code, or None for no answer in time."""
    nonces = {}
    for ctid, folder in folders.items():
        try:
            _write(folder / HOOK_DIR / REQUEST, (nonce := secrets.token_hex(8)) + "\n", folder)
            nonces[ctid] = nonce
        except (CtmError, OSError):
            pass  # not asked (a link planted in its hook folder): no answer, backed up as it is
    deadline = clock() + timeout
    answers: dict[int, int | None] = {c: None for c in folders}
    while True:
        for ctid, folder in folders.items():
            if ctid not in nonces:
                continue
            nonce, _, code = _read(folder / HOOK_DIR / READY).partition(" ")
            if answers[ctid] is None and nonce == nonces[ctid]:
                answers[ctid] = int(code) if v.is_digits(code.strip()) else 1
        if all(answers[c] is not None for c in nonces) or clock() >= deadline:
            return answers
        sleep(POLL)


def serve(data: Path, argv: list[str], stop: Callable[[], bool] = lambda: False,
          log: Callable[[str], None] = lambda line: None) -> None:
    """The CT's side: keep the marker, run `argv` (in `data`) for every new request, answer."""
    folder = data / HOOK_DIR
    make_dirs(folder, under=data)
    _write(folder / MARKER, f"{os.getpid()}\n", data)
    try:
        while not stop():
            nonce = _read(folder / REQUEST)
            if nonce and _read(folder / READY).partition(" ")[0] != nonce:
                started = time.monotonic()
                code = subprocess.run(argv, cwd=data).returncode
                log(f"pre-backup hook {argv[0]}: exit {code} in {time.monotonic() - started:.1f} s")
                _write(folder / READY, f"{nonce} {code}\n", data)
            time.sleep(POLL)
    finally:
        (folder / MARKER).unlink(missing_ok=True)  # no marker: the daemon does not wait for a hook that is gone
