"""Configuration drift reaches the HN: the spec hash both sides compute, the
agent's `apply set` (limits live, idempotent), the drivers' commands as argv,
and the store's configured hashes."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ctmanager.agent import apply as applying
from ctmanager.agent import config as agent_config
from ctmanager.agent.drivers.base import Completed, DriverError
from ctmanager.agent.drivers.lxc import LxcDriver, cgroup_limits, cgroup_version
from ctmanager.agent.drivers.openvz import OpenVzDriver
from ctmanager.agent.node import SpecStore
from ctmanager.dc import resources as res
from ctmanager.dc.model import DcTemplate
from ctmanager.operations import inventory
from ctmanager.store import Store, loop, open_store, queries
from ctmanager.wire import spec as specs
from ctmanager.wire.results import ApplyOutcome

G, M = 1 << 30, 1 << 20
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "templates" / "dc" / "example.toml"


StoreDc = tuple[Store, DcTemplate]


@pytest.fixture
def store_dc(tmp_path: Path) -> StoreDc:
    store = open_store(tmp_path / "s.db", create=True)
    with store.transaction():
        dc = inventory.init(store, EXAMPLE)
    return store, dc


def acme_spec(store_dc: StoreDc, **resources: object) -> dict[str, Any]:
    """acme's spec as the manager sends it, after changing its `resources` in the store."""
    store, dc = store_dc
    if resources:
        with store.transaction():
            ct = queries.find_ct(store, "acme")
            inventory.Inventory(store, dc).set_ct(
                "acme", resources=res.with_overrides(ct.resources, dc.max_compute, resources, "ct"))
    return specs.spec_for(queries.find_ct(store, "acme"), dc)


def test_the_spec_hash_is_stable_and_the_agent_s_equals_the_manager_s(store_dc: StoreDc, tmp_path: Path) -> None:
    spec = acme_spec(store_dc)
    h = specs.spec_hash(spec)
    assert len(h) == specs.HASH_LEN and int(h, 16) >= 0
    assert specs.spec_hash(dict(reversed(list(spec.items())))) == h  # key order does not matter
    assert specs.spec_hash({**spec, "apps": [*spec["apps"], "bamboo"]}) != h
    # What the executor sends (json.dumps of the dict) and the agent stores hashes the same.
    store = SpecStore(str(tmp_path / "state"))
    store.put(spec["ctid"], json.dumps(spec).encode())
    assert store.hashes() == {spec["ctid"]: h}
    # ... and what the manager's store says is configured, too.
    s, dc = store_dc
    assert loop.configured(s, dc, 101).spec_hashes[spec["ctid"]] == h


def test_a_configuration_change_changes_the_configured_hash(store_dc: StoreDc) -> None:
    store, dc = store_dc
    before = loop.configured(store, dc, 101).spec_hashes
    ctid = queries.find_ct(store, "acme").ctid
    acme_spec(store_dc, memory="2G")
    after = loop.configured(store, dc, 101).spec_hashes
    assert after[ctid] != before[ctid]
    assert {c: h for c, h in after.items() if c != ctid} == {c: h for c, h in before.items() if c != ctid}
    assert after[ctid] == specs.spec_hash(specs.spec_for(queries.find_ct(store, "acme"), dc))


def test_spec_store_hashes_reread_only_changed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      store_dc: StoreDc) -> None:
    spec = acme_spec(store_dc)
    ctid = spec["ctid"]
    store = SpecStore(str(tmp_path / "state"))
    assert store.hashes() == {}  # no specs folder yet
    store.put(ctid, json.dumps(spec).encode())
    (store.dir / "notes.txt").write_text("x")  # not a spec
    (store.dir / "7.json").write_text("{broken")  # unreadable: unknown, left out
    reads: list[Path] = []
    real = SpecStore._hash_file

    def counted(path: Path, c: int) -> str:
        reads.append(path)
        return real(path, c)

    monkeypatch.setattr(SpecStore, "_hash_file", staticmethod(counted))
    first = store.hashes()
    assert first == {ctid: specs.spec_hash(spec)} and len(reads) == 2
    assert store.hashes() == first and len(reads) == 3  # only the broken one is tried again
    bigger = {**spec, "resources": {**spec["resources"], "memory": 2 * spec["resources"]["memory"]}}
    store.put(ctid, json.dumps(bigger).encode())  # same size, new file (rename): read again
    assert store.hashes() == {ctid: specs.spec_hash(bigger)}
    store.drop(ctid)
    assert store.hashes() == {}


class Runtime:
    """A runtime that remembers configs and running CTs, and what it was asked."""

    name = "fake"

    def __init__(self, running: set[int] | None = None, live: tuple[str, ...] = ("memory", "cpuunits", "cpulimit"),
                 fail_limits: bool = False) -> None:
        self.running = set(running or ())
        self.configs: dict[int, specs.Spec] = {}
        self.calls: list[str] = []
        self.live, self.fail_limits = live, fail_limits

    def observe(self) -> dict[int, str]:
        return {c: "UP" if c in self.running else "DOWN" for c in self.configs.keys() | self.running}

    def watch_argv(self) -> None:
        return None

    def create(self, spec: specs.Spec) -> bool:
        changed = self.configs.get(spec.ct.ctid) != spec
        self.configs[spec.ct.ctid] = spec
        self.calls.append(f"create {spec.ct.ctid}")
        return changed

    def start(self, ctid: int) -> None:
        self.calls.append(f"start {ctid}")
        self.running.add(ctid)

    def stop(self, ctid: int) -> None:
        self.running.discard(ctid)

    def destroy(self, ctid: int) -> None:
        self.configs.pop(ctid, None)

    def set_limits(self, spec: specs.Spec) -> tuple[str, ...]:
        self.calls.append(f"set_limits {spec.ct.ctid} {spec.ct.resources.memory // M}M")
        if self.fail_limits:
            raise DriverError("lxc-cgroup: memory.limit_in_bytes: Device or resource busy")
        return self.live

    def exec_argv(self, ctid: int, argv: list[str]) -> list[str]:
        return argv


def agent(tmp_path: Path, memory: str = "16G") -> agent_config.AgentConfig:
    (tmp_path / "key").write_text("00" * 32)
    (tmp_path / "key").chmod(0o600)
    f = tmp_path / "agent.toml"
    f.write_text(f'rack = 101\nhn = "hn-101-1"\nkey_file = "{tmp_path}/key"\nreport_to = ["10.101.0.1:7070"]\n'
                 f'state_dir = "{tmp_path}/state"\n[capacity]\nmemory = "{memory}"\ndisk = "10T"\nreserve_memory = 0\n'
                 f'[paths]\ndata = "{tmp_path}/data"\nconfig = "{tmp_path}/ctconf"\n')
    cfg = agent_config.load(f)
    cfg.fence_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.fence_file.write_text(json.dumps({"fenced": False, "at": time.time()}))
    return cfg


def apply(cfg: agent_config.AgentConfig, rt: Runtime, action: str, spec: dict[str, Any]) -> ApplyOutcome:
    return applying.apply(cfg, rt, action, spec["ctid"], json.dumps(spec).encode())


def test_set_applies_new_limits_to_a_running_ct_and_is_idempotent(tmp_path: Path, store_dc: StoreDc) -> None:
    cfg, rt = agent(tmp_path), Runtime()
    old, new = acme_spec(store_dc), acme_spec(store_dc, memory="6G", cpulimit=300, disk="40G")
    ctid = old["ctid"]
    assert apply(cfg, rt, "start", old).result == "done"
    out = apply(cfg, rt, "set", new)
    assert (out.result, out.changed, out.opst) == ("done", True, "UP")
    assert rt.calls[-2:] == [f"set_limits {ctid} 6144M", f"create {ctid}"]  # limits first (vzctl --save)
    assert out.message == f"CT {ctid}: memory 4G -> 6G, cpulimit 200 -> 300 applied live; disk from the next start"
    assert SpecStore(cfg.state_dir).hashes() == {ctid: specs.spec_hash(new)}  # the next report says so
    calls = len(rt.calls)
    again = apply(cfg, rt, "set", new)
    assert (again.result, again.changed, again.message) == ("done", False, f"config of CT {ctid} unchanged")
    assert rt.calls[calls:] == [f"create {ctid}"]  # no limits set again


def test_set_of_a_stopped_ct_only_writes_its_config(tmp_path: Path, store_dc: StoreDc) -> None:
    cfg, rt = agent(tmp_path), Runtime()
    old, new = acme_spec(store_dc), acme_spec(store_dc, memory="2G")
    assert apply(cfg, rt, "create", old).result == "done"
    out = apply(cfg, rt, "set", new)
    assert (out.result, out.changed, out.opst) == ("done", True, "DOWN")
    assert not any(c.startswith("set_limits") for c in rt.calls)
    assert "applies at the next start" in out.message


def test_a_set_that_fails_is_retried_and_one_that_does_not_fit_is_rejected(tmp_path: Path, store_dc: StoreDc) -> None:
    cfg, rt = agent(tmp_path, memory="5G"), Runtime(fail_limits=True)
    old = acme_spec(store_dc)
    assert apply(cfg, rt, "start", old).result == "done"
    failed = apply(cfg, rt, "set", acme_spec(store_dc, memory="2G"))
    assert failed.result == "failed" and "Device or resource busy" in failed.message
    # the old spec is still the one stored: the report still shows drift, so the manager retries
    assert SpecStore(cfg.state_dir).hashes() == {old["ctid"]: specs.spec_hash(old)}
    too_big = apply(cfg, rt, "set", acme_spec(store_dc, memory="8G"))
    assert too_big.result == "rejected" and "not enough memory on hn-101-1: 8G needed" in too_big.message
    (Path(cfg.state_dir) / "drained").touch()  # a drained HN still takes new limits for what it runs
    rt.fail_limits = False
    assert apply(cfg, rt, "set", acme_spec(store_dc, memory="2G")).result == "done"


class Recorder:
    def __init__(self, rc: int = 0) -> None:
        self.argvs: list[list[str]] = []
        self.rc = rc

    def __call__(self, argv: list[str], timeout: float) -> Completed:
        self.argvs.append(argv)
        return Completed(tuple(argv), self.rc, "", "lxc-cgroup: failed to set")


def test_lxc_sets_the_cgroup_limits_of_the_hierarchy_this_hn_mounts(tmp_path: Path, store_dc: StoreDc) -> None:
    spec = specs.parse(json.dumps(acme_spec(store_dc, memory="2G", cpulimit=150, swap="512M")), 1006)
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "unified").mkdir()  # systemd's hybrid layout: an empty unified mount beside the v1 controllers
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert (cgroup_version(v1), cgroup_version(v2)) == (1, 2)
    run = Recorder()
    assert LxcDriver("/var/lib/ctlxc", agent_config.DEFAULT_PATHS, run, cgroup_root=v1).set_limits(spec) == \
        ("memory", "cpuunits", "cpulimit")
    ct = ["lxc-cgroup", "-P", "/var/lib/ctlxc", "-n", "1006"]
    assert run.argvs == [[*ct, "memory.limit_in_bytes", str(2 * G)], [*ct, "cpu.shares", "1000"],
                         [*ct, "cpu.cfs_period_us", "100000"], [*ct, "cpu.cfs_quota_us", "150000"]]
    run = Recorder()
    LxcDriver("/var/lib/ctlxc", agent_config.DEFAULT_PATHS, run, cgroup_root=v2).set_limits(spec)
    assert run.argvs == [[*ct, "memory.max", str(2 * G)], [*ct, "memory.swap.max", str(512 * M)],
                         [*ct, "cpu.max", "150000 100000"], [*ct, "cpu.weight", "98"]]
    with pytest.raises(DriverError, match="cannot set memory.limit_in_bytes of CT 1006 to 2147483648"):
        LxcDriver("/var/lib/ctlxc", agent_config.DEFAULT_PATHS, Recorder(rc=1), cgroup_root=v1).set_limits(spec)


def test_cgroup_v1_limits_are_the_ones_the_lxc_config_sets_at_start(tmp_path: Path, store_dc: StoreDc) -> None:
    spec = specs.parse(json.dumps(acme_spec(store_dc, memory="3G", cpulimit=150, cpuunits=500)), 1006)
    paths = replace(agent_config.DEFAULT_PATHS, config=str(tmp_path / "ctconf"), data=str(tmp_path / "data"))
    d = LxcDriver(str(tmp_path / "lxc"), paths, Recorder())
    (tmp_path / "lxc" / "1006").mkdir(parents=True)  # as lxc-create would
    d.create(spec)
    conf = dict(line.split(" = ", 1) for line in (tmp_path / "lxc" / "1006" / "config").read_text().splitlines()
                if line.startswith("lxc.cgroup."))
    assert conf == {f"lxc.cgroup.{k}": v for k, v in cgroup_limits(spec.ct.resources, 1)}


def test_openvz_set_is_one_vzctl_set_with_k_rounded_sizes(tmp_path: Path, store_dc: StoreDc) -> None:
    spec = specs.parse(json.dumps(acme_spec(store_dc, memory=str(2 * G + 1000), swap="1G", disk="40G", cpus=3)), 1006)
    run = Recorder()
    assert "memory" in OpenVzDriver(agent_config.DEFAULT_PATHS, run, conf_dir=str(tmp_path)).set_limits(spec)
    assert run.argvs == [["vzctl", "set", "1006", "--ram", "2G", "--swap", "1G", "--diskspace", "40G:44G",
                          "--diskinodes", "2621440:2883584", "--cpus", "3", "--cpuunits", "1000",
                          "--cpulimit", "300", "--save"]]
    with pytest.raises(DriverError) as exc:
        OpenVzDriver(agent_config.DEFAULT_PATHS, Recorder(rc=9), conf_dir=str(tmp_path)).set_limits(spec)
    assert exc.value.temporary  # 9: locked by another vzctl


def test_the_conf_file_and_vzctl_set_agree(tmp_path: Path, store_dc: StoreDc) -> None:
    """`vzctl set --save`, then `create` rewrites the file as the template renders
    it: both must carry the same limits."""
    spec = specs.parse(json.dumps(acme_spec(store_dc, memory="3G", swap="512M", disk="40G", cpus=3)), 1006)
    paths = replace(agent_config.DEFAULT_PATHS, config=str(tmp_path / "ctconf"), data=str(tmp_path / "data"))
    run = Recorder()
    d = OpenVzDriver(paths, run, conf_dir=str(tmp_path))
    d.set_limits(spec)
    d.create(spec)
    argv, conf = run.argvs[0], (tmp_path / "1006.conf").read_text()
    value = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1, 2)}
    for key, opt in [("PHYSPAGES", "--ram"), ("SWAPPAGES", "--swap")]:
        assert f'{key}="0:{value[opt]}"' in conf
    for key, opt in [("DISKSPACE", "--diskspace"), ("DISKINODES", "--diskinodes"), ("CPUS", "--cpus"),
                     ("CPUUNITS", "--cpuunits"), ("CPULIMIT", "--cpulimit")]:
        assert f'{key}="{value[opt]}"' in conf
