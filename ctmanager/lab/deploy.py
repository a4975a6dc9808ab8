"""The deploy folders (agents/, manager/) put onto a lab machine the way their READMEs
tell ops to: tools in /usr/bin (where the Debian package puts them and the units look; from a
source venv, linked there), the units copied verbatim into
/etc/systemd/system (what a lab changes goes into a drop-in beside them, as a site
would), the sshd snippet, the managers' keys forced through ctgate, the store's
password in a pgpass file. So the Vagrant rack runs on exactly these files.
"""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path

from .. import paths
from ..errors import InputError
from ..files import write_atomic
from . import layout
from .shell import sh

BIN = Path("/usr/bin")
UNITS = Path("/etc/systemd/system")
SSHD_SNIPPET = Path("/etc/ssh/sshd_config.d/ctmanager.conf")
DROP_IN = "lab.conf"  # <unit>.d/lab.conf: what this lab machine changes of the unit


def link_tools(*names: str) -> None:
    """/usr/bin/NAME -> this installation's NAME, where the units look. Installed from
    the package, they are there already (links into /opt/ctmanager): left alone."""
    here = Path(layout.ctagent_path()).parent
    for name in names:
        link, target = BIN / name, here / name
        if link.exists() and link.resolve() == target.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def install_unit(kind: str, name: str, drop_in: str = "") -> str:
    """The deploy folder's unit `name`, as shipped, and its lab drop-in; returns the unit."""
    write_atomic(UNITS / name, paths.find_data(kind, name).read_bytes(), 0o644)
    folder = UNITS / f"{name}.d"
    if drop_in:
        folder.mkdir(exist_ok=True)
        write_atomic(folder / DROP_IN, f"# Written by `ctmanager lab machine`.\n{drop_in}".encode(), 0o644)
    elif (folder / DROP_IN).exists():
        (folder / DROP_IN).unlink()
    sh("systemctl", "daemon-reload")
    return name


def unit_escape(value: str) -> str:
    """`value` inside a quoted unit setting: systemd reads % as a specifier, \\ and " as quoting."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def log_to(log: Path) -> str:
    """A drop-in's lines sending a unit's output to `log` (the lab's tests read it there)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return f"[Service]\nStandardOutput=append:{log}\nStandardError=append:{log}\n"


def start(unit: str) -> None:
    sh("systemctl", "enable", unit)
    sh("systemctl", "restart", unit)


def sshd_snippet() -> None:
    """agents/sshd_config.d-ctmanager.conf, checked by sshd itself before it reloads."""
    write_atomic(SSHD_SNIPPET, paths.find_data("agents", "sshd_config.d-ctmanager.conf").read_bytes(), 0o644)
    sh("sshd", "-t")
    sh("systemctl", "reload-or-restart", "ssh.service")


def key_options(line: str) -> str:
    """The options field of an authorized_keys line (up to the first blank outside quotes)."""
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            return line[:i]
    raise InputError("an authorized_keys line with options and a key was expected", where=line[:60])


def gated_keys(template: str, public_keys: list[str]) -> str:
    """authorized_keys lines for `public_keys` with the options of the template's
    first key line (agents/authorized_keys: restrict, forced through ctgate)."""
    lines = [x for x in template.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    if not lines:
        raise InputError("agents/authorized_keys has no key line to take the options from")
    options = key_options(lines[0])
    if "restrict" not in options.split(",") or 'command="' not in options:
        raise InputError("agents/authorized_keys: the manager's line must be restrict,command=\"...\"")
    return "".join(f"{options} {k.strip()}\n" for k in public_keys)


def managers_authorized_keys(public_keys: list[str]) -> str:
    return gated_keys(paths.find_data("agents", "authorized_keys").read_text(), public_keys)


def system_user(name: str, home: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--system", "--home-dir", home, "--no-create-home", "--shell", "/usr/sbin/nologin", name)
        return pwd.getpwnam(name)


def give_text(text: str, dest: Path, user: pwd.struct_passwd, mode: int) -> None:
    """`text` at `dest`, owned by `user` (a secret the service reads: mode 0600)."""
    write_atomic(dest, text.encode(), mode)
    shutil.chown(dest, user.pw_uid, user.pw_gid)


def give(src: Path, dest: Path, user: pwd.struct_passwd, mode: int) -> None:
    give_text(src.read_text(), dest, user, mode)
