"""The lab rack, for real: LXC CTs in HN namespaces, sshd with pinned keys,
ctagent, the manager daemon. Everything goes through the inventory."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tomllib
from pathlib import Path

from labrack import Rack, all_up, wait_for


def test_lab_up_runs_every_ct_with_its_process_tree(rack: Rack) -> None:
    status = rack.status()
    assert len(status) == 8 and all(r["admst"] == "UP" and r["opst"] == "UP" for r in status.values()), status
    # anti-affinity: the two relays of rack-101 are on different HNs
    assert status["relay-101-1"]["hn"] != status["relay-101-2"]["hn"]
    # placed in one burst, the CTs still spread: every HN runs some
    assert {r["hn"] for r in status.values()} == set(rack.hns), status
    # the tenant core CT answers HTTP on its own IP, from a service under supervise
    page = wait_for("myhost's HTTP service", lambda: http_get(status["myhost"]["ip"]))
    assert b"myhost (myhost) CT" in page
    ps = rack.cli("ct", "exec", "myhost", "--", "ps", "-eo", "pid,args").stdout
    assert "1 /usr/bin/svscan /data/service" in ps and "supervise httpd" in ps and "http.server" in ps
    # the three mounts: / and /sw read-only, /data writable
    p = rack.cli("ct", "exec", "myhost", "--", "sh", "-c", "touch /x; touch /sw/x; touch /data/x && echo data-ok",
                 check=False)
    assert p.stderr.count("Read-only file system") == 2 and "data-ok" in p.stdout
    # exit codes pass through
    assert rack.cli("ct", "exec", "myhost", "--", "sh", "-c", "exit 7", check=False).returncode == 7


def http_get(ip: str) -> bytes | None:
    try:
        with socket.create_connection((ip, 80), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):  # HTTP/1.0: the server closes when done
                data += chunk
            return data
    except ConnectionRefusedError:
        return None  # the CT is UP; its service may still be starting


def test_a_plan_after_convergence_is_empty_and_reconcile_refuses_beside_the_daemon(rack: Rack) -> None:
    out = json.loads(rack.cli("plan", "--json").stdout)
    assert out["actions"] == [] and out["place"] == {} and out["unreachable"] == {} and out["quorum"] is True
    p = rack.cli("reconcile", check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert re.fullmatch(r"ctmanager: error: rack-101 is led by \S+ \(ctmanager run pid \d+ on \S+\) since "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(lease renewed \d+\.\ds ago\); reconcile would act "
                        r"beside it\. See what it will do with: ctmanager plan\n", p.stderr), p.stderr


def test_a_killed_ct_is_restarted(rack: Rack) -> None:
    ct = rack.status()["acme"]
    hn, ctid = ct["hn"], ct["ctid"]
    old = rack.init_pid(hn, ctid)
    assert old is not None
    assert rack.on_hn(hn, "kill", "-9", str(old)).returncode == 0
    wait_for("a new init",
             lambda: rack.lxc_state(hn, ctid) == "RUNNING" and rack.init_pid(hn, ctid) not in (None, old))
    assert f"start {ctid} on {hn}: crashed: OPST DOWN while ADMST UP" in rack.manager_log()
    wait_for("acme UP again", lambda: rack.status()["acme"]["opst"] == "UP")


def cgroup_memory_limit(rack: Rack, hn: str, ctid: int) -> int | None:
    """The memory limit in a running CT's cgroup (v1 or v2), read on its HN. Through
    lxc-cgroup, which asks the CT's monitor: in the lab the console (`ip netns
    exec`) sees no cgroup mounts, and LXC may name the cgroup lxc.payload.CTID-1."""
    for key in ("memory.limit_in_bytes", "memory.max"):
        p = rack.on_hn(hn, "lxc-cgroup", "-P", rack.hns[hn]["lxcpath"], "-n", str(ctid), key)
        if p.returncode == 0 and p.stdout.strip().isdigit():
            return int(p.stdout.strip())
    return None


def test_a_memory_change_reaches_the_running_ct_without_a_restart(rack: Rack) -> None:
    ct = rack.status()["acme"]
    hn, ctid = ct["hn"], ct["ctid"]
    memory = json.loads(rack.cli("ct", "show", "acme", "--json").stdout)["memory"]
    assert cgroup_memory_limit(rack, hn, ctid) == memory  # what its config set at start
    pid = rack.init_pid(hn, ctid)
    try:
        rack.cli("ct", "set", "acme", "--memory", "2G")
        wait_for("acme's cgroup memory limit at 2 GiB", lambda: cgroup_memory_limit(rack, hn, ctid) == 2 << 30,
                 timeout=5, describe=lambda: f"limit {cgroup_memory_limit(rack, hn, ctid)}; plan: "
                                             f"{rack.cli('plan').stdout.strip()}")
        assert rack.init_pid(hn, ctid) == pid  # applied live: the same init runs
        assert re.search(rf"set {ctid} on {hn}: drift: spec changed \(runs [0-9a-f]{{8}}, configured [0-9a-f]{{8}}\)",
                         rack.manager_log())
        # once the HN reports the new spec, there is nothing left to do
        wait_for("an empty plan", lambda: json.loads(rack.cli("plan", "--json").stdout)["actions"] == [], timeout=10)
        assert rack.status()["acme"]["opst"] == "UP"
    finally:
        rack.cli("ct", "set", "acme", "--memory", str(memory))
    wait_for("acme's old limit back", lambda: cgroup_memory_limit(rack, hn, ctid) == memory, timeout=10)


def test_admst_down_stops_and_up_starts_again(rack: Rack) -> None:
    ct = rack.status()["initech"]
    rack.cli("ct", "set", "initech", "--admst", "down")
    wait_for("initech stopped", lambda: rack.lxc_state(ct["hn"], ct["ctid"]) == "STOPPED")
    assert rack.status()["initech"]["opst"] == "DOWN"
    rack.cli("ct", "set", "initech", "--admst", "up")
    wait_for("initech UP", lambda: rack.status()["initech"]["opst"] == "UP")


def test_ct_rm_destroys_the_ct_and_keeps_its_data(rack: Rack) -> None:
    added = json.loads(rack.cli("ct", "add", "build-101-1", "--rack", "rack-101", "--memory", "512M", "--json").stdout)
    ctid = added["ctid"]
    row = wait_for("the new CT UP", lambda: (r := rack.status().get("build-101-1")) and r["opst"] == "UP" and r)
    data = Path(rack.inv["data"]) / added["storage"] / str(ctid)
    (data / "keep.txt").write_text("tenant data\n")
    rack.cli("ct", "rm", "build-101-1")
    wait_for("the CT destroyed", lambda: rack.lxc_state(row["hn"], ctid) is None)
    assert not (Path(rack.hns[row["hn"]]["lxcpath"]) / str(ctid)).exists()
    assert (data / "keep.txt").read_text() == "tenant data\n"  # /data kept without --purge-data


def test_a_rejecting_hn_sends_the_ct_elsewhere(rack: Rack) -> None:
    status = rack.status()
    ct, source = status["socks-101-1"], status["socks-101-1"]["hn"]
    target = sorted(h for h in rack.hns if h != source)[0]
    conf = rack.hns[target]["agent_config"]
    saved = rack.hn_read(target, conf)
    # admission on `target` now sees 1G of memory (its reports still advertise more)
    rack.hn_write(target, conf, saved.replace("[capacity]", "[capacity]\nreserve_memory = 0", 1).replace(
        f"memory = {512 << 30}", "memory = \"1G\""))
    try:
        rack.cli("ct", "move", "socks-101-1", "--to", target)
        rejected = f"start {ct['ctid']} on {target}: rejected: not enough memory on {target}"
        wait_for("the rejection", lambda: rejected in rack.manager_log())
        wait_for("socks placed elsewhere and UP",
                 lambda: (r := rack.status()["socks-101-1"])["hn"] != target and r["opst"] == "UP")
        assert rack.lxc_state(target, ct["ctid"]) in (None, "STOPPED")
    finally:
        rack.hn_write(target, conf, saved)


def test_drain_moves_every_ct_off_the_hn(rack: Rack) -> None:
    busiest = max(rack.hns, key=lambda h: sum(r["hn"] == h for r in rack.status().values()))
    moving = sorted(r["ctid"] for r in rack.status().values() if r["hn"] == busiest)
    log_before = len(rack.manager_log())
    rack.cli("hn", "drain", busiest)
    try:
        wait_for(f"no CT on {busiest}", lambda: all(r["hn"] != busiest and r["opst"] == "UP"
                                                    for r in rack.status().values()),
                 timeout=60, describe=lambda: f"status {rack.status()}; plan: {rack.cli('plan').stdout}")
        hn_list = {h["hn"]: h for h in json.loads(rack.cli("hn", "list", "--json").stdout)}
        assert hn_list[busiest]["drained"] is True
        wait_for(f"nothing running on {busiest}", lambda: hn_list and not rack.on_hn(
            busiest, "lxc-ls", "-P", rack.hns[busiest]["lxcpath"], "--running").stdout.split())
        wait_for(f"every moved CT destroyed on {busiest}", lambda: not rack.on_hn(
            busiest, "lxc-ls", "-P", rack.hns[busiest]["lxcpath"]).stdout.split())
        log = rack.manager_log()[log_before:]
        # each move is one stop and one destroy on the drained HN, never re-issued
        assert [log.count(f"destroy {c} on {busiest}: left over") for c in moving] == [1] * len(moving), log
        assert [log.count(f"stop {c} on {busiest}: runs on") for c in moving] == [1] * len(moving), log
    finally:
        rack.cli("hn", "undrain", busiest)
    wait_for("all UP", all_up(rack))


def test_hn_bridges_keep_the_mac_of_their_rack_nic(rack: Rack) -> None:
    """A bridge left alone takes its ports' lowest MAC, which changes as CT veths come
    and go; peers then ARP into the void and the HN falls off the rack."""
    for hn, h in rack.hns.items():
        bridge = rack.on_hn(hn, "ip", "-o", "-4", "addr", "show", "to", h["address"]).stdout.split()[1]
        macs = {}
        for line in rack.on_hn(hn, "ip", "-o", "link", "show", "master", bridge).stdout.splitlines():
            m = re.match(r"\d+: ([^:@]+).* link/ether ([0-9a-f:]{17})", line)
            assert m, line
            macs[m[1]] = m[2]
        nic = [(name, mac) for name, mac in macs.items() if not name.startswith("veth")]  # the rest: CTs
        assert len(nic) == 1, f"{hn}: ports of {bridge}: {macs}"
        assert rack.hn_read(hn, f"/sys/class/net/{bridge}/address").strip() == nic[0][1], (hn, bridge, nic)
        # fixed by us (NET_ADDR_SET), not the lowest port's by chance
        assert rack.hn_read(hn, f"/sys/class/net/{bridge}/addr_assign_type").strip() == "3", (hn, bridge)


def test_a_changed_host_key_is_refused(rack: Rack, tmp_path: Path) -> None:
    ct = next(iter(rack.status().values()))  # whichever HN runs it (earlier tests move CTs)
    address = rack.hns[ct["hn"]]["address"]
    pinned = tomllib.loads(Path(rack.config).read_text())["ssh"]["known_hosts"]  # the manager's own copy
    known = Path(pinned).read_text().splitlines()
    other = next(line for line in known if line.split()[0] != address).split()[1:]  # another HN's key
    bad = tmp_path / "known_hosts"
    bad.write_text("".join(f"{address} {' '.join(other)}\n" if line.split()[0] == address else f"{line}\n"
                           for line in known))
    conf = tmp_path / "manager.toml"
    conf.write_text(Path(rack.config).read_text().replace(f'"{pinned}"', f'"{bad}"'))
    p = rack.cli("ct", "exec", ct["hostname"], "--", "true", check=False, CTMANAGER_CONFIG=str(conf))
    assert p.returncode != 0 and "host key CHANGED" in p.stderr and "refusing to connect" in p.stderr


def test_an_ssh_timeout_is_reported(rack: Rack, tmp_path: Path) -> None:
    conf = tmp_path / "manager.toml"
    conf.write_text(Path(rack.config).read_text().replace("action_timeout = 30.0", "action_timeout = 0.5"))
    p = rack.cli("ct", "exec", "myhost", "--", "sleep", "5", check=False, CTMANAGER_CONFIG=str(conf))
    assert p.returncode != 0 and "timed out after 0.5 s" in p.stderr
    # per command: --timeout; an option after the CT would be part of the command, so it is refused
    p = rack.cli("ct", "exec", "--timeout", "0.7", "myhost", "--", "sleep", "5", check=False)
    assert p.returncode != 0 and "timed out after 0.7 s" in p.stderr
    p = rack.cli("ct", "exec", "myhost", "--timeout", "0.7", "--", "true", check=False)
    assert p.returncode == 2 and "options go before the CT" in p.stderr and p.stdout == ""


def test_a_malformed_spec_is_refused_and_changes_nothing(rack: Rack) -> None:
    hn = next(iter(rack.hns))
    agent = rack.hns[hn]["agent_config"]
    before = rack.on_hn(hn, "lxc-ls", "-P", rack.hns[hn]["lxcpath"]).stdout
    for stdin in ('{"ctid": 4242', '{"ctid": 4242, "hostname": "x;rm -rf /"}', "[]"):
        p = rack.on_hn(hn, rack.hns[hn]["ctagent"], "-c", agent, "apply", "start", "4242", input=stdin)
        assert p.returncode == 2, p
        result = json.loads(p.stdout)
        assert result["result"] == "bad_input" and result["changed"] is False
    assert rack.on_hn(hn, "lxc-ls", "-P", rack.hns[hn]["lxcpath"]).stdout == before


def test_forged_and_malformed_reports_are_dropped(rack: Rack) -> None:
    host, port = Path(rack.config).read_text().split('listen = "')[1].split('"')[0].split(":")
    body = json.dumps({"v": 1, "rack": 101, "hn": next(iter(rack.hns)), "boot_id": "0" * 32, "seq": 10**9,
                       "sent_at": 1e9, "drained": False, "metrics": {}, "cts": []}).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\0" * 32 + body, (host, int(port)))
        s.sendto(b"tiny", (host, int(port)))
    wait_for("the drops logged", lambda: "forged" in rack.manager_log() and "malformed" in rack.manager_log())
    assert all_up(rack)()


def test_a_tenant_ct_resolves_smtp_by_its_search_path_and_follows_a_route_move(rack: Rack) -> None:
    """The CT's own resolver (glibc, its resolv.conf: search path and the DC's
    resolvers) against the lab's BIND, which ctmanager published to."""
    def smtp() -> list[str]:
        p = rack.cli("ct", "exec", "myhost", "--", "getent", "hosts", "smtp", check=False)
        return sorted(line.split()[0] + " " + line.split()[1] for line in p.stdout.splitlines())

    relays = {r["hostname"]: r["ip"] for r in rack.status().values() if r["hostname"].startswith("relay-101-")}
    pool = "relay-101.rack-101.uc-inf.net.internal"
    assert smtp() == sorted(f"{ip} {pool}" for ip in relays.values())  # smtp -> the relay pool, by CNAME
    try:
        p = rack.cli("route", "set", "myhost", "smtp", "relay-101-2")
        assert "dns: published 1 change(s)" in p.stderr
        assert smtp() == [f"{relays['relay-101-2']} relay-101-2.rack-101.uc-inf.net.internal"]
    finally:
        rack.cli("route", "set", "myhost", "smtp", "relay-101")


def test_every_ct_runs_collectd_with_the_plugins_of_its_services(rack: Rack) -> None:
    for name in rack.status():
        ps = rack.cli("ct", "exec", name, "--", "ps", "-eo", "args").stdout
        assert "collectd -f -C /sw/collectd/cloud.conf" in ps and "ctmanager.monitoring.ctautolink" in ps, name
        # every lab CT runs an httpd; the metrics CT also carbon
        want = ["process_httpd.conf", "tail_apache.conf"] + (["process_carbon.conf"] if name.startswith("metrics-")
                                                             else [])
        wait_for(f"{name}'s plugin links", lambda: sorted(rack.cli(
            "ct", "exec", name, "--", "ls", "/data/sys_collectd/conf").stdout.split()) == sorted(want), timeout=30,
            describe=lambda: rack.cli("ct", "exec", name, "--", "ls", "/data/sys_collectd/conf").stdout)
    # a service appears (made under a dot-name, then renamed): its plugins follow
    make = ("mkdir -p /data/service/.postgresql && printf '#!/bin/sh\\nexec sleep 100000\\n' > "
            "/data/service/.postgresql/run && chmod +x /data/service/.postgresql/run && "
            "mv /data/service/.postgresql /data/service/postgresql")
    rack.cli("ct", "exec", "acme", "--", "sh", "-c", make)
    try:
        wait_for("the postgresql plugins in acme", lambda: "process_postgresql.conf" in rack.cli(
            "ct", "exec", "acme", "--", "ls", "/data/sys_collectd/conf").stdout, timeout=30)
    finally:
        # daemontools' way to remove a service: hide it (a dot-name), stop it, then delete it
        rack.cli("ct", "exec", "acme", "--", "sh", "-c",
                 "mv /data/service/postgresql /data/service/.postgresql && svc -dx /data/service/.postgresql",
                 check=False)
    wait_for("the postgresql plugins gone", lambda: "process_postgresql.conf" not in rack.cli(
        "ct", "exec", "acme", "--", "ls", "/data/sys_collectd/conf").stdout, timeout=30)
    wait_for("the postgresql service gone", lambda: rack.cli(
        "ct", "exec", "acme", "--", "sh", "-c", "svok /data/service/.postgresql || rm -rf /data/service/.postgresql; "
        "test ! -e /data/service/.postgresql", check=False).returncode == 0, timeout=30)


def test_the_rack_s_metrics_land_in_the_metrics_ct_s_carbon(rack: Rack) -> None:
    """collectd in every CT -> `metrics` (DNS) -> the metrics CT's carbon relay -> cache
    and aggregator; the agents and the manager send their own figures there too."""
    metrics_ct = next(name for name in rack.status() if name.startswith("metrics-"))
    whisper = "/data/carbon/storage/whisper"

    def stored(folder: str) -> set[str]:
        p = rack.cli("ct", "exec", metrics_ct, "--", "ls", f"{whisper}/{folder}", check=False)
        return set(p.stdout.split())

    hosts = set(rack.status()) | {"summary"}
    wait_for("every CT's collectd and the rack summary in carbon", lambda: hosts <= stored("dc1/rack-101"),
             timeout=90, every=1, describe=lambda: f"{sorted(stored('dc1/rack-101'))}, want {sorted(hosts)}")
    daemons = set(rack.hns) | {"manager"}
    wait_for("the agents' and the manager's figures in carbon", lambda: daemons <= stored("ctmanager/rack-101"),
             timeout=60, every=1, describe=lambda: f"{sorted(stored('ctmanager/rack-101'))}, want {sorted(daemons)}")
    # a real value: the rack-wide average of the CTs' 1-minute load
    def summary_load() -> list[float]:
        out = rack.cli("ct", "exec", metrics_ct, "--", "sh", "-c", "whisper-fetch --from=$(($(date +%s) - 600)) "
                       f"{whisper}/dc1/rack-101/summary/load/load/shortterm.wsp", check=False).stdout
        return [float(v) for _, v in (line.split() for line in out.splitlines()) if v != "None"]

    assert all(v >= 0 for v in wait_for("the summary of the CTs' load", summary_load, timeout=60, every=1))
    logs = rack.cli("ct", "exec", metrics_ct, "--", "sh", "-c", "cat /data/log/carbon-*/current").stdout
    assert "Error tagging" not in logs and "MetricLineReceiver connection with" not in logs, logs[-2000:]


def test_the_managers_key_runs_ctagent_through_the_gate_and_nothing_else(rack: Rack) -> None:
    hn = sorted(rack.hns)[0]
    ssh = ["ssh", "-i", rack.inv["ssh_key"], "-o", f"UserKnownHostsFile={rack.inv['known_hosts']}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
           f"root@{rack.hns[hn]['address']}"]
    for command, why in (("id", "only ctagent may run"),
                         ("ctagent apply start 1005; rm -rf /", "CTID must be"),
                         ("ctagent run", "not for the manager's key"),
                         ("/bin/sh -c id", "only ctagent may run")):
        p = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=30)
        assert p.returncode == 126 and p.stdout == "", (command, p)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("ctgate: refused: ") and why in last, (command, p.stderr)
    observed = subprocess.run([*ssh, "ctagent observe"], capture_output=True, text=True, timeout=30)
    assert observed.returncode == 0 and isinstance(json.loads(observed.stdout), (list, dict)), observed.stderr
    # and every manager action goes through it: exec inside a CT, with its exit code
    up = next(r["hostname"] for r in rack.status().values() if r["opst"] == "UP")
    assert rack.cli("ct", "exec", up, "--", "sh", "-c", "exit 3", check=False).returncode == 3
