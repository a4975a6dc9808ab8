"""A rack key rotation across the rack (`ctmanager rack key STEP`): the step on
this manager's key file, then on every HN of the rack over SSH (`ctagent key`,
through ctgate), each step checked on every machine before any is changed.

    stage    a new key (or the one this manager has staged already) beside the
             current one everywhere; nothing signs with it yet
    switch   everyone signs with it; the old one is still accepted
    retire   the old one is refused from now on

Check-then-act: `switch` needs the staged key on every HN, `retire` the new key
current on every HN; an HN that cannot be asked stops the step before anything
changes. Every step is idempotent: run it again after a failure. The rack's
other managers hold the key in files of their own: copy this manager's
`<key_file>.next` to each (same path, owner and mode) before `switch`, and run
each step there too (`--local`); `status` shows the ids everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CtmError, InputError
from ..executor.runner import Executor
from ..executor.ssh import SshError
from ..store import Store, queries
from ..store import lease as leases
from ..wire import keys
from .config import ManagerConfig

STEPS = ("status", "stage", "switch", "retire")


@dataclass(frozen=True)
class Holder:
    """One machine's keys, by id (or why it could not be asked)."""

    name: str
    ids: dict[str, str]
    error: str = ""


def _key_file(config: ManagerConfig) -> Path:
    ring = config.key
    if isinstance(ring, bytes):
        raise InputError("this manager config has no key file to rotate")
    return ring.path


def _agent(executor: Executor, config: ManagerConfig, hn: str, *args: str, stdin: bytes = b"") -> Holder:
    try:
        out = executor.hn(hn).run([*config.agent_command, "key", *args], stdin, config.ssh.connect_timeout + 10)
    except SshError as exc:
        return Holder(hn, {}, f"cannot be asked: {exc}")
    if out.rc != 0:
        text = out.err.decode(errors="replace").strip().splitlines()
        return Holder(hn, {}, text[-1] if text else f"ctagent key {args[0]} exited {out.rc}")
    try:
        ids = json.loads(out.out)
    except ValueError:
        return Holder(hn, {}, "ctagent key: not JSON (an older ctagent without key rotation?)")
    return Holder(hn, {str(k): str(v) for k, v in ids.items()})


def managers(store: Store, config: ManagerConfig) -> list[Holder]:
    """The rack's other running managers, with the keys their running keyrings hold
    (their check-ins say, within a second or two of a change)."""
    out = []
    for v in leases.view(store, config.slot):
        if v.name == config.name or v.role == "down":
            continue
        ids = keys.parse_ids(v.keys)
        out.append(Holder(f"{v.name} (manager, {v.role})", ids,
                          "" if ids else f"runs ctmanager {v.version or 'from before 0.2.0'}, which does not "
                          "say its keys: upgrade it before rotating"))
    return out


def survey(store: Store, config: ManagerConfig, executor: Executor | None) -> list[Holder]:
    """This manager's keys, then the rack's other running managers' and (with an
    executor) every HN's."""
    path = _key_file(config)
    mine = Holder(f"{config.name} (this manager)", keys.state(path, str(path)))
    hns = [n.hostname for n in queries.nodes(store, rack=config.slot) if n.role == "compute"]
    return [mine, *managers(store, config), *([_agent(executor, config, hn, "status") for hn in hns] if executor else [])]


def _blocked(holders: list[Holder], ok: Callable[[dict[str, str]], bool], why: str) -> None:
    bad = [f"{h.name}: {h.error or why}" for h in holders if h.error or not ok(h.ids)]
    if bad:
        raise CtmError("nothing was changed; " + "; ".join(bad))


def run_step(store: Store, config: ManagerConfig, executor: Executor | None, step: str,
             say: Callable[[str], None]) -> list[Holder]:
    """`step` on this manager, then (with an executor) on each HN; the holders after it."""
    if step not in STEPS:
        raise InputError(f"unknown step {step!r} (one of {', '.join(STEPS)})")
    path = _key_file(config)
    where = str(path)
    holders = survey(store, config, executor)
    if step == "status":
        return holders
    others = [h for h in holders[1:] if "(manager" in h.name]
    hns = [h for h in holders[1:] if "(manager" not in h.name]
    if step == "stage":
        ring = keys.Keyring(path, where)
        if ring.next is None and executor is None:  # --local: a key of its own would split the rack
            raise InputError(f"no key is staged here: copy {path}.next from the manager where `rack key stage` "
                             "ran (same path, owner and mode), then run this again")
        key = ring.next or keys.new_key()  # one staged here already: the same key everywhere
        _blocked(holders, lambda ids: "prev" not in ids, "still holds a previous key: retire first")
        _blocked(hns, lambda ids: ids.get("next") in (None, keys.key_id(key)), "another key is staged there")
        holders = [Holder(holders[0].name, keys.stage(path, key, where))]
        say(f"staged key {keys.key_id(key)} on {holders[0].name}")
        for h in hns:
            holders.append(_agent(executor, config, h.name, "stage", stdin=key.hex().encode()) if executor else h)
            say(f"staged on {h.name}" if not holders[-1].error else f"{h.name}: {holders[-1].error}")
    elif step == "switch":
        new = holders[0].ids.get("next") or (holders[0].ids["current"] if "prev" in holders[0].ids else "")
        if not new:
            raise InputError("no key is staged on this manager: run the stage step first")
        _blocked(others + hns, lambda ids: new in (ids.get("next"), ids.get("current")),
                 f"does not hold key {new}: stage first (another manager: copy the key and stage with --local)")
        holders = [Holder(holders[0].name, keys.switch(path, where, new))]
        say(f"{holders[0].name} signs with key {new}")
        for h in hns:
            holders.append(_agent(executor, config, h.name, "switch", "--expect", new) if executor else h)
            say(f"{h.name} signs with key {new}" if not holders[-1].error else f"{h.name}: {holders[-1].error}")
    else:
        new = holders[0].ids["current"]
        if executor is not None:  # the first manager retires last: every other one must sign with it already
            _blocked(holders, lambda ids: ids.get("current") == new and "next" not in ids,
                     f"does not sign with key {new} yet: switch first (another manager: switch with --local)")
        else:
            _blocked(holders[:1], lambda ids: "next" not in ids, "a key is staged, not switched to: switch first")
        holders = [Holder(holders[0].name, keys.retire(path, where))]
        for h in hns:
            holders.append(_agent(executor, config, h.name, "retire") if executor else h)
        say(f"the previous key is refused from now on in {config.slot and f'rack-{config.slot}'}")
    failed = [h for h in holders if h.error]
    if failed:
        raise CtmError(f"{step}: {len(failed)} machine(s) not done ({'; '.join(f'{h.name}: {h.error}' for h in failed)}); "
                       "the step is idempotent: run it again when they answer")
    return holders
