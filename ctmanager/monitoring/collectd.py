"""Checking collectd configs with collectd itself (5.12).

`collectd -T -C FILE` parses the config, runs every read callback once and exits.
Its exit code is 0 for several config mistakes (a bad option of a complex plugin,
a regex that does not compile), so its messages are read too. Runtime failures
(a log file not there yet, a database not running) are not config errors.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# a CT's services may run without PATH (svscan as init has none): look in sbin too
COLLECTD = shutil.which("collectd") or shutil.which("collectd", path="/usr/sbin:/sbin") or "collectd"
MISSING = "collectd is not installed"
CONFIG_ERRORS = re.compile(
    r"Parse error|syntax error|Could not find plugin|Invalid configuration|failed to handle option"
    r"|did not register for value|isn't loaded|needs exactly|Compiling the regular expression"
    r"|No \(valid\) matches|Unable to read config|Parsing the config file failed|Unknown (option|config)")


def check(config: Path, timeout: float = 30.0) -> list[str]:
    """The config errors collectd reports for `config` ([] = fine)."""
    try:
        p = subprocess.run([COLLECTD, "-T", "-C", str(config)], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return [MISSING]
    except subprocess.TimeoutExpired:
        return [f"collectd -T did not finish within {timeout:g}s"]
    out = p.stderr + p.stdout
    errors = [line.strip() for line in out.splitlines() if CONFIG_ERRORS.search(line)]
    # exit 1 also means "a read callback failed" (a log file not there yet): not a config error
    if p.returncode != 0 and not errors and "plugin read callbacks failed" not in out:
        errors.append(f"collectd -T exited {p.returncode}")
    return errors


def check_plugin(plugin: Path, workdir: Path | None = None) -> list[str]:
    """A plugin file alone, inside a minimal config (no writer, no network).
    `workdir`: somewhere writable (in a CT, / and /tmp may be read-only)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ctautolink-check-", dir=workdir) as tmp:
        conf = Path(tmp) / "check.conf"
        conf.write_text(f'FQDNLookup false\nInterval 10\nBaseDir "{tmp}"\nPIDFile "{tmp}/collectd.pid"\n'
                        f'Include "{plugin}"\n')
        return check(conf)


class Checker:
    """check_plugin with a cache by file identity: each plugin version is run
    through collectd once, so linking at run time costs no collectd start."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir
        self._cache: dict[tuple[str, int, int, int], list[str]] = {}

    def errors(self, path: str) -> list[str]:
        try:
            st = os.stat(path)
        except OSError as exc:
            return [f"{path}: {exc.strerror}"]
        key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
        if key not in self._cache:
            self._cache[key] = check_plugin(Path(path), self.workdir)
        return self._cache[key]
