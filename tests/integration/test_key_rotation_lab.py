"""A rack key rotated on the real lab rack while it works (`ctmanager rack key`,
over SSH and ctgate to every HN, the daemons re-reading their key files): no
report is refused as forged, no HN fences, no CT restarts or runs twice, and
afterwards a report signed with the old key is refused by the running manager.
(In the lab the HNs share one key file with the manager; on the Vagrant rack
each machine has its own.)"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from labrack import Rack, wait_for, watched

from ctmanager.manager.config import load
from ctmanager.wire import keys
from ctmanager.wire.reports import Metrics, Report, sign


def ids(rack: Rack) -> list[dict[str, str]]:
    return json.loads(rack.cli("rack", "key", "status", "--json").stdout)


def reports_fresh(rack: Rack) -> bool:
    rows = json.loads(rack.cli("hn", "list", "--rack", rack.name, "--json").stdout)
    return all(r["report_age"] is not None and r["report_age"] < 3 for r in rows)


def test_a_rack_key_rotates_under_load_with_nothing_refused_or_fenced(rack: Rack) -> None:
    config = load(Path(rack.config))
    assert isinstance(config.key, keys.Keyring)
    old = config.key.current
    logs_before = {hn: len(rack.hn_log(hn)) for hn in rack.hns}
    manager_before = len(rack.manager_log())
    pids = {ct: rack.init_pid(s["hn"], s["ctid"]) for ct, s in rack.status().items() if s["hn"]}
    stop = threading.Event()

    def load_edits() -> None:  # configuration edits all along: the manager plans, the HNs report
        i = 0
        while not stop.is_set():
            rack.cli("ct", "set", "acme", "--cpuunits", str(1000 + i % 2), check=False)
            i += 1
            time.sleep(0.2)

    with watched(rack, heal=False) as _watch:
        worker = threading.Thread(target=load_edits, daemon=True)
        worker.start()
        try:
            assert len({m["current"] for m in ids(rack)}) == 1
            staged = json.loads(rack.cli("rack", "key", "stage", "--json").stdout)
            new = staged[0]["next"]
            assert all(m["next"] == new for m in staged) and new != keys.key_id(old)
            time.sleep(2.5)  # reports go on under the staged key's presence
            switched = json.loads(rack.cli("rack", "key", "switch", "--json").stdout)
            assert all(m["current"] == new and m["prev"] == keys.key_id(old) for m in switched)
            time.sleep(2.5)  # each daemon signs with the new key within a second
            wait_for("every HN's reports taken in under the new key", lambda: reports_fresh(rack), timeout=15)
            retired = json.loads(rack.cli("rack", "key", "retire", "--json").stdout)
            assert all(m == {"machine": m["machine"], "current": new, "error": None} for m in retired)
            time.sleep(2.5)
            wait_for("every HN's reports taken in after the retire", lambda: reports_fresh(rack), timeout=15)
        finally:
            stop.set()
            worker.join(30)
    for hn, start in logs_before.items():
        text = rack.hn_log(hn)[start:]
        assert "fenced" not in text and "forged" not in text, f"{hn}: {text[-2000:]}"
    assert "forged" not in rack.manager_log()[manager_before:]
    for ct, pid in pids.items():  # nothing restarted: every CT's init is the one it had
        s = rack.status()[ct]
        assert rack.init_pid(s["hn"], s["ctid"]) == pid, ct

    # the old key is refused by the running manager now
    hn = sorted(rack.hns)[0]
    forged = sign(Report(config.slot, hn, "f" * 32, 1, time.time(), False, Metrics(0.0, 0, 0, 0, 0, 0), ()), old)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(forged, config.listen)
    wait_for("the manager refusing a report signed with the old key",
             lambda: "forged" in rack.manager_log()[manager_before:], timeout=10)
