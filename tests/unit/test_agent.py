"""Agent pure logic: runtime facts parsed from captured output, OpenVZ commands and
exit codes as text, spec and config validation, admission with a fake runtime."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ctmanager.agent import apply as applying
from ctmanager.agent import config as agent_config
from ctmanager.agent.drivers.base import Completed, DriverError
from ctmanager.agent.drivers.lxc import LxcDriver, parse_ls
from ctmanager.agent.drivers.openvz import OpenVzDriver, check, parse_vzlist
from ctmanager.dc.model import Ct, Resources
from ctmanager.errors import InputError
from ctmanager.render import ctfiles
from ctmanager.wire import results
from ctmanager.wire import spec as specs
from ctmanager.wire.results import ApplyOutcome

G = 1 << 30

# Captured on this machine: lxc-ls -P PATH -f -F NAME,STATE (LXC 5.0)
LXC_LS = """NAME STATE   
1000 RUNNING 
1002 STOPPED 
1003 STOPPING
web  RUNNING 
"""  # noqa: W291 - the captured output keeps lxc-ls's column padding
# Captured from vzlist -a -j (OpenVZ 7 legacy tools), trimmed to the fields we read
VZLIST = json.dumps([
    {"ctid": 101, "status": "running", "hostname": "myhost", "ip": ["10.101.4.1"],
     "physpages": {"held": 1, "maxheld": 2, "barrier": 0, "limit": 262144, "failcnt": 0}},
    {"ctid": 102, "status": "stopped", "hostname": "acme", "ip": []},
    {"ctid": 103, "status": "mounted", "hostname": "x", "ip": []},
])


def test_lxc_ls_is_parsed_and_foreign_containers_skipped() -> None:
    assert parse_ls(LXC_LS) == {1000: "UP", 1002: "DOWN", 1003: "DOWN"}
    assert parse_ls("") == {}
    with pytest.raises(DriverError, match="unexpected header"):
        parse_ls("oops\n1 RUNNING\n")
    with pytest.raises(DriverError, match="unknown state"):
        parse_ls("NAME STATE\n1 WEIRD\n")


def test_vzlist_is_parsed() -> None:
    assert parse_vzlist(VZLIST) == {101: "UP", 102: "DOWN", 103: "DOWN"}
    for bad in ("not json", "{}", '[{"ctid": "x"}]', '[{"ctid": 1, "status": "exploded"}]'):
        with pytest.raises(DriverError):
            parse_vzlist(bad)


@pytest.mark.parametrize("action,rc,outcome", [
    ("start", 0, None), ("start", 32, None), ("stop", 31, None),  # already in the wanted state
    ("start", 9, "temporary"), ("start", 46, "refused"), ("start", 78, "refused"), ("start", 14, "refused"),
    ("start", 79, "failed"), ("stop", 32, "failed"), ("start", 3, "failed"),
])
def test_vzctl_exit_codes_are_mapped(action: str, rc: int, outcome: str | None) -> None:
    c = Completed(("vzctl", action, "101"), rc, "", "vzctl: some error")
    if outcome is None:
        check(c, action, 101)
        return
    with pytest.raises(DriverError) as exc:
        check(c, action, 101)
    assert (exc.value.refused, exc.value.temporary) == (outcome == "refused", outcome == "temporary")


class Recorder:
    def __init__(self, results: dict[str, Completed] | None = None) -> None:
        self.argvs: list[list[str]] = []
        self.results = results or {}

    def __call__(self, argv: list[str], timeout: float) -> Completed:
        self.argvs.append(argv)
        return self.results.get(argv[0], Completed(tuple(argv), 0, "[]" if argv[0] == "vzlist" else "NAME STATE\n", ""))


def test_openvz_commands_are_argument_lists(tmp_path: Path) -> None:
    run = Recorder()
    d = OpenVzDriver(agent_config.DEFAULT_PATHS, run, conf_dir=str(tmp_path))
    d.start(101)
    d.stop(101)
    d.destroy(101)
    assert run.argvs == [["vzctl", "start", "101"], ["vzctl", "stop", "101"], ["vzctl", "stop", "101"],
                         ["vzctl", "destroy", "101"]]
    assert d.exec_argv(101, ["sh", "-c", "echo $HOME; rm -rf /"]) == ["vzctl", "exec2", "101", "sh", "-c",
                                                                        "echo $HOME; rm -rf /"]


def test_lxc_start_of_a_running_ct_does_nothing(tmp_path: Path) -> None:
    run = Recorder({"lxc-ls": Completed((), 0, "NAME STATE\n7 RUNNING\n", "")})
    d = LxcDriver(str(tmp_path), agent_config.DEFAULT_PATHS, run)
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "config").write_text("x")
    d.start(7)
    assert [a[0] for a in run.argvs] == ["lxc-ls"]
    with pytest.raises(DriverError, match="no config"):
        d.start(8)


def ct(ctid: int = 1005, memory: int = 2 * G, hostname: str = "myhost") -> Ct:
    return Ct(ctid, hostname, 101, "myhost", None, "prod", "10.101.4.1", "storage-101-1", "UP",
              Resources(memory, G, 20 * G, 2, 1000, 200), ("jira",))


def spec_json(c: Ct) -> dict:
    return {"ctid": c.ctid, "hostname": c.hostname, "rack": c.rack, "tenant": c.tenant, "service": c.service,
            "env": c.env, "ip": c.ip, "storage": c.storage, "admst": c.admst,
            "resources": {"memory": c.resources.memory, "swap": c.resources.swap, "disk": c.resources.disk,
                          "cpus": 2, "cpuunits": 1000, "cpulimit": 200},
            "apps": list(c.apps), "dc": "dc1", "net": {"bridge": "br0", "prefixlen": 16, "gateway": "10.101.0.1"},
            "dns": {"nameservers": ["10.0.0.53"], "search": ["rack-101.uc-inf.net.internal"]}}


def test_a_spec_round_trips_and_bad_ones_are_refused() -> None:
    good = spec_json(ct())
    assert specs.parse(json.dumps(good), 1005).ct == ct()
    bad = [
        ("{", "not JSON"), ("[]", "JSON object"), (json.dumps({**good, "ctid": 7}), "not 1005"),
        (json.dumps({**good, "hostname": "x;rm -rf /"}), "spec.hostname"),
        (json.dumps({**good, "ip": "10.1.1.1\nlxc.rootfs.path = /"}), "spec.ip"),
        (json.dumps({**good, "extra": 1}), "spec.extra"),
        (json.dumps({k: v for k, v in good.items() if k != "net"}), "spec.net"),
        (json.dumps({**good, "net": {**good["net"], "bridge": "br0 up"}}), "spec.net.bridge"),
        (json.dumps({**good, "resources": {**good["resources"], "memory": "lots"}}), "spec.resources.memory"),
        ("x" * 70_000, "larger than"),
    ]
    for text, message in bad:
        with pytest.raises(InputError, match=message.replace(".", r"\.")):
            specs.parse(text, 1005)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "key").write_text("00" * 32)
    (tmp_path / "key").chmod(0o600)
    f = tmp_path / "agent.toml"
    f.write_text(f'rack = 101\nhn = "hn-101-1"\nkey_file = "{tmp_path}/key"\nreport_to = ["10.101.0.1:7070"]\n'
                 f'state_dir = "{tmp_path}/state"\n{extra}')
    return f


def test_agent_config_errors_name_the_field(tmp_path: Path) -> None:
    assert agent_config.load(write_config(tmp_path, '[capacity]\nmemory = "4G"\ndisk = "100G"\n')).memory == 4 * G
    for extra, message in [('runtime = "docker"', "runtime"), ('report_intervall = 1', "report_intervall"),
                           ('[capacity]\nmemory = "lots"', "capacity.memory"),
                           ('[paths]\ndata = "../x"', "paths.data")]:
        with pytest.raises(InputError, match=message):
            agent_config.load(write_config(tmp_path, extra))


# captured from a failed lxc-start (lxc 5.0.2): the cause is the first ERROR line
LXC_START_LOG = """\
lxc 7 20261122190021.123 ERROR    conf - ../src/lxc/conf.c:mount_entry:2459 - No such file or directory - Failed to mount "/x/ctconf/7/resolv.conf" on "/usr/lib/x86_64-linux-gnu/lxc/rootfs/etc/resolv.conf"
lxc 7 20261122190021.124 ERROR    start - ../src/lxc/start.c:lxc_spawn:1840 - Failed to setup container "7"
lxc 7 20261122190021.131 ERROR    lxc_start - ../src/lxc/tools/lxc_start.c:main:306 - The container failed to start
lxc 7 20261122190021.131 ERROR    lxc_start - ../src/lxc/tools/lxc_start.c:main:311 - Additional information can be obtained by setting the --logfile and --logpriority options
"""


def test_a_failed_lxc_start_reports_the_cause_from_its_log(tmp_path: Path) -> None:
    class FailingStart(Recorder):
        def __call__(self, argv: list[str], timeout: float) -> Completed:
            if argv[0] == "lxc-start":
                Path(argv[argv.index("-o") + 1]).write_text(LXC_START_LOG)
                self.argvs.append(argv)
                return Completed(tuple(argv), 1, "", "")
            return super().__call__(argv, timeout)

    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "config").write_text("x")
    with pytest.raises(DriverError, match=r'^cannot start CT 7: No such file .*Failed to mount "/x/ctconf/7/resolv.conf"'):
        LxcDriver(str(tmp_path), agent_config.DEFAULT_PATHS, FailingStart()).start(7)


class FakeRuntime:
    name = "fake"

    def __init__(self, states: dict[int, str], refuse: bool = False) -> None:
        self.states = states
        self.refuse = refuse
        self.calls: list[str] = []

    def observe(self) -> dict[int, str]:
        return dict(self.states)

    def watch_argv(self) -> None:
        return None

    def create(self, spec: specs.Spec) -> bool:
        self.calls.append(f"create {spec.ct.ctid}")
        return True

    def start(self, ctid: int) -> None:
        if self.refuse:
            raise DriverError("lxc-start refused", refused=True)
        self.calls.append(f"start {ctid}")
        self.states[ctid] = "UP"

    def stop(self, ctid: int) -> None:
        self.calls.append(f"stop {ctid}")
        self.states[ctid] = "DOWN"

    def destroy(self, ctid: int) -> None:
        self.calls.append(f"destroy {ctid}")
        self.states.pop(ctid, None)

    def exec_argv(self, ctid: int, argv: list[str]) -> list[str]:
        return argv


def run_apply(tmp_path: Path, runtime: FakeRuntime, action: str, c: Ct, capacity: str = "8G",
              fence: dict[str, object] | None = None) -> ApplyOutcome:
    """`ctagent apply` with the daemon running and not fenced, unless `fence` says otherwise."""
    cfg = agent_config.load(write_config(tmp_path, f'[capacity]\nmemory = "{capacity}"\ndisk = "1T"\nreserve_memory = 0\n'))
    cfg.fence_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.fence_file.write_text(json.dumps(fence if fence is not None else {"fenced": False, "at": time.time()}))
    return applying.apply(cfg, runtime, action, c.ctid, json.dumps(spec_json(c)).encode())


@pytest.mark.parametrize("fence, why", [
    ({"fenced": True, "at": "now"}, "hn-101-1 is fenced: it hears fewer than a majority"),
    ({"fenced": False, "at": "long ago"}, "the agent daemon stopped 60s ago"),
    ({}, "the agent daemon has not run here"),
])
def test_no_ct_starts_on_a_fenced_hn_or_without_the_daemon(tmp_path: Path, fence: dict[str, object], why: str) -> None:
    at = {"now": time.time(), "long ago": time.time() - 60}
    fence = {k: at.get(str(x), x) for k, x in fence.items()}
    rt = FakeRuntime({1006: "UP"})
    out = run_apply(tmp_path, rt, "start", ct(), fence=fence)
    assert (out.result, out.exit_code) == ("rejected", results.EXIT_REJECTED)
    assert why in out.message
    assert rt.calls == []
    stopped = run_apply(tmp_path, rt, "stop", ct(1006, hostname="acme"), fence=fence)
    assert (stopped.result, stopped.changed) == ("done", True)  # stopping is always allowed


def test_admission_counts_the_running_cts(tmp_path: Path) -> None:
    rt = FakeRuntime({})
    assert run_apply(tmp_path, rt, "start", ct(1005, 6 * G)).result == "done"
    out = run_apply(tmp_path, rt, "start", ct(1006, 4 * G, "acme"))
    assert (out.result, out.exit_code) == ("rejected", results.EXIT_REJECTED)
    assert "not enough memory on hn-101-1: 10G needed" in out.message
    assert rt.calls == ["create 1005", "start 1005"]  # nothing done for the rejected CT


def test_start_is_idempotent_and_conflicts_and_drain_reject(tmp_path: Path) -> None:
    rt = FakeRuntime({})
    assert run_apply(tmp_path, rt, "start", ct()).changed is True
    again = run_apply(tmp_path, rt, "start", ct())
    assert (again.result, again.changed) == ("done", False)
    clash = run_apply(tmp_path, rt, "create", ct(1005, hostname="other"))
    assert clash.result == "rejected" and "CTID conflict" in clash.message
    (tmp_path / "state" / "drained").touch()
    assert "drained" in run_apply(tmp_path, FakeRuntime({}), "start", ct(1009, hostname="new")).message
    refused = run_apply(tmp_path, FakeRuntime({}, refuse=True), "start", ct(1010, hostname="nx"))
    assert refused.result == "rejected"


def test_stop_and_destroy_are_idempotent(tmp_path: Path) -> None:
    rt = FakeRuntime({1005: "UP"})
    cfg = agent_config.load(write_config(tmp_path))
    assert applying.apply(cfg, rt, "stop", 1005, b"").changed is True
    assert applying.apply(cfg, rt, "stop", 1005, b"").changed is False
    assert applying.apply(cfg, rt, "destroy", 1005, b"").changed is True
    out = applying.apply(cfg, rt, "destroy", 1005, b"")
    assert (out.result, out.changed) == ("done", False)
    bad = applying.apply(cfg, rt, "start", 1005, b"")
    assert (bad.result, bad.exit_code) == ("bad_input", results.EXIT_BAD_INPUT)


def test_apply_refuses_an_epoch_older_than_one_the_hn_has_seen(tmp_path: Path) -> None:
    """A deposed leader's action (its epoch is older than one this HN saw in an
    action or a heartbeat) is refused, with its own exit code, and does nothing."""
    rt = FakeRuntime({1005: "UP"})
    cfg = agent_config.load(write_config(tmp_path))
    assert applying.apply(cfg, rt, "stop", 1005, b"", epoch=3).result == "done"
    rt.states[1005] = "UP"
    stale = applying.apply(cfg, rt, "stop", 1005, b"", epoch=2)
    assert (stale.result, stale.exit_code) == ("stale", results.EXIT_STALE)
    assert "has seen manager epoch 3" in stale.message and rt.states[1005] == "UP"
    assert (tmp_path / "state" / "epoch").read_text() == "3\n"  # on disk: it outlives the agent and a reboot
    assert applying.apply(cfg, rt, "stop", 1005, b"", epoch=4).result == "done"
    rt.states[1005] = "UP"
    assert applying.apply(cfg, rt, "stop", 1005, b"").result == "done"  # by hand, no --epoch: not fenced


def test_a_ct_whose_data_is_sealed_is_not_started_but_stops(tmp_path: Path) -> None:
    """A tenant move sealed the CT's /data on its storage node: a start is refused
    with its own result and exit code (not a rejection: no HN would do better)."""
    c = ct()
    data = tmp_path / "vz-data"
    cfg = agent_config.load(write_config(tmp_path, f'[capacity]\nmemory = "8G"\ndisk = "1T"\nreserve_memory = 0\n'
                                                   f'[paths]\ndata = "{data}"\n'))
    cfg.fence_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.fence_file.write_text(json.dumps({"fenced": False, "at": time.time()}))
    rt = FakeRuntime({})

    def start() -> ApplyOutcome:
        return applying.apply(cfg, rt, "start", c.ctid, json.dumps(spec_json(c)).encode(), epoch=3)

    assert start().result == "done"
    marker = Path(ctfiles.data_dir(cfg.paths, c) + ".sealed")
    assert marker == data / c.storage / f"{c.ctid}.sealed"  # the storage node's <data>/<CTID>.sealed, as mounted
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"token": 7, "sealed_at": time.time()}))
    assert (start().result, start().changed) == ("done", False)  # already running: nothing to start
    stopped = applying.apply(cfg, rt, "stop", c.ctid, b"", epoch=3)  # stopping always works
    assert (stopped.result, stopped.changed) == ("done", True)
    out = start()
    assert (out.result, out.exit_code, out.changed) == ("sealed", results.EXIT_SEALED, False)
    assert out.message == f"CT {c.ctid}: its /data on {c.storage} is sealed (a tenant move copied it away): not started"
    assert json.loads(out.emit())["result"] == "sealed" and results.result_of(results.EXIT_SEALED) == "sealed"
    assert rt.calls == ["create 1005", "start 1005", "stop 1005"] and rt.states[c.ctid] == "DOWN"
    marker.unlink()  # unsealed (the move rolled back): it starts again
    assert start().result == "done" and rt.states[c.ctid] == "UP"
    assert len(results.RESULT_OF_EXIT) == len(results.EXIT_OF_RESULT) == 7  # one code per result
