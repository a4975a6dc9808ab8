"""Where a CT runs, as the CLI finds it (`ctmanager ct exec`), in any rack of the DC.

The CT's rack and that rack's HNs come from the store, not from the manager
config the command was given: after `tenant move acme --to rack-102`, rack-101's
config must still reach acme. The newest stored reports of the rack's HNs (its
own managers store them) say where the CT is UP; an HN whose report is stale is
asked over SSH (`ctagent observe`), as a CLI pass asks.

SSH to another rack's HNs takes that rack's manager config when one is found
beside the given one (`rack_config`: a *.toml in its folder that says that rack,
or the DC lab's layout, where the first rack's folder holds the others' under
racks/rack-<slot>/); else the given config's key and pinned host keys (one ops
key for every rack).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..dc.model import Ct
from ..errors import InputError
from ..executor.runner import Executor
from ..executor.ssh import SshError
from ..store import Store, queries
from ..store import loop as persist
from ..wire.reports import Report, ReportError, parse_body
from .config import ManagerConfig, load

Ask = Callable[[str], Report | str]  # an HN's report over SSH, or why it could not be asked


def candidates(config_file: Path) -> Iterator[Path]:
    """Where other racks' manager configs may be, beside `config_file` (in order):
    any *.toml in its folder (`/etc/ctmanager/rack-102.toml`, the Vagrant DC's
    shared/managers/mgr-102-a.toml), then the DC lab's folders."""
    here = config_file.parent
    yield from sorted(here.glob("*.toml"))
    yield from sorted(here.glob("racks/rack-*/manager.toml"))  # the DC lab, from the first rack's config
    if here.parent.name == "racks":  # the DC lab, from another rack's config
        yield from sorted(here.parent.glob("rack-*/manager.toml"))
        yield here.parent.parent / "manager.toml"


def _says_rack(path: Path, slot: int) -> bool:
    """Does the TOML file at `path` say `rack = "rack-<slot>"` (a cheap look before
    the full load, which reads keys: other TOML files here are not ours to judge)?"""
    try:
        with path.open("rb") as f:
            rack = tomllib.load(f).get("rack")
    except (OSError, ValueError):
        return False
    if isinstance(rack, int):
        return rack == slot
    return isinstance(rack, str) and rack.strip() in (f"rack-{slot}", str(slot))


def rack_config(config: ManagerConfig, slot: int) -> ManagerConfig:
    """The manager config to reach rack `slot`'s HNs with (see the module's text):
    the given one for its own rack; else the first one found beside it that says
    that rack; else the given one's SSH settings for that rack's HNs."""
    if slot == config.slot:
        return config
    mine = Path(config.file).resolve()
    for path in candidates(Path(config.file)):
        if path.is_file() and path.resolve() != mine and _says_rack(path, slot):
            try:
                return load(path)
            except InputError:
                continue  # says that rack but is no manager config (a lab's inventory.toml)
    return dataclasses.replace(config, slot=slot)


def observe(executor: Executor, config: ManagerConfig, hn: str) -> Report | str:
    """HN `hn`'s state, asked over SSH; a string says why it could not be."""
    try:
        out = executor.hn(hn).run([*config.agent_command, "observe"], b"", config.ssh.connect_timeout + 10)
    except SshError as exc:
        return str(exc)
    if out.rc != 0:
        return f"ctagent observe exited {out.rc}: {out.err.decode(errors='replace').strip()[-200:]}"
    try:
        return parse_body(out.out)
    except ReportError as exc:
        return f"ctagent observe: {exc}"


def running_on(store: Store, config: ManagerConfig, ct: Ct, ask: Ask) -> tuple[list[str], dict[str, str]]:
    """The HNs of the CT's rack where it is UP, and the HNs that could not be
    asked (HN -> why). Fresh stored reports first; only if none shows it UP are
    the HNs with stale reports asked (`ask`), in name order."""
    now = store.now()  # stored reports are judged on the store's clock
    with store.snapshot():
        stored = persist.observed(store, ct.rack, store_clock=True)
        hns = sorted(n.hostname for n in queries.nodes(store, rack=ct.rack) if n.role == "compute")
    fresh = [hn for hn in hns if hn in stored.reports and stored.known(hn, now, config.settings)]
    up = [hn for hn in fresh if stored.where.get(ct.ctid, {}).get(hn) == "UP"]
    unreachable: dict[str, str] = {}
    if up:
        return up, unreachable
    for hn in (h for h in hns if h not in fresh):
        got = ask(hn)
        if isinstance(got, str):
            unreachable[hn] = got
        elif any(c.ctid == ct.ctid and c.opst == "UP" for c in got.cts):
            up.append(hn)
    return up, unreachable
