"""Reach a running rack through its inventory (written by `ctmanager lab up`, by
`ctmanager lab machine manager` on the Vagrant rack, or by hand for real hardware):
the store, the manager config, the HNs and a console on each. The suite runs where
the manager's CLI runs (the lab host, or the Vagrant rack's manager machine)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

    def on_hn(self, hn: str, *argv: str, input: str | None = None, timeout: float = 30
              ) -> subprocess.CompletedProcess[str]:
        """A command on an HN, through its console (a namespace in the lab, SSH elsewhere)."""
        console = list(self.hns[hn]["console"])
        full = console + ([shlex.join(argv)] if console[0] == "ssh" else list(argv))
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)

    def hn_read(self, hn: str, path: str) -> str:
        p = self.on_hn(hn, "cat", path)
        if p.returncode != 0:
            raise AssertionError(f"{hn}: cat {path}: {p.stderr.strip()}")
        return p.stdout

    def hn_write(self, hn: str, path: str, text: str) -> None:
        p = self.on_hn(hn, "sh", "-c", 'cat > "$1"', "-", path, input=text)
        if p.returncode != 0:
            raise AssertionError(f"{hn}: writing {path}: {p.stderr.strip()}")

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

    def manager_log(self, name: str | None = None) -> str:
        """The (first) manager's log, or manager `name`'s (a lab with a pair: [[managers]])."""
        if name is None:
            return Path(self.inv["manager_log"]).read_text()
        return Path(next(m["log"] for m in self.inv["managers"] if m["name"] == name)).read_text()

    def hn_log(self, hn: str) -> str:
        return self.hn_read(hn, self.hns[hn]["log"])

    def running(self) -> dict[int, set[str]]:
        """The truth, from every HN's runtime: CTID -> the HNs where it runs."""
        where: dict[int, set[str]] = {}
        for hn, h in self.hns.items():
            p = self.on_hn(hn, "lxc-ls", "-P", h["lxcpath"], "--running")
            for name in p.stdout.split():
                if name.isdigit():
                    where.setdefault(int(name), set()).add(hn)
        return where

    def fault(self, kind: str, *hns: str) -> str:
        """Rehearse a failure: `ctmanager lab fault ...` in the lab; elsewhere the
        inventory's [faults] commands, on the HNs' consoles (kill-manager: here)."""
        if "lab_dir" in self.inv:
            return self.cli("lab", "fault", kind, *hns, "--dir", self.inv["lab_dir"]).stdout
        commands = self.inv["faults"]
        if kind == "kill-manager":
            return self._local(commands["kill_manager"])
        out = []
        for hn in hns or (self.hns if kind == "heal" else ()):
            cmd = commands[kind.replace("-", "_")].replace("{hn_dir}", str(Path(self.hns[hn]["agent_config"]).parent))
            p = self.on_hn(hn, "sh", "-c", cmd)
            if p.returncode != 0:
                raise AssertionError(f"fault {kind} on {hn}: {cmd}: exit {p.returncode}: {p.stderr.strip()}")
            out.append(f"{hn}: {kind}")
        return "\n".join(out)

    @staticmethod
    def _local(cmd: str) -> str:
        p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"{cmd}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout


class DcLab:
    """A DC lab brought up by `ctmanager lab up --racks 101,102` on its own
    PostgreSQL database: each rack through its inventory, and `both`, whose HNs
    are every rack's (where a CT runs, DC-wide)."""

    def __init__(self, base: Path) -> None:
        self.r101 = Rack(base / "lab" / "inventory.toml")
        self.r102 = Rack(base / "lab" / "racks" / "rack-102" / "inventory.toml")
        self.both = Rack(base / "lab" / "inventory.toml")
        self.both.hns.update(self.r102.hns)

    def of(self, rack: Rack) -> dict[str, dict[str, object]]:
        """Status rows of one rack's CTs (status is DC-wide)."""
        mine = {int(c["ctid"]) for c in json.loads(rack.cli("ct", "list", "--rack", rack.inv["rack"], "--json").stdout)}
        return {h: r for h, r in rack.status().items() if int(r["ctid"]) in mine}

    def all_up(self) -> bool:
        """Every CT (ADMST UP) of the lab's two racks UP (other racks' CTs are not run)."""
        return all(r["opst"] == "UP" for rack in (self.r101, self.r102) for r in self.of(rack).values()
                   if r["admst"] == "UP")


@contextlib.contextmanager
def dc_lab(url: str, base: Path, *install: str) -> Iterator[DcLab]:
    """Init the example DC in `url`, install rack-102 (and the racks in `install`,
    as "rack-201" — installed, not brought up), bring rack-101 and rack-102 up
    in the lab under `base`, and take it all down afterwards."""
    env = {**os.environ, "CTMANAGER_STORE": url, "CTMANAGER_LAB_DIR": str(base / "lab")}

    def ctm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=400)

    assert ctm("init", "example").returncode == 0
    for name in ("rack-102", *install):
        p = ctm("rack", "install", name, str(ROOT / f"templates/dc/manifests/{name}.toml"))
        assert p.returncode == 0, p.stderr
    up = ctm("lab", "up", "--racks", "101,102", "--hns", "3", "--timeout", "150")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield DcLab(base)
    finally:
        down = ctm("lab", "down")
        assert down.returncode == 0, down.stderr


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


class TwiceWatcher(threading.Thread):
    """Samples where CTs run, as fast as lxc-ls allows, and remembers any CT seen
    on two HNs in one sample."""

    def __init__(self, rack: Rack) -> None:
        super().__init__(daemon=True)
        self.rack, self.stop, self.twice, self.samples = rack, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            for ctid, hns in self.rack.running().items():
                if len(hns) > 1:
                    self.twice.append((time.time(), ctid, sorted(hns)))
            self.samples += 1


@contextlib.contextmanager
def watched(rack: Rack, healed: tuple[str, Callable[[], Any]] | None = None, *,
            up: Callable[[], bool] | None = None, heal: bool = True, samples: int = 10) -> Iterator[TwiceWatcher]:
    """A TwiceWatcher over a test: every CT UP first (`up`: that check instead);
    afterwards (`heal`) every fault healed (and `healed`, a (what, check) to wait
    for too), every CT UP again, and no CT ever seen on two HNs."""
    up = up or all_up(rack)
    wait_for("all UP", up, timeout=90)
    w = TwiceWatcher(rack)
    w.start()
    try:
        yield w
    finally:
        w.stop.set()
        w.join(30)
        if heal:
            rack.fault("heal")
            if healed is not None:
                wait_for(healed[0], healed[1], timeout=30)
            wait_for("all UP after healing", up, timeout=60)
    assert w.samples > samples
    assert w.twice == [], f"CTs ran on two HNs at once: {w.twice[:5]}"
