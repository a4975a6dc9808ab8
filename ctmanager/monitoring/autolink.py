"""ctautolink's logic: which collectd plugins a CT's services want, and the least
work that links exactly those into the conf dir.

  repo      /sw/collectd/plugins/repo/*.conf, each with `#service_tag: NAME` lines
  services  /data/service/* (daemontools service dirs; dot-names are being created)
  conf      /data/sys_collectd/conf: our links point into the repo; regular files
            (the CT's own configs) and links elsewhere are never touched

Facts (read the directories) and the plan (pure) are separate from applying it,
like pyinfra's facts and operations. A link is made atomically (symlink to a
temporary name, then rename over), so collectd never reads a half-made conf dir.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

TAG = re.compile(r"^#\s*service_tag:\s*(\S+)\s*$", re.M)
SERVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")  # daemontools dir names we act on


@dataclass(frozen=True)
class Plugin:
    name: str  # file name in the repo, e.g. process_httpd.conf
    path: str  # absolute
    tags: frozenset[str]


@dataclass
class Repo:
    plugins: dict[str, Plugin] = field(default_factory=dict)
    untagged: list[str] = field(default_factory=list)  # reported, never linked

    def by_tag(self) -> dict[str, list[Plugin]]:
        out: dict[str, list[Plugin]] = {}
        for p in self.plugins.values():
            for t in p.tags:
                out.setdefault(t, []).append(p)
        return out


def read_repo(repo: Path) -> Repo:
    out = Repo()
    for f in sorted(repo.glob("*.conf")):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        tags = frozenset(TAG.findall(text))
        if tags:
            out.plugins[f.name] = Plugin(f.name, str(f.resolve()), tags)
        else:
            out.untagged.append(f.name)
    return out


def read_services(services: Path) -> tuple[set[str], list[str]]:
    """Present services, and names that were ignored (odd characters, being created)."""
    present: set[str] = set()
    odd: list[str] = []
    try:
        entries = list(os.scandir(services))
    except FileNotFoundError:
        return present, odd
    for e in entries:
        if e.name.startswith("."):
            continue  # `.name` is a service being set up; it is renamed when ready
        if not SERVICE.fullmatch(e.name):
            odd.append(e.name)
        elif e.is_dir():
            present.add(e.name)
    return present, odd


def read_links(conf: Path, repo: Path) -> dict[str, str]:
    """Our links in the conf dir: symlinks into the repo (dangling ones too), by name."""
    ours: dict[str, str] = {}
    root = str(repo.resolve()) + os.sep
    try:
        entries = list(os.scandir(conf))
    except FileNotFoundError:
        return ours
    for e in entries:
        if e.is_symlink():
            target = os.readlink(e.path)
            if os.path.isabs(target) and target.startswith(root):
                ours[e.name] = target
    return ours


@dataclass(frozen=True)
class LinkPlan:
    link: dict[str, str]  # name -> target to (re)link
    unlink: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.link and not self.unlink


def plan(repo: Repo, services: set[str], links: dict[str, str], conf_files: set[str],
         broken: set[str] = frozenset()) -> LinkPlan:  # type: ignore[assignment]
    """The difference between the links the services want and the links there are.
    `conf_files`: names in the conf dir that are not ours (never replaced);
    `broken`: plugins that failed validation (not linked, unlinked if linked)."""
    want = {p.name: p.path for p in repo.plugins.values() if p.tags & services and p.name not in broken}
    link = {n: t for n, t in want.items() if links.get(n) != t and n not in conf_files}
    unlink = tuple(sorted(n for n in links if n not in want))
    return LinkPlan(link, unlink)


def apply(conf: Path, p: LinkPlan) -> None:
    conf.mkdir(parents=True, exist_ok=True)
    for name, target in sorted(p.link.items()):
        try:
            os.symlink(target, conf / name)  # a new name: creating a symlink is atomic already
            continue
        except FileExistsError:
            pass
        tmp = conf / f".{name}.ctautolink"  # replacing one of ours: new link aside, rename over
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, conf / name)
    for name in p.unlink:
        try:
            os.unlink(conf / name)
        except FileNotFoundError:
            pass


def conf_files(conf: Path, links: dict[str, str]) -> set[str]:
    """Names in the conf dir that are not our links (the CT's own configs)."""
    try:
        return {e.name for e in os.scandir(conf) if e.name not in links}
    except FileNotFoundError:
        return set()
