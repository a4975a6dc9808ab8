"""Where the data files ctmanager reads at run time are found.

Each kind in KINDS is one folder, laid out the same in the source checkout and
under `share/ctmanager/` of an install. A kind's folders, in order (first hit wins):

1. its environment variable, if it has one (os.pathsep-separated folders): site overrides;
2. the source checkout (running from a clone or an editable install);
3. `<prefix>/share/ctmanager/<folder>` of the running Python (a plain `pip install .`),
   the user base, /usr/local and /usr.

Templates are layered (first hit wins per file: `template_dirs()`); other kinds
are used as a whole folder (`data_dir()`: the first one found).
"""

from __future__ import annotations

import os
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .errors import CtmError, InputError


@dataclass(frozen=True)
class Kind:
    folder: str             # relative to the checkout root and to <prefix>/share/ctmanager
    what: str               # for messages
    env: str | None = None  # override variable


# Every data folder read at run time. setup.cfg's [options.data_files] installs each
# (tests/integration/test_install.py checks them all from this table).
ENV_VAR = "CTMANAGER_TEMPLATES"
KINDS: dict[str, Kind] = {
    "templates": Kind("templates", "templates (DC, manifests, CT and storage configs)", ENV_VAR),
    # a CT's /sw/collectd: collectd's base config and the tagged plugin repo (lab software trees)
    "collectd": Kind("monitoring/collectd", "collectd config and plugin repo"),
    # the deploy folders ops copy onto machines; `lab machine` installs from them too
    "agents": Kind("agents", "HN deploy files (agents/: ctagent unit, sshd snippet, authorized_keys)"),
    "manager": Kind("manager", "manager deploy files (manager/: ctmanager unit)"),
    "proxies": Kind("proxies", "edge, mail and SOCKS deploy files (proxies/)"),
}
SHARE = Path("share") / "ctmanager"
_CHECKOUT = Path(__file__).resolve().parent.parent


class DataNotFound(CtmError):
    """A data folder or file ctmanager ships is not where it looks (a broken install)."""


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}")  # a programming error, not the user's
    return KINDS[kind]


def _checkout() -> list[Path]:
    # Only a real checkout: after a plain install this is site-packages, where a
    # `templates/` or `monitoring/` of some other distribution must not shadow ours.
    return [_CHECKOUT] if (_CHECKOUT / "setup.cfg").is_file() else []


def search_path(kind: str) -> list[Path]:
    """Every folder looked at for `kind`, in order, whether it exists or not."""
    k = _kind(kind)
    out = [Path(p) for p in os.environ.get(k.env, "").split(os.pathsep) if p] if k.env else []
    roots = _checkout() + [Path(sysconfig.get_path("data")) / SHARE, Path(site.getuserbase()) / SHARE,
                           Path("/usr/local") / SHARE, Path("/usr") / SHARE]
    out += [r / k.folder for r in roots]
    return list(dict.fromkeys(out))


def data_dirs(kind: str) -> list[Path]:
    """The folders of `kind` that exist, in search order."""
    return [d for d in search_path(kind) if d.is_dir()]


def _searched(kind: str) -> str:
    return ", ".join(str(d) for d in search_path(kind))


def data_dir(kind: str) -> Path:
    """The first folder of `kind` that exists; DataNotFound (one line, what was searched) if none."""
    found = data_dirs(kind)
    if not found:
        raise DataNotFound(f"no {_kind(kind).what} found: searched {_searched(kind)}; reinstall ctmanager")
    return found[0]


def find_data(kind: str, relpath: str) -> Path:
    """The first file `relpath` in the folders of `kind`."""
    for d in data_dirs(kind):
        if (d / relpath).is_file():
            return d / relpath
    raise DataNotFound(f"no {relpath} ({_kind(kind).what}) found: searched {_searched(kind)}; reinstall ctmanager")


def template_dirs() -> list[Path]:
    return data_dirs("templates")


def find_dc_template(ref: str) -> Path:
    """A DC template by path, or by name on the search path (`example` -> dc/example.toml)."""
    path = Path(ref)
    if _is_file(path):
        return path
    if "/" not in ref and not ref.endswith(".toml"):
        for d in template_dirs():
            hit = d / "dc" / f"{ref}.toml"
            if _is_file(hit):
                return hit
    ref = ref[:200]
    searched = ", ".join(str(d / "dc") for d in template_dirs()) or "(no template folders found)"
    raise InputError(f"no DC template {ref!r}: not a file, and not a name found in {searched}")


def find_manifest(ref: str) -> Path:
    """A rack's delivery manifest by path, or by name on the search path
    (`rack-102` -> dc/manifests/rack-102.toml): a plain install has no repository."""
    path = Path(ref)
    if _is_file(path):
        return path
    if "/" not in ref and not ref.endswith(".toml"):
        for d in template_dirs():
            hit = d / "dc" / "manifests" / f"{ref}.toml"
            if _is_file(hit):
                return hit
    ref = ref[:200]
    searched = ", ".join(str(d / "dc" / "manifests") for d in template_dirs()) or "(no template folders found)"
    raise InputError(f"no manifest {ref!r}: not a file, and not a name found in {searched}")


def _is_file(path: Path) -> bool:
    """Path.is_file, but a name too long (or otherwise unusable) is just not a file."""
    try:
        return path.is_file()
    except OSError:
        return False
