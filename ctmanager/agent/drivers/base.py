"""The runtime driver interface, split like pyinfra: *facts* (a command and a
pure parser, tested against captured output) and *operations* (act only on what
differs, so every operation is idempotent).

Commands are argument lists, never shell strings. Every command has a timeout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ... import files
from ...dc.model import Paths
from ...monitoring.provision import provision
from ...render import ctfiles
from ...render.engine import Engine
from ...wire.spec import Spec

OPST_UP, OPST_DOWN = "UP", "DOWN"
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    rc: int
    out: str
    err: str


Runner = Callable[[list[str], float], Completed]


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> Completed:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DriverError(f"{argv[0]} timed out after {timeout:g} s", temporary=True) from None
    except FileNotFoundError:
        raise DriverError(f"{argv[0]} is not installed on this HN", refused=True) from None
    return Completed(tuple(argv), p.returncode, p.stdout, p.stderr)


class DriverError(Exception):
    """A runtime command failed. `refused`: the runtime will not do it (admission
    reports a rejection, the scheduler tries another HN); `temporary`: retry later."""

    def __init__(self, message: str, *, refused: bool = False, temporary: bool = False) -> None:
        super().__init__(" ".join(message.split()))
        self.refused = refused
        self.temporary = temporary


def failed(c: Completed, what: str, **kind: bool) -> DriverError:
    detail = (c.err.strip() or c.out.strip()).splitlines()
    return DriverError(f"{what}: {c.argv[0]} exited {c.rc}: {detail[-1] if detail else 'no output'}", **kind)


class Driver(Protocol):
    name: str

    def observe(self) -> dict[int, str]:
        """CTID -> OPST of every CT this runtime knows on the HN."""

    def watch_argv(self) -> list[str] | None:
        """A command that prints a line whenever a CT changes state (a hint to
        observe again at once), or None: then the agent polls."""

    def create(self, spec: Spec) -> bool:
        """Write the CT's runtime config from the spec. True if anything changed."""

    def start(self, ctid: int) -> None: ...

    def stop(self, ctid: int) -> None: ...

    def destroy(self, ctid: int) -> None:
        """Remove the CT's runtime config (never its /data)."""

    def set_limits(self, spec: Spec) -> tuple[str, ...]:
        """Apply the spec's resources to the running CT at once (the config that
        `create` writes holds them for its next start). Returns the resource keys
        applied live; the others take effect at the next start."""

    def exec_argv(self, ctid: int, argv: list[str]) -> list[str]:
        """The command that runs `argv` inside a running CT."""


def render_ct_files(spec: Spec, paths: Paths, targets: Mapping[str, tuple[Path, int]]) -> bool:
    """Render the CT's templates (template name -> (destination, mode)) and its
    resolv.conf, and make sure its /data has a `service` folder for svscan and
    the monitoring services (ctmanager/monitoring/provision.py).
    Writes atomically and only what changed."""
    engine = Engine()
    ctx = engine.context(ctfiles.spec_context(spec, paths))
    all_targets = dict(targets)
    all_targets["ct/common/resolv.conf.j2"] = (Path(paths.config) / str(spec.ct.ctid) / "resolv.conf", 0o644)
    changed = False
    for name, (dest, mode) in all_targets.items():
        data = engine.render(name, ctx).encode()
        if files.same_content(dest, data, mode) is None:
            # a CT's own folder (lxcpath/CTID, config/CTID) must be a real one, never a link
            own = dest.parent.name == str(spec.ct.ctid)
            if own:
                dest.parent.parent.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(dest, data, mode, under=dest.parent.parent if own else dest.parent, make_parents=True)
            changed = True
    ct_data = Path(ctfiles.data_dir(paths, spec.ct))
    ct_data.mkdir(parents=True, exist_ok=True)
    files.make_dirs(ct_data / "service", under=ct_data)  # /data is the CT's: a link there is refused
    return provision(ct_data, spec.dc, spec.ct.rack, spec.ct.hostname) or changed
