"""`ctmanager rack key` across a rack (manager/keyroll.py): every HN is asked
before any is changed, a step stopped by one HN changes nothing, every step may
be run again, and at the end the rack signs with one new key. The HNs here are
key folders answered by ctagent's own `key` code (agent/keycmd.py) through a
stand-in for SSH; the lab test does it over real SSH and ctgate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ctmanager.agent import keycmd
from ctmanager.errors import CtmError, InputError
from ctmanager.executor.ssh import Output, SshError
from ctmanager.manager import keyroll
from ctmanager.manager.config import ManagerConfig, SshSettings
from ctmanager.operations import inventory
from ctmanager.reconcile.plan import Settings
from ctmanager.store import open_store
from ctmanager.wire import keys
from tests.conftest import EXAMPLE

OLD = bytes(range(32))
HNS = ("hn-101-1", "hn-101-2", "hn-101-3")


def key_file(folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "rack.key"
    path.write_text(OLD.hex() + "\n")
    path.chmod(0o600)
    return path


class Hn:
    def __init__(self, path: Path) -> None:
        self.path, self.down = path, False

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 30.0) -> Output:
        if self.down:
            raise SshError("connection refused")
        assert argv[:2] == ["ctagent", "key"]
        step, rest = argv[2], argv[3:]
        try:
            ids = keycmd.run(self.path, step, rest[1] if rest else "", stdin)
        except InputError as exc:
            return Output(2, b"", f"ctagent: error: {exc}\n".encode())
        return Output(0, json.dumps(ids).encode(), b"")


class Rack:
    def __init__(self, tmp_path: Path) -> None:
        self.hns = {hn: Hn(key_file(tmp_path / hn)) for hn in HNS}

    def hn(self, name: str) -> Hn:
        return self.hns[name]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[object, ManagerConfig, Rack]:
    store = open_store(tmp_path / "ctm.db", create=True)
    with store.transaction():
        inventory.init(store, EXAMPLE)
    ring = keys.Keyring(key_file(tmp_path / "mgr"), "mgr")
    config = ManagerConfig(file="t", slot=101, listen=("127.0.0.1", 0), key=ring, agent_command=("ctagent",),
                           ssh=SshSettings("root", "/dev/null", "/dev/null", 22, 1.0), action_timeout=5.0,
                           concurrency=1, settings=Settings(), full_plan_every=1.0, name="mgr-101-a")
    return store, config, Rack(tmp_path)


def step(setup: tuple[object, ManagerConfig, Rack], name: str) -> list[keyroll.Holder]:
    store, config, rack = setup
    return keyroll.run_step(store, config, rack, name, lambda line: None)  # type: ignore[arg-type]


def test_a_whole_rotation_leaves_every_machine_on_one_new_key(setup: tuple[object, ManagerConfig, Rack]) -> None:
    before = step(setup, "status")
    assert len(before) == 4 and len({h.ids["current"] for h in before}) == 1
    staged = step(setup, "stage")
    new = staged[0].ids["next"]
    assert all(h.ids == {"current": keys.key_id(OLD), "next": new} for h in staged)
    assert step(setup, "stage") == staged  # again: the same key, nothing changes
    switched = step(setup, "switch")
    assert all(h.ids == {"current": new, "prev": keys.key_id(OLD)} for h in switched)
    assert step(setup, "switch") == switched
    retired = step(setup, "retire")
    assert all(h.ids == {"current": new} for h in retired)


def test_an_hn_that_cannot_be_asked_stops_the_switch_before_anything_changes(
        setup: tuple[object, ManagerConfig, Rack]) -> None:
    step(setup, "stage")
    setup[2].hns["hn-101-2"].down = True
    with pytest.raises(CtmError, match="nothing was changed; hn-101-2: cannot be asked"):
        step(setup, "switch")
    setup[2].hns["hn-101-2"].down = False
    assert all("next" in h.ids for h in step(setup, "status"))  # nobody switched
    step(setup, "switch")


def test_an_hn_without_the_staged_key_stops_the_switch(setup: tuple[object, ManagerConfig, Rack]) -> None:
    step(setup, "stage")
    setup[2].hns["hn-101-3"].path.with_name("rack.key.next").unlink()  # lost there (a reinstall)
    with pytest.raises(CtmError, match="hn-101-3: does not hold key .*: stage first"):
        step(setup, "switch")
    step(setup, "stage")  # stages the same key again where it is missing
    step(setup, "switch")


def test_retire_waits_for_every_machine_to_have_switched(setup: tuple[object, ManagerConfig, Rack]) -> None:
    step(setup, "stage")
    store, config, rack = setup
    keyroll.run_step(store, config, None, "switch", lambda line: None)  # --local: this manager only
    with pytest.raises(CtmError, match="hn-101-1: does not sign with key .*: switch first"):
        step(setup, "retire")
    step(setup, "switch")
    step(setup, "retire")


def test_a_config_without_a_key_file_cannot_rotate(setup: tuple[object, ManagerConfig, Rack]) -> None:
    store, config, rack = setup
    with pytest.raises(InputError, match="no key file"):
        keyroll.run_step(store, dataclasses.replace(config, key=OLD), rack, "status", print)  # type: ignore[arg-type]


def test_a_local_stage_takes_the_copied_key_and_never_makes_one_of_its_own(
        setup: tuple[object, ManagerConfig, Rack]) -> None:
    store, config, rack = setup
    with pytest.raises(InputError, match="no key is staged here: copy .*rack.key.next"):
        keyroll.run_step(store, config, None, "stage", print)
    staged = step(setup, "stage")  # the first manager: a new key, on every HN
    assert keyroll.run_step(store, config, None, "stage", print)[0].ids == staged[0].ids  # again: the same key


def test_the_rack_s_other_managers_are_checked_by_the_keys_their_running_keyrings_hold(
        setup: tuple[object, ManagerConfig, Rack], tmp_path: Path) -> None:
    from ctmanager.store import lease

    store, config, rack = setup
    seconds = iter(range(0, 10**6, 2))  # each check-in a couple of seconds after the last
    other = keys.Keyring(key_file(tmp_path / "mgr-b"), "mgr-b", clock=lambda: float(next(seconds)))

    def check_in(ring: keys.Keyring | None, version: str = "0.2.0") -> None:
        lease.check_in(store, 101, "mgr-101-b", "i2", "", "standby", 0, None, version=version,  # type: ignore[arg-type]
                       keys=keys.key_ids(ring) if ring else "")

    check_in(None, version="")  # a manager from before keys were in check-ins
    with pytest.raises(CtmError, match="mgr-101-b .*from before 0.2.0.*upgrade it before rotating"):
        step(setup, "stage")
    check_in(other)
    staged = step(setup, "stage")
    with pytest.raises(CtmError, match="mgr-101-b .*does not hold key .*stage with --local"):
        step(setup, "switch")
    nxt = config.key.path.with_name("rack.key.next")  # type: ignore[union-attr]
    keys.stage(other.path, bytes.fromhex(nxt.read_text()), "mgr-b")  # copied there, staged with --local
    check_in(other)  # its next check-in: its keyring looked at its files
    assert step(setup, "switch")[0].ids["current"] == staged[0].ids["next"]
    with pytest.raises(CtmError, match="mgr-101-b .*does not sign with key .*switch with --local"):
        step(setup, "retire")
    keys.switch(other.path, "mgr-b")
    check_in(other)
    step(setup, "retire")
