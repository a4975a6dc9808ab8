"""ctmanager's own metrics: cgroup figures, and a sender that never blocks."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from ctmanager.monitoring.metrics import MetricsSender, cgroup_stats


def test_cgroup_figures_of_running_cts(tmp_path: Path) -> None:
    (tmp_path / "cpuacct" / "lxc.payload.1005").mkdir(parents=True)
    (tmp_path / "cpuacct" / "lxc.payload.1005" / "cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "memory" / "lxc.payload.1005").mkdir(parents=True)
    (tmp_path / "memory" / "lxc.payload.1005" / "memory.usage_in_bytes").write_text("1048576\n")
    (tmp_path / "memory" / "lxc.payload.1006").mkdir(parents=True)
    (tmp_path / "memory" / "lxc.payload.1006" / "memory.usage_in_bytes").write_text("garbage\n")
    assert cgroup_stats(tmp_path, [1005, 1006, 1007]) == {1005: {"cpu_seconds": 2.5, "memory_bytes": 1048576.0}}


def test_metrics_reach_graphite_in_the_background() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: list[bytes] = []

    def accept() -> None:
        conn, _ = srv.accept()
        while chunk := conn.recv(4096):
            got.append(chunk)

    threading.Thread(target=accept, daemon=True).start()
    m = MetricsSender(f"127.0.0.1:{srv.getsockname()[1]}", "ctmanager.rack-101.manager")
    m.send_many({"plan_ms": 1.5, "actions": 3}, 1795000000)
    deadline = time.monotonic() + 10
    while b"actions" not in b"".join(got):
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.05)
    lines = b"".join(got).decode()
    assert "ctmanager.rack-101.manager.plan_ms 1.5 1795000000" in lines
    assert "ctmanager.rack-101.manager.actions 3 1795000000" in lines


def test_a_dead_carbon_does_not_block_sending() -> None:
    m = MetricsSender("127.0.0.1:9", "x")  # nothing listens on the discard port
    for i in range(20_000):  # more than the queue holds: the rest are dropped, not waited for
        m.send("n", i)
    assert m.sender is not None and m.sender._queue.qsize() <= 10_000


def test_no_graphite_configured_sends_nothing() -> None:
    m = MetricsSender("", "x")
    m.send("n", 1)
    assert m.sender is None
    with pytest.raises(ValueError, match="prefix"):
        MetricsSender("", "bad prefix;")


def _dc():  # type: ignore[no-untyped-def]
    from ctmanager.dc.template import load

    return load(Path(__file__).resolve().parents[2] / "templates" / "dc" / "example.toml")


def test_carbon_config_names_the_paths_the_daemons_see(tmp_path: Path) -> None:
    from ctmanager.monitoring import carbon

    files = carbon.render(_dc(), 101, tmp_path / "carbon", "10.100.0.20:2003", at=Path("/data/carbon"))
    conf = files["carbon.conf"].read_text()
    assert "LOCAL_DATA_DIR = /data/carbon/storage/whisper/" in conf and str(tmp_path) not in conf
    assert (tmp_path / "carbon" / "storage" / "whisper").is_dir()  # made where it is written
    assert conf.count("ENABLE_TAGS = False") == 3  # no tag POSTs to a graphite-web that is not there


@pytest.mark.parametrize("bad", ["/tmp/x\nENABLE_TAGS = True", "relative/dir", "/tmp/a b"])
def test_a_carbon_directory_that_would_inject_into_carbon_conf_is_refused(tmp_path: Path, bad: str) -> None:
    from ctmanager.errors import InputError
    from ctmanager.monitoring import carbon

    with pytest.raises(InputError, match="must be an absolute path of"):
        carbon.render(_dc(), 101, tmp_path / "carbon", "10.100.0.20:2003", at=Path(bad))
    assert not (tmp_path / "carbon").exists()  # nothing written
