"""Per-CT cgroup figures on both layouts LXC uses: v1 (a hierarchy per controller)
and unified v2 (Debian 12's default), the same names and units from each.

data/cgroup/v1 and v2 are the two trees as an HN lays them out, in the kernel's file
formats; CT 1006 runs in `lxc.payload.1006-1` beside a stale `lxc.payload.1006` (the
stale v1 figures are copied from a lab host, which had 118 such leftovers of CT 1000).
The last two tests read this machine's own cgroups, so the parsers meet the real kernel."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ctmanager.agent.drivers import lxc
from ctmanager.monitoring.metrics import (
    METRICS,
    Gaps,
    candidates,
    cgroup_stats,
    cgroup_version,
    choose,
    figures,
    parse_int,
    parse_keyed,
)

DATA = Path(__file__).parent / "data" / "cgroup"
V1, V2 = DATA / "v1", DATA / "v2"
NAMES = {"cpu_seconds", "cpu_user_seconds", "cpu_system_seconds", "memory_bytes"}

CPU_STAT = """usage_usec 8253419
user_usec 6127003
system_usec 2126416
core_sched.force_idle_usec 0
nr_periods 412
nr_throttled 3
throttled_usec 10480
nr_bursts 0
burst_usec 0
"""


# ---- parsers -----------------------------------------------------------------
def test_parsers_read_the_kernels_formats() -> None:
    assert parse_int("8253419766\n") == 8253419766
    assert parse_keyed(CPU_STAT)["usage_usec"] == 8253419
    assert parse_keyed("user 612\nsystem 198\n") == {"user": 612, "system": 198}
    assert parse_keyed("populated 1\nfrozen 0\n")["populated"] == 1
    with pytest.raises(ValueError):
        parse_int("max\n")


def test_both_layouts_give_the_same_names_and_units() -> None:
    v1, gone1 = figures(1, {"cpuacct.usage": "8253419766\n", "cpuacct.stat": "user 612\nsystem 198\n",
                            "memory.usage_in_bytes": "52678656\n"}, {})
    v2, gone2 = figures(2, {"cpu.stat": CPU_STAT, "memory.current": "52678656\n"}, {})
    assert gone1 == gone2 == {}
    assert set(v1) == set(v2) == NAMES == set(METRICS[1]) == set(METRICS[2])
    assert v1["cpu_seconds"] == pytest.approx(8.253419766) and v2["cpu_seconds"] == pytest.approx(8.253419)
    assert (v1["cpu_user_seconds"], v1["cpu_system_seconds"]) == pytest.approx((6.12, 1.98))  # USER_HZ ticks
    assert (v2["cpu_user_seconds"], v2["cpu_system_seconds"]) == pytest.approx((6.127003, 2.126416))
    assert v1["memory_bytes"] == v2["memory_bytes"] == 52678656


def test_a_figure_that_cannot_be_read_says_why() -> None:
    values, missing = figures(2, {"cpu.stat": "user_usec 1\nsystem_usec x\n"},
                              {"memory.current": "/x/memory.current: No such file or directory"})
    assert values == {"cpu_user_seconds": 1e-6}
    assert missing == {"cpu_seconds": "cpu.stat has no 'usage_usec' line",
                       "cpu_system_seconds": "cpu.stat has no 'system_usec' line",
                       "memory_bytes": "/x/memory.current: No such file or directory"}
    assert figures(1, {"memory.usage_in_bytes": ""}, {})[1]["memory_bytes"] == "memory.usage_in_bytes is not a number: ''"


def test_a_ct_in_a_suffixed_cgroup_is_found_there() -> None:
    names = ["lxc.payload.1006", "lxc.payload.1006-2", "lxc.payload.10060", "lxc.payload.1006-10",
             "lxc.monitor.1006", "lxc.payload.1006-x"]
    assert candidates(names, 1006) == ["lxc.payload.1006-10", "lxc.payload.1006-2", "lxc.payload.1006"]
    assert choose(["lxc.payload.7"], lambda n: False) == "lxc.payload.7"  # alone: no need to ask
    assert choose(candidates(names, 1006), lambda n: n.endswith("-2")) == "lxc.payload.1006-2"
    assert choose(candidates(names, 1006), lambda n: False) is None
    assert choose([], lambda n: True) is None


# ---- captured trees ------------------------------------------------------------
def test_the_layout_is_told_as_the_limits_code_tells_it() -> None:
    assert lxc.cgroup_version is cgroup_version  # one rule: the limits and the metrics
    assert [cgroup_version(V1), cgroup_version(V2)] == [1, 2]


@pytest.mark.parametrize("root", [V1, V2], ids=["v1", "v2"])
def test_figures_of_running_cts_on_either_layout(root: Path) -> None:
    got = cgroup_stats(root, [1005, 1006], Gaps())
    assert set(got) == {1005, 1006} and set(got[1005]) == set(got[1006]) == NAMES
    assert got[1005]["cpu_seconds"] == pytest.approx(8.2534, abs=1e-3)
    assert got[1005]["memory_bytes"] == 52678656
    # from lxc.payload.1006-1, not the stale lxc.payload.1006 beside it
    assert got[1006]["cpu_seconds"] == pytest.approx(1.19, abs=1e-2)
    assert got[1006]["memory_bytes"] == 20971520


def test_a_missing_figure_is_logged_once_and_again_when_back(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    gaps = Gaps()
    with caplog.at_level(logging.INFO, logger="ctmanager.monitoring.metrics"):
        got = cgroup_stats(V2, [1005, 1007, 1099], gaps)
        cgroup_stats(V2, [1005, 1007, 1099], gaps)
    assert set(got) == {1005, 1007} and set(got[1007]) == NAMES - {"memory_bytes"}
    assert gaps.missing == {1007: {"memory_bytes"}, 1099: frozenset(NAMES)}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned  # once a CT, not once a pass
    assert warned[0].startswith("CT 1007: not sending memory_bytes: cgroup v2 unreadable (memory_bytes: ")
    assert "memory.current: No such file or directory" in warned[0]
    assert f"no lxc.payload.1099 cgroup in use under {V2}" in warned[1]

    # the figure comes back: one line says so; a CT that stops is forgotten
    root = tmp_path / "v2"
    (root / "lxc.payload.1007").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "lxc.payload.1007" / "cpu.stat").write_text(CPU_STAT)
    (root / "lxc.payload.1007" / "memory.current").write_text("4096\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ctmanager.monitoring.metrics"):
        assert cgroup_stats(root, [1007], gaps)[1007]["memory_bytes"] == 4096
    assert [r.getMessage() for r in caplog.records] == ["CT 1007: sending memory_bytes again"]
    assert gaps.missing == {}


def test_the_old_v1_only_reader_left_v2_cts_out() -> None:
    """What the issue saw: a v2 HN has no cpuacct/ nor memory/ hierarchy."""
    assert not (V2 / "cpuacct").exists() and cgroup_stats(V2, [1005], Gaps())[1005]["cpu_seconds"] > 0


# ---- this machine's own cgroups --------------------------------------------------
def own_cgroups() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def mounts(fstype: str) -> list[tuple[str, set[str]]]:
    """(mount point, options) of each `fstype` mount, from /proc/self/mounts."""
    rows = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [(r[1], set(r[3].split(","))) for r in rows if len(r) > 3 and r[2] == fstype]


def cgroup2_mount() -> Path | None:
    found = mounts("cgroup2")
    return Path(found[0][0]) if found else None


def v1_mount(controller: str) -> Path | None:
    return next((Path(p) for p, opts in mounts("cgroup") if controller in opts), None)


def assert_cpu_adds_up(stats: dict[str, float]) -> None:
    assert stats["cpu_seconds"] > 0
    assert stats["cpu_user_seconds"] + stats["cpu_system_seconds"] == \
        pytest.approx(stats["cpu_seconds"], rel=0.05, abs=0.5)


@pytest.mark.skipif(cgroup2_mount() is None, reason="this kernel has no cgroup2 mount")
def test_v2_figures_of_this_machine(tmp_path: Path) -> None:
    """This process's v2 cgroup, seen through an HN-shaped root of symlinks (the
    unified mount is /sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified on a hybrid one)."""
    mount = cgroup2_mount()
    assert mount is not None
    mine = mount / own_cgroups()[""].lstrip("/")
    (tmp_path / "cgroup.controllers").symlink_to(mount / "cgroup.controllers")
    (tmp_path / "lxc.payload.1").symlink_to(mine)
    gaps = Gaps()
    stats = cgroup_stats(tmp_path, [1], gaps)[1]
    assert cgroup_version(tmp_path) == 2
    assert_cpu_adds_up(stats)
    if (mine / "memory.current").is_file():  # memory bound to v2 here, and not the root cgroup
        assert stats["memory_bytes"] > 0 and gaps.missing == {}
    else:
        assert "memory_bytes" not in stats and gaps.missing == {1: {"memory_bytes"}}


@pytest.mark.skipif(v1_mount("cpuacct") is None or v1_mount("memory") is None,
                    reason="no cgroup v1 cpuacct and memory hierarchies here")
def test_v1_figures_of_this_machine(tmp_path: Path) -> None:
    own = own_cgroups()
    for c in ("cpuacct", "memory"):
        mount = v1_mount(c)
        assert mount is not None
        (tmp_path / c).mkdir()
        (tmp_path / c / "lxc.payload.1").symlink_to(mount / own[c].lstrip("/"))
    gaps = Gaps()
    stats = cgroup_stats(tmp_path, [1], gaps)[1]
    assert set(stats) == NAMES and gaps.missing == {}
    assert_cpu_adds_up(stats)
    assert stats["memory_bytes"] > 0
