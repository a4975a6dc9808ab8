"""ctautolink's logic: which collectd plugins a CT's services want, and the least
work that links exactly those into the conf dir.

  repo      /sw/collectd/plugins/repo/*.conf, each with `#service_tag: NAME` lines
  services  /data/service/* (daemontools service dirs; dot-names are being created)
  conf      /data/sys_collectd/conf: our links point into the repo; regular files
            (the CT's own configs) and links elsewhere are never touched

A plugin is a regular file right in the repo (not a symlink, FIFO, device or
directory), readable, at most 1 MiB, named by PLUGIN; anything else is refused
with a reason and never linked, and a link of ours to it is removed like any
unwanted one. Facts (read the directories) and the plan (pure) are separate from
applying it, like pyinfra's facts and operations. A link is made atomically
(symlink to a temporary name, then rename over), so collectd never reads a
half-made conf dir. Reading a directory raises a one-line CtmError: an
InputError (exit 2) if the path names no directory, exit 1 if it cannot be read;
applying collects its failures instead, so one bad name never stops the rest.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CtmError, InputError, NotFoundError

TAG = re.compile(r"^#\s*service_tag:\s*(\S+)\s*$", re.M)
SERVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")  # daemontools dir names we act on
# the plugin file names we link: an ASCII DNS-label-ish stem (letters, digits, '_', '-';
# no leading '.' or '-', no control characters, spaces or '/') and '.conf'
PLUGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}\.conf")
MAX_PLUGIN = 1 << 20  # bytes: a collectd plugin config is a few hundred
TEMP = ".ctautolink"  # `.NAME.ctautolink`: where a replacement link is made before the rename


def esc(name: str) -> str:
    """`name` fit for one log line: control characters, non-ASCII (and undecodable
    bytes) and backslashes escaped; a name PLUGIN accepts is shown as it is."""
    return name.encode("unicode_escape").decode("ascii")


def kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return what
    return "not a regular file"


@dataclass(frozen=True)
class Plugin:
    name: str  # file name in the repo, e.g. process_httpd.conf
    path: str  # absolute: the repo's real path / name
    tags: frozenset[str]


@dataclass
class Repo:
    plugins: dict[str, Plugin] = field(default_factory=dict)
    untagged: list[str] = field(default_factory=list)  # reported, never linked
    refused: dict[str, str] = field(default_factory=dict)  # name -> why: reported, never linked
    # refused symlinks -> where they resolve: what earlier ctautolinks linked for them (still ours)
    legacy: dict[str, str] = field(default_factory=dict)
    root: str = ""

    def by_tag(self) -> dict[str, list[Plugin]]:
        out: dict[str, list[Plugin]] = {}
        for p in self.plugins.values():
            for t in p.tags:
                out.setdefault(t, []).append(p)
        return out


def _scandir(path: Path, what: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {esc(str(path))}: no such directory") from None
    except NotADirectoryError:
        raise InputError(f"{what} {esc(str(path))}: not a directory") from None
    except OSError as exc:
        raise CtmError(f"{what} {esc(str(path))}: {exc.strerror}") from None


def _read_plugin(path: str) -> tuple[str | None, str]:
    """(why it is refused or None, its text). Never follows a symlink, never opens
    anything but a regular file (so a FIFO cannot block us). FileNotFoundError: gone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", ""
    if not stat.S_ISREG(st.st_mode):
        return f"{kind(st.st_mode)}, not a regular file", ""
    if st.st_size > MAX_PLUGIN:
        return f"larger than {MAX_PLUGIN >> 20} MiB", ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", ""
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            return "replaced while it was read", ""
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_PLUGIN:
            chunk = os.read(fd, MAX_PLUGIN + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", ""
    finally:
        os.close(fd)
    if size > MAX_PLUGIN:
        return f"larger than {MAX_PLUGIN >> 20} MiB", ""
    return None, b"".join(chunks).decode("utf-8", errors="replace")


def read_repo(repo: Path) -> Repo:
    """The repo's plugins; entries not ending in `.conf` are not plugins (ignored)."""
    root = os.path.realpath(repo)
    out = Repo(root=root)
    for e in sorted(_scandir(Path(root), "plugin repo"), key=lambda e: e.name):
        name = e.name
        if not name.endswith(".conf"):
            continue
        path = os.path.join(root, name)
        try:
            why, text = _read_plugin(path) if PLUGIN.fullmatch(name) else (
                "not a plugin name (ASCII letters, digits, '_' and '-', then '.conf')", "")
        except FileNotFoundError:
            continue  # gone meanwhile
        if why is not None:
            out.refused[name] = why
            if os.path.islink(path):
                out.legacy[name] = os.path.realpath(path)
            continue
        tags = frozenset(TAG.findall(text))
        if tags:
            out.plugins[name] = Plugin(name, path, tags)
        else:
            out.untagged.append(name)
    return out


def read_services(services: Path) -> tuple[set[str], list[str]]:
    """Present services, and names that were ignored (odd characters, being created).
    A services dir that is not there means no services."""
    present: set[str] = set()
    odd: list[str] = []
    try:
        entries = _scandir(services, "services dir")
    except NotFoundError:
        return present, odd
    for e in entries:
        if e.name.startswith("."):
            continue  # `.name` is a service being set up; it is renamed when ready
        if not SERVICE.fullmatch(e.name):
            odd.append(e.name)
            continue
        try:
            if e.is_dir():  # daemontools services may be symlinks to their dirs
                present.add(e.name)
        except OSError:
            odd.append(e.name)
    return present, odd


def _ours(target: str, root: str) -> bool:
    return os.path.isabs(target) and target.startswith(root + os.sep)


@dataclass
class Conf:
    ours: dict[str, str] = field(default_factory=dict)  # our links (dangling ones too): name -> target
    others: dict[str, str] = field(default_factory=dict)  # everything else: name -> what it is
    odd: dict[str, str] = field(default_factory=dict)  # unexpected things (reported, left alone)


def read_conf(conf: Path, repo: Repo | Path) -> Conf:
    """Our links are symlinks to an absolute path in the repo, and (made by earlier
    ctautolinks) links to where a symlinked plugin of the same name resolves."""
    r = repo if isinstance(repo, Repo) else Repo(root=os.path.realpath(repo))
    out = Conf()
    try:
        entries = _scandir(conf, "conf dir")
    except NotFoundError:
        return out  # apply makes it
    for e in entries:
        name = e.name
        try:
            st = os.lstat(e.path)
            target = os.readlink(e.path) if stat.S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            continue  # gone meanwhile
        except OSError as exc:
            out.others[name] = f"unreadable ({exc.strerror})"
            out.odd[name] = out.others[name]
            continue
        if target is not None and (_ours(target, r.root) or r.legacy.get(name) == target):
            out.ours[name] = target
            continue
        out.others[name] = kind(st.st_mode)
        if target is not None and not os.path.exists(e.path):
            out.odd[name] = "a dangling link, not ours"
        elif name.startswith(".") and TEMP in name and target is None:
            out.odd[name] = f"{kind(st.st_mode)} at a name ctautolink makes links at, not a link"
    return out


def read_links(conf: Path, repo: Repo | Path) -> dict[str, str]:
    """Our links in the conf dir: symlinks into the repo (dangling ones too), by name.
    Pass the Repo read (not its path) to know the links of earlier ctautolinks too."""
    return read_conf(conf, repo).ours


@dataclass(frozen=True)
class LinkPlan:
    link: dict[str, str]  # name -> target to (re)link
    unlink: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.link and not self.unlink


def plan(repo: Repo, services: AbstractSet[str], links: dict[str, str], conf_files: AbstractSet[str],
         broken: AbstractSet[str] = frozenset(), keep: AbstractSet[str] = frozenset()) -> LinkPlan:
    """The difference between the links the services want and the links there are.
    `conf_files`: names in the conf dir that are not ours (never replaced);
    `broken`: plugins that failed validation (not linked, unlinked if linked);
    `keep`: plugins that could not be checked now (left as they are)."""
    want = {p.name: p.path for p in repo.plugins.values()
            if p.tags & services and p.name not in broken and p.name not in keep}
    link = {n: t for n, t in want.items() if links.get(n) != t and n not in conf_files}
    unlink = tuple(sorted(n for n in links if n not in want and n not in keep))
    return LinkPlan(link, unlink)


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _replace(conf: Path, name: str, target: str) -> None:
    """Our link `name` pointed at `target`: a new link aside, renamed over. The aside
    name is `.NAME.ctautolink` (a stale link of ours there is removed); if anything
    else sits there, it is left alone and a fresh name is used."""
    tmp = conf / f".{name}{TEMP}"
    for _ in range(8):
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            if _is_link(tmp) and _ours(os.readlink(tmp), os.path.dirname(target)):
                os.unlink(tmp)
            else:
                tmp = conf / f".{name}{TEMP}-{secrets.token_hex(4)}"
    else:
        raise FileExistsError(f"no free name for the new link of {esc(name)}")
    try:
        os.replace(tmp, conf / name)
    except OSError:
        os.unlink(tmp)
        raise


def apply(conf: Path, p: LinkPlan) -> dict[str, CtmError]:
    """Carry out the plan; what failed, by name ("" for the conf dir itself): the
    rest is still done. A name that is no longer a symlink (something else was put
    there meanwhile) is never replaced or removed."""
    try:
        conf.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return {"": InputError(f"conf dir {esc(str(conf))}: not a directory")}
    except OSError as exc:
        return {"": CtmError(f"conf dir {esc(str(conf))}: {exc.strerror}")}
    failed: dict[str, CtmError] = {}
    for name, target in sorted(p.link.items()):
        try:
            try:
                os.symlink(target, conf / name)  # a new name: creating a symlink is atomic already
                continue
            except FileExistsError:
                pass
            if _is_link(conf / name):
                _replace(conf, name, target)
            else:
                failed[name] = CtmError(f"link {esc(name)}: something else was put there; left alone")
        except OSError as exc:
            failed[name] = CtmError(f"link {esc(name)}: {esc(exc.strerror or str(exc))}")
    for name in p.unlink:
        try:
            if _is_link(conf / name):
                os.unlink(conf / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed[name] = CtmError(f"unlink {esc(name)}: {exc.strerror}")
    return failed


def conf_files(conf: Path, links: dict[str, str]) -> set[str]:
    """Names in the conf dir that are not our links (the CT's own configs)."""
    try:
        return {e.name for e in _scandir(conf, "conf dir") if e.name not in links}
    except NotFoundError:
        return set()
