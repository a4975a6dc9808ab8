"""Reach a running rack through its inventory (written by `ctmanager lab up`, or
by hand for VMs and real hardware): the store, the manager config, the HNs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]


class Rack:
    def __init__(self, inventory: Path) -> None:
        self.inv = tomllib.loads(inventory.read_text())
        self.store = self.inv["store"]
        self.config = self.inv["manager_config"]
        self.hns = {h["name"]: h for h in self.inv["hns"]}

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "CTMANAGER_STORE": self.store, "CTMANAGER_CONFIG": self.config, **env}
        p = subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=full, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"ctmanager {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def status(self) -> dict[str, dict[str, Any]]:
        return {r["hostname"]: r for r in json.loads(self.cli("status", "--json").stdout)}

    def on_hn(self, hn: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command in an HN's network namespace (lab only: like a console on the HN)."""
        return subprocess.run(["ip", "netns", "exec", self.hns[hn]["netns"], *argv], capture_output=True, text=True,
                              timeout=30)

    def lxc_state(self, hn: str, ctid: int) -> str | None:
        p = self.on_hn(hn, "lxc-ls", "-P", self.hns[hn]["lxcpath"], "-f", "-F", "NAME,STATE")
        for line in p.stdout.splitlines()[1:]:
            name, state = line.split()[:2]
            if name == str(ctid):
                return state
        return None

    def init_pid(self, hn: str, ctid: int) -> int | None:
        """The CT's init PID; None while LXC has none to tell (just starting or stopping)."""
        p = self.on_hn(hn, "lxc-info", "-P", self.hns[hn]["lxcpath"], "-n", str(ctid), "-p", "-H")
        out = p.stdout.strip()
        return int(out) if out.isdigit() else None

    def manager_log(self) -> str:
        return Path(self.inv["manager_log"]).read_text()

    def hn_log(self, hn: str) -> str:
        return Path(self.hns[hn]["log"]).read_text()

    def running(self) -> dict[int, set[str]]:
        """The truth, from every HN's runtime: CTID -> the HNs where it runs."""
        where: dict[int, set[str]] = {}
        for hn, h in self.hns.items():
            p = self.on_hn(hn, "lxc-ls", "-P", h["lxcpath"], "--running")
            for name in p.stdout.split():
                if name.isdigit():
                    where.setdefault(int(name), set()).add(hn)
        return where

    def fault(self, *args: str) -> str:
        """`ctmanager lab fault ...` (lab only: a real rack has no such switch)."""
        return self.cli("lab", "fault", *args, "--dir", self.inv["lab_dir"]).stdout


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1,
             describe: Callable[[], str] | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} "
                         f"({describe() if describe else f'last: {last!r}'})")


def all_up(rack: Rack) -> Callable[[], bool]:
    return lambda: all(r["opst"] == "UP" for r in rack.status().values() if r["admst"] == "UP")
