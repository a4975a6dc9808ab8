"""ctautolink's plan: which links the services want, and that nothing else is touched."""

from __future__ import annotations

import os
from pathlib import Path

from ctmanager.monitoring import autolink

REPO = Path(__file__).resolve().parents[2] / "monitoring" / "collectd" / "plugins" / "repo"


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
    links = autolink.read_links(conf, repo)
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
