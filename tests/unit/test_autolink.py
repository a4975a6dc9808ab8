"""ctautolink's plan: which links the services want, and that nothing else is touched."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctmanager.monitoring import autolink, ctautolink
from ctmanager.monitoring.ctautolink import Linker, Reporter

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "monitoring" / "collectd" / "plugins" / "repo"


def make(tmp: Path, services: list[str]) -> tuple[Path, Path, Path]:
    repo, svc, conf = tmp / "repo", tmp / "service", tmp / "conf"
    for d in (repo, svc, conf):
        d.mkdir()
    (repo / "a.conf").write_text("#service_tag: httpd\nLoadPlugin cpu\n")
    (repo / "b.conf").write_text("#service_tag: httpd\n#service_tag: jira\nLoadPlugin load\n")
    (repo / "c.conf").write_text("#service_tag: postgresql\n")
    (repo / "untagged.conf").write_text("LoadPlugin memory\n")
    for s in services:
        (svc / s).mkdir()
    return repo, svc, conf


def resync(repo: Path, svc: Path, conf: Path) -> autolink.LinkPlan:
    r = autolink.read_repo(repo)
    services, _ = autolink.read_services(svc)
    links = autolink.read_links(conf, r)
    p = autolink.plan(r, services, links, autolink.conf_files(conf, links))
    autolink.apply(conf, p)
    return p


def test_tagged_plugins_of_present_services_are_linked_and_the_rest_unlinked(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd", ".jira"])  # .jira is still being created
    p = resync(repo, svc, conf)
    assert sorted(p.link) == ["a.conf", "b.conf"] and p.unlink == ()
    assert os.readlink(conf / "a.conf") == str((repo / "a.conf").resolve())
    (svc / "httpd").rmdir()
    (svc / ".jira").rename(svc / "jira")
    p = resync(repo, svc, conf)
    assert p.link == {} and p.unlink == ("a.conf",)  # b.conf stays: jira wants it too
    assert sorted(os.listdir(conf)) == ["b.conf"]
    assert resync(repo, svc, conf).empty  # idempotent


def test_untagged_plugins_and_odd_service_names_are_ignored(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd", "we ird;rm", "x" * 200])
    r = autolink.read_repo(repo)
    assert r.untagged == ["untagged.conf"] and "untagged.conf" not in r.plugins
    services, odd = autolink.read_services(svc)
    assert services == {"httpd"} and sorted(odd) == sorted(["we ird;rm", "x" * 200])


def test_the_ct_s_own_files_and_foreign_links_are_never_touched(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    (conf / "postgres_db_confluence.conf").write_text("# the CT's own\n")
    (conf / "a.conf").write_text("# a regular file where a link would go\n")
    os.symlink("/etc/hostname", conf / "foreign.conf")
    p = resync(repo, svc, conf)
    assert sorted(p.link) == ["b.conf"]
    assert (conf / "a.conf").read_text() == "# a regular file where a link would go\n"
    assert (conf / "postgres_db_confluence.conf").read_text() == "# the CT's own\n"
    assert os.readlink(conf / "foreign.conf") == "/etc/hostname"


def test_a_dangling_or_wrong_link_of_ours_is_repaired(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    root = str(repo.resolve())
    os.symlink(f"{root}/gone.conf", conf / "gone.conf")  # ours, dangling, unwanted
    os.symlink(f"{root}/c.conf", conf / "a.conf")  # ours, pointing at the wrong plugin
    p = resync(repo, svc, conf)
    assert p.link == {"a.conf": f"{root}/a.conf", "b.conf": f"{root}/b.conf"} and p.unlink == ("gone.conf",)
    assert os.readlink(conf / "a.conf") == f"{root}/a.conf"


def test_broken_plugins_are_not_linked(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    r = autolink.read_repo(repo)
    p = autolink.plan(r, {"httpd"}, {}, set(), broken={"a.conf"})
    assert sorted(p.link) == ["b.conf"]


def test_a_thousand_services_at_once(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, [])
    for i in range(1000):
        (repo / f"p{i}.conf").write_text(f"#service_tag: s{i}\n")
        (svc / f"s{i}").mkdir()
    p = resync(repo, svc, conf)
    assert len(p.link) == 1000 and len(os.listdir(conf)) == 1000
    assert resync(repo, svc, conf).empty


def test_every_shipped_plugin_is_tagged() -> None:
    r = autolink.read_repo(REPO)
    assert r.untagged == [] and len(r.plugins) >= 10
    assert {"httpd", "postgresql", "jira", "confluence"} <= set(r.by_tag())


# --- hostile input: only regular files right in the repo, odd names, odd things in the conf dir ---

def linker(repo: Path, svc: Path, conf: Path, report: Reporter | None = None) -> Linker:
    return Linker(svc, repo, conf, None, check=False, report=report)


def until(what: str, check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def clean(line: str) -> bool:
    """One printable ASCII line: nothing a hostile name could forge a line or a terminal escape with."""
    return all(" " <= c <= "~" for c in line)


def test_only_regular_files_right_in_the_repo_are_plugins(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    outside = tmp_path / "outside.conf"
    outside.write_text("#service_tag: httpd\nLoadPlugin uptime\n")
    os.symlink(outside, repo / "sym_out.conf")
    os.symlink(repo / "a.conf", repo / "sym_in.conf")  # a symlink even to a plugin of the repo is refused
    os.symlink("sym_in.conf", repo / "sym_rel.conf")
    os.symlink(tmp_path / "gone.conf", repo / "sym_dangling.conf")
    os.mkfifo(repo / "fifo.conf")  # opening it would block: it is never opened
    (repo / "dir.conf").mkdir()
    (repo / "big.conf").write_text("#service_tag: httpd\n" + "#" * autolink.MAX_PLUGIN)
    (repo / "README").write_text("#service_tag: httpd\n")  # not a .conf: not a plugin at all
    expect = {"sym_out.conf", "sym_in.conf", "sym_rel.conf", "sym_dangling.conf", "fifo.conf", "dir.conf", "big.conf"}
    try:
        os.mknod(repo / "dev.conf", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        expect.add("dev.conf")
    except PermissionError:
        pass  # not root
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:  # AF_UNIX paths are short
        s.bind(str(repo / "sock.conf"))
        expect.add("sock.conf")
    got: list[autolink.Repo] = []
    reader = threading.Thread(target=lambda: got.append(autolink.read_repo(repo)), daemon=True)
    reader.start()
    reader.join(10)
    assert got, "read_repo blocked (on the FIFO?)"
    r = got[0]
    assert sorted(r.plugins) == ["a.conf", "b.conf", "c.conf"] and set(r.refused) == expect
    assert "a symlink" in r.refused["sym_out.conf"] and "a FIFO" in r.refused["fifo.conf"]
    assert "a directory" in r.refused["dir.conf"] and "larger than 1 MiB" in r.refused["big.conf"]
    resync(repo, svc, conf)
    assert sorted(os.listdir(conf)) == ["a.conf", "b.conf"]
    assert all(os.readlink(conf / n) == os.path.join(os.path.realpath(repo), n) for n in os.listdir(conf))


def test_an_unreadable_plugin_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    (repo / "a.conf").chmod(0)
    if os.geteuid() == 0:  # root reads anything: fail the open as it fails for anyone else
        real_open = os.open

        def deny(path: str, flags: int, mode: int = 0o777) -> int:
            if str(path).endswith("/a.conf"):
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, flags, mode)

        monkeypatch.setattr(autolink.os, "open", deny)
    r = autolink.read_repo(repo)
    assert "a.conf" not in r.plugins and r.refused["a.conf"] == "cannot be read (Permission denied)"
    resync(repo, svc, conf)
    assert sorted(os.listdir(conf)) == ["b.conf"]


ODD = ["new\nline.conf", "ctl\x1b[31m.conf", "tab\t.conf", "del\x7f.conf", ".hidden.conf", "-dash.conf",
       "sp ace.conf", "dot.ted.conf", "\u00e9t\u00e9.conf", "rtl\u202e.conf", "x" * 64 + ".conf",
       os.fsdecode(b"bad\xff.conf"), ".conf"]


def test_odd_plugin_names_are_refused_and_reported_in_one_escaped_line(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    for name in ODD:
        (repo / name).write_text("#service_tag: httpd\n")
    (repo / ("x" * 63 + ".conf")).write_text("#service_tag: httpd\n")  # 63: the longest stem taken
    for name in ("a/b.conf", "a.conf\n", "a.conf/", "a", ""):
        assert not autolink.PLUGIN.fullmatch(name)
    caplog.set_level(logging.INFO, "ctautolink")
    out = linker(repo, svc, conf).resync()
    assert out.failed == []
    assert sorted(os.listdir(conf)) == sorted(["a.conf", "b.conf", "x" * 63 + ".conf"])
    lines = warnings(caplog)
    assert len(lines) == len(ODD) + 1  # and untagged.conf
    assert all(clean(line) for line in [r.getMessage() for r in caplog.records])
    assert "plugin new\\nline.conf: not a plugin name" in "\n".join(lines)
    assert "plugin bad\\udcff.conf: not a plugin name" in "\n".join(lines)


def test_a_link_of_ours_to_a_plugin_now_refused_is_removed(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    outside = tmp_path / "outside.conf"
    outside.write_text("#service_tag: httpd\nLoadPlugin cpu\n")
    os.symlink(outside, repo / "evil.conf")
    os.symlink(outside, conf / "evil.conf")  # what earlier ctautolinks linked for it: theirs, so ours
    os.symlink(outside, conf / "foreign.conf")  # the CT's own link: no plugin by that name links there
    resync(repo, svc, conf)
    assert sorted(os.listdir(conf)) == ["a.conf", "b.conf", "foreign.conf"]
    (repo / "a.conf").unlink()
    os.symlink(outside, repo / "a.conf")  # a plugin turned into a symlink: its link goes, service or not
    p = resync(repo, svc, conf)
    assert p.unlink == ("a.conf",) and sorted(os.listdir(conf)) == ["b.conf", "foreign.conf"]
    (repo / "b.conf").unlink()
    os.mkfifo(repo / "b.conf")
    assert resync(repo, svc, conf).unlink == ("b.conf",)
    (svc / "httpd").rmdir()
    resync(repo, svc, conf)
    assert os.listdir(conf) == ["foreign.conf"] and os.readlink(conf / "foreign.conf") == str(outside)


def test_something_else_at_the_temp_name_does_not_stop_the_repair(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    repo, svc, conf = make(tmp_path, ["httpd", "postgresql"])
    root = os.path.realpath(repo)
    (conf / ".a.conf.ctautolink").mkdir()  # what made --once and the daemon exit with a traceback
    (conf / ".a.conf.ctautolink" / "keep").write_text("x")
    os.mkfifo(conf / ".b.conf.ctautolink")
    os.symlink("/etc/hostname", conf / ".c.conf.ctautolink")  # a link, but not ours: not removed either
    for name in ("a.conf", "b.conf", "c.conf"):
        os.symlink(f"{root}/untagged.conf", conf / name)  # ours, wrong: replaced through the temp name
    caplog.set_level(logging.INFO, "ctautolink")
    lk = linker(repo, svc, conf)
    out = lk.resync()
    assert out.failed == [] and sorted(out.plan.link) == ["a.conf", "b.conf", "c.conf"]
    assert all(os.readlink(conf / n) == f"{root}/{n}" for n in ("a.conf", "b.conf", "c.conf"))
    assert (conf / ".a.conf.ctautolink" / "keep").read_text() == "x"
    assert stat.S_ISFIFO(os.lstat(conf / ".b.conf.ctautolink").st_mode)
    assert os.readlink(conf / ".c.conf.ctautolink") == "/etc/hostname"
    assert sorted(os.listdir(conf)) == [".a.conf.ctautolink", ".b.conf.ctautolink", ".c.conf.ctautolink",
                                        "a.conf", "b.conf", "c.conf"]
    told = [w for w in warnings(caplog) if "ctautolink is" in w]
    assert len(told) == 2 and "conf dir: .a.conf.ctautolink is a directory" in told[0]
    os.symlink(f"{root}/untagged.conf", conf / "a.conf.new")
    os.replace(conf / "a.conf.new", conf / "a.conf")
    assert lk.resync().failed == [] and os.readlink(conf / "a.conf") == f"{root}/a.conf"
    assert [w for w in warnings(caplog) if "ctautolink is" in w] == told  # not again at every resync


def test_unexpected_things_in_the_conf_dir_are_reported_and_left_alone(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    (conf / "a.conf").mkdir()
    os.mkfifo(conf / "b.conf")
    os.symlink("/nonexistent/x.conf", conf / "dangling.conf")
    os.symlink(tmp_path / "gone\n.conf", conf / "odd\n.conf")
    caplog.set_level(logging.INFO, "ctautolink")
    out = linker(repo, svc, conf).resync()
    assert out.failed == [] and out.plan.empty
    assert (conf / "a.conf").is_dir() and stat.S_ISFIFO(os.lstat(conf / "b.conf").st_mode)
    assert os.readlink(conf / "dangling.conf") == "/nonexistent/x.conf"
    lines = warnings(caplog)
    assert all(clean(line) for line in lines)
    assert any(line.startswith("conf dir: a.conf is a directory, not a link of ours; left alone") for line in lines)
    assert any(line.startswith("conf dir: b.conf is a FIFO, not a link of ours") for line in lines)
    assert "conf dir: dangling.conf is a dangling link, not ours; left alone" in lines
    assert "conf dir: odd\\n.conf is a dangling link, not ours; left alone" in lines
    # what was put at a name between reading and applying is never replaced or removed, and stops nothing
    root = os.path.realpath(repo)
    failed = autolink.apply(conf, autolink.LinkPlan({"a.conf": f"{root}/a.conf", "c.conf": f"{root}/c.conf"},
                                                    ("b.conf", "gone.conf")))
    assert list(failed) == ["a.conf"] and "left alone" in str(failed["a.conf"])
    assert (conf / "a.conf").is_dir() and stat.S_ISFIFO(os.lstat(conf / "b.conf").st_mode)
    assert os.readlink(conf / "c.conf") == f"{root}/c.conf"


def test_problems_are_logged_once_while_they_stand_and_capped(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    report = Reporter(every=60, most=3, cap=5, clock=lambda: now[0])
    caplog.set_level(logging.INFO, "ctautolink")
    for _ in range(5):  # five inotify bursts, one standing problem
        report(logging.WARNING, ["plugin x.conf: a symlink, not a regular file; not linked"])
    assert len(caplog.records) == 1
    now[0] = 61
    report(logging.WARNING, ["plugin x.conf: a symlink, not a regular file; not linked"])
    assert len(caplog.records) == 2  # a reminder after `every`
    caplog.clear()
    report(logging.WARNING, [f"p{i}" for i in range(10)])
    assert [r.getMessage() for r in caplog.records] == ["p0", "p1", "p2", "7 more problems, not shown now"]
    assert len(report._logged) <= 5
    caplog.clear()
    report(logging.WARNING, [f"p{i}" for i in range(10)])
    assert [r.getMessage() for r in caplog.records][:3] == ["p3", "p4", "p5"]  # the rest come next time


def run_tool(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctmanager.monitoring.ctautolink", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


def said(stderr: str) -> list[str]:
    """The tool's own lines on stderr (not log lines)."""
    return [line for line in stderr.splitlines() if line.startswith("ctautolink: ")]


@pytest.mark.parametrize("case, code, line", [
    ("hostile", 0, None),
    ("conf-is-a-file", 2, "ctautolink: conf dir {t}/conf: not a directory"),
    ("no-repo", 2, "ctautolink: plugin repo {t}/repo: no such directory"),
    ("services-is-a-file", 2, "ctautolink: services dir {t}/service: not a directory"),
    ("no-restart-command", 1, "ctautolink: restart command /nonexistent/svc failed: "),
    ("daemon-services-is-a-file", 2, "ctautolink: services dir {t}/service: not a directory"),
])
def test_the_tool_exits_with_one_line_never_a_traceback(tmp_path: Path, case: str, code: int,
                                                        line: str | None) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    (conf / ".a.conf.ctautolink").mkdir()
    os.symlink(f"{os.path.realpath(repo)}/c.conf", conf / "a.conf")
    os.symlink(tmp_path / "outside.conf", repo / "evil.conf")
    (repo / "odd\n.conf").write_text("#service_tag: httpd\n")
    os.mkfifo(repo / "fifo.conf")
    restart = ""
    if case == "conf-is-a-file":
        shutil.rmtree(conf)
        conf.write_text("")
    elif case == "no-repo":
        shutil.rmtree(repo)
    elif case.endswith("services-is-a-file"):
        shutil.rmtree(svc)
        svc.write_text("")
    elif case == "no-restart-command":
        restart = "/nonexistent/svc -t x"
    once = [] if case.startswith("daemon") else ["--once"]
    r = run_tool(*once, "--no-check", "--restart-cmd", restart, "--repo", repo, "--services", svc, "--conf", conf)
    assert "Traceback" not in r.stderr and all(clean(x) for x in r.stderr.splitlines()), r.stderr
    assert r.returncode == code, r.stderr
    assert said(r.stderr) == ([] if line is None else [ANY_TAIL(line.format(t=tmp_path))]), r.stderr
    if case in ("hostile", "no-restart-command"):  # the job itself was done
        assert sorted(os.listdir(conf)) == [".a.conf.ctautolink", "a.conf", "b.conf"]
        assert os.readlink(conf / "a.conf") == f"{os.path.realpath(repo)}/a.conf"


class ANY_TAIL(str):  # noqa: N801 - reads as a pattern in the assertion
    """Equal to any string that starts with it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__


def test_once_exits_1_when_the_conf_dir_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    real = os.scandir

    def scandir(path: Path) -> Iterator[os.DirEntry[str]]:
        if Path(path) == conf:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(autolink.os, "scandir", scandir)
    code = ctautolink.main(["--once", "--no-check", "--restart-cmd", "", "--repo", str(repo), "--services", str(svc),
                            "--conf", str(conf)])
    err = capsys.readouterr().err
    assert code == 1 and said(err) == [f"ctautolink: conf dir {conf}: Permission denied"]
    assert os.listdir(conf) == []  # what is ours is not known: nothing was done


def test_the_daemon_lives_through_hostile_input(tmp_path: Path) -> None:
    repo, svc, conf = make(tmp_path, ["httpd"])
    root = os.path.realpath(repo)
    outside = tmp_path / "outside.conf"
    outside.write_text("#service_tag: postgresql\n")
    (conf / ".a.conf.ctautolink").mkdir()
    os.symlink(f"{root}/c.conf", conf / "a.conf")  # ours, wrong: repaired through the temp name
    log = tmp_path / "log"
    with log.open("w") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "ctmanager.monitoring.ctautolink", "--no-check",
                                   "--restart-cmd", "", "--debounce", "0.01", "--repo", str(repo), "--services",
                                   str(svc), "--conf", str(conf)], cwd=ROOT, stdout=out, stderr=out,
                                  stdin=subprocess.DEVNULL)
    try:
        until("the start", lambda: "watching" in log.read_text())
        assert os.readlink(conf / "a.conf") == f"{root}/a.conf"
        (svc / "postgresql").mkdir()
        until("c.conf linked", lambda: (conf / "c.conf").is_symlink())
        os.symlink(outside, repo / "evil.conf")
        (repo / "odd\nname.conf").write_text("#service_tag: postgresql\n")
        os.mkfifo(repo / "fifo.conf")
        for i in range(5):  # bursts of events: the standing problems are told once
            (svc / f".new{i}").mkdir()
            until(f"burst {i} seen", lambda: log.read_text().count("odd\\nname.conf") == 1)
        (repo / "c.conf").unlink()
        os.symlink(outside, repo / "c.conf")  # a linked plugin becomes a symlink: unlinked, service or not
        until("c.conf unlinked", lambda: not os.path.lexists(conf / "c.conf"))
        for s in ("httpd", "postgresql"):
            (svc / s).rmdir()
        until("all of ours unlinked", lambda: sorted(os.listdir(conf)) == [".a.conf.ctautolink"])
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        daemon.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and all(clean(line) for line in text.splitlines()), text
    for told in ("plugin evil.conf: a symlink", "plugin fifo.conf: a FIFO", "plugin odd\\nname.conf: not a plugin",
                 "conf dir: .a.conf.ctautolink is a directory"):
        assert text.count(told) == 1, (told, text)
    assert "linked evil.conf" not in text and "ERROR" not in text
