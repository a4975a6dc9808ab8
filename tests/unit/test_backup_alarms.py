"""The rack leader's view of its storage nodes' backups (manager/backups.assess):
one ALARM line when a CT's newest restore point passes 2 x RPO and one when it is
back, a node that cannot be read or whose daemon is down, ages for carbon, and
only the rack's own CTs."""

from __future__ import annotations

from ctmanager.manager.backups import Memory, Reading, assess
from ctmanager.store.backups import Known


def status(*cts: tuple[int, float | None], daemon: bool = True, error: str = "") -> dict:
    return {"rpo": 60, "repository_bytes": 4096, "daemon": daemon, "error": error,
            "cts": [{"ctid": c, "newest": None if at is None else f"storage-101-4-{at}", "at": at} for c, at in cts]}


NAMES = {1005: "acme", 1006: "initech"}


def test_an_alarm_is_said_once_when_a_point_passes_twice_the_rpo_and_once_when_it_is_back() -> None:
    memory = Memory()
    first = assess([Reading("storage-101-4", status((1005, 1000.0), (1006, 1000.0)))], NAMES, memory, 1100.0)
    assert first.lines == [] and first.metrics["backup.acme.age"] == 100.0
    assert first.points["storage-101-4"] == (60.0, [(1005, "storage-101-4-1000.0", 1000.0),
                                                     (1006, "storage-101-4-1000.0", 1000.0)])
    late = assess([Reading("storage-101-4", status((1005, 1000.0), (1006, 1130.0)))], NAMES, memory, 1121.0)
    assert late.lines == ["ALARM backup of CT 1005 acme on storage-101-4: newest restore point 121 s old (RPO 60 s)"]
    again = assess([Reading("storage-101-4", status((1005, 1000.0), (1006, 1130.0)))], NAMES, memory, 1150.0)
    assert again.lines == []
    back = assess([Reading("storage-101-4", status((1005, 1149.0), (1006, 1130.0)))], NAMES, memory, 1150.0)
    assert back.lines == ["backup of CT 1005 acme on storage-101-4: within its RPO again (newest restore point 1 s old)"]


def test_a_ct_never_backed_up_is_an_alarm_only_after_twice_the_rpo() -> None:
    memory = Memory()
    assert assess([Reading("s", status((1005, None)))], NAMES, memory, 0.0).lines == []
    assert assess([Reading("s", status((1005, None)))], NAMES, memory, 119.0).lines == []
    assert assess([Reading("s", status((1005, None)))], NAMES, memory, 121.0).lines == [
        "ALARM backup of CT 1005 acme on s: no restore point yet after 121 s (RPO 60 s)"]


def test_a_node_that_cannot_be_read_or_has_no_daemon_or_a_failing_repository_is_said_once_each() -> None:
    memory = Memory()
    down = assess([Reading("s", None, "s: connection refused")], NAMES, memory, 0.0)
    assert down.lines == ["ALARM backups on s: cannot read its backups: s: connection refused"] and not down.points
    assert assess([Reading("s", None, "s: connection refused")], NAMES, memory, 1.0).lines == []
    no_daemon = assess([Reading("s", status(daemon=False))], NAMES, memory, 2.0)
    assert no_daemon.lines == ["ALARM backups on s: its backup daemon (ctbackup run) is not running"]
    failing = assess([Reading("s", status(error="Remote: ssh: connect to host 10.0.4.10 port 22: Connection "
                                                "refused"))], NAMES, memory, 3.0)
    assert failing.lines[0].startswith("ALARM backups on s: its repository fails: Remote: ssh: connect")
    assert assess([Reading("s", status())], NAMES, memory, 4.0).lines == ["backups on s: fine again"]


def test_only_the_racks_own_cts_are_recorded_and_measured() -> None:
    got = assess([Reading("s", status((1005, 10.0), (2001, 10.0)))], {1005: "acme"}, Memory(), 20.0)
    assert got.points["s"][1] == [(1005, "storage-101-4-10.0", 10.0)]
    assert set(got.metrics) == {"backup.acme.age", "backup.s.repository_bytes"}


def test_the_stored_point_is_judged_against_the_rpo_at_read_time() -> None:
    k = Known(1005, "s", 60.0, "s-1", 1000.0, 1000.0)
    assert [k.state(t) for t in (1030.0, 1090.0, 1121.0)] == [("OK", 30.0), ("LATE", 90.0), ("ALARM", 121.0)]
    assert Known(1005, "s", 60.0, None, None, 1000.0).state(2000.0) == ("NEVER", None)
