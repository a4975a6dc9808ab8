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
        self.name = self.inv["rack"]
        self.hns = {h["name"]: h for h in self.inv["hns"]}
        self.storage = {s["name"]: s for s in self.inv.get("storage", [])}
        self.managers = {m["name"]: m for m in self.inv.get("managers", [])}

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "CTMANAGER_STORE": self.store, "CTMANAGER_CONFIG": self.config, **env}
        p = subprocess.run([sys.executable, "-m", "ctmanager", *args], cwd=ROOT, env=full, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"ctmanager {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def status(self) -> dict[str, dict[str, Any]]:
        """This rack's CTs (the store is the DC's), by hostname."""
        return {r["hostname"]: r for r in json.loads(self.cli("status", "--rack", self.name, "--json").stdout)}

    def on_hn(self, hn: str, *argv: str, input: str | None = None, timeout: float = 30
              ) -> subprocess.CompletedProcess[str]:
        """A command on an HN, through its console (a namespace in the lab, SSH elsewhere)."""
        return self._on(self.hns[hn]["console"], argv, input, timeout)

    def on_storage(self, node: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command on a storage node, through its console (in the lab: its sshd's
        namespaces, where ctstorage and its rsync run; SSH elsewhere)."""
        return self._on(self.storage[node]["console"], argv, None, timeout)

    @staticmethod
    def _on(console: list[str], argv: tuple[str, ...], input: str | None, timeout: float
            ) -> subprocess.CompletedProcess[str]:
        full = list(console) + ([shlex.join(argv)] if console[0] == "ssh" else list(argv))
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
        """The (first) manager's log, or manager `name`'s (a lab with a pair: [[managers]]);
        through the manager's console where the inventory gives one (another machine)."""
        if name is None and not any("console" in m for m in self.managers.values()):
            return Path(self.inv["manager_log"]).read_text()
        m = self.managers[name or sorted(self.managers)[0]]
        if "console" not in m:
            return Path(m["log"]).read_text()
        p = self._on(m["console"], ("cat", m["log"]), None, 30)
        if p.returncode != 0:
            raise AssertionError(f"{m['name']}: cat {m['log']}: {p.stderr.strip()}")
        return p.stdout

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
            return self._kill_manager(commands["kill_manager"])
        out = []
        for hn in hns or (self.hns if kind == "heal" else ()):
            cmd = commands[kind.replace("-", "_")].replace("{hn_dir}", str(Path(self.hns[hn]["agent_config"]).parent))
            p = self.on_hn(hn, "sh", "-c", cmd)
            if p.returncode != 0:
                raise AssertionError(f"fault {kind} on {hn}: {cmd}: exit {p.returncode}: {p.stderr.strip()}")
            out.append(f"{hn}: {kind}")
        return "\n".join(out)

    def _kill_manager(self, cmd: str) -> str:
        """On the leading manager's console (the inventory's [[managers]]), else here."""
        if not any("console" in m for m in self.managers.values()):
            return self._local(cmd)
        leader = json.loads(self.cli("manager", "status", "--rack", self.name, "--json").stdout)[0]["leader"]
        m = self.managers.get(leader) or self.managers[sorted(self.managers)[0]]
        p = self._on(m["console"], ("sh", "-c", cmd), None, 60)
        if p.returncode != 0:
            raise AssertionError(f"kill-manager on {m['name']}: {cmd}: exit {p.returncode}: {p.stderr.strip()}")
        return f"{m['name']}: kill-manager"

    @staticmethod
    def _local(cmd: str) -> str:
        p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"{cmd}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout


class DcLab:
    """Two racks of one DC (one store), each through its inventory: a DC lab (`ctmanager
    lab up --racks 101,102`) or machines (the Vagrant DC: CTMANAGER_INVENTORY and
    CTMANAGER_DC_INVENTORY); `both`, whose HNs are every rack's (where a CT runs, DC-wide)."""

    def __init__(self, first: Path, second: Path) -> None:
        self.r101 = Rack(first)
        self.r102 = Rack(second)
        self.both = Rack(first)
        self.both.hns.update(self.r102.hns)

    @classmethod
    def given(cls) -> DcLab | None:
        """The DC the environment names (both inventories), if it names one."""
        first, second = os.environ.get("CTMANAGER_INVENTORY"), os.environ.get("CTMANAGER_DC_INVENTORY")
        return cls(Path(first), Path(second)) if first and second else None

    def all_up(self) -> bool:
        """Every CT (ADMST UP) of the two racks UP (another installed rack's CTs are not run)."""
        return all(r["opst"] == "UP" for rack in (self.r101, self.r102) for r in rack.status().values()
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
        yield DcLab(base / "lab" / "inventory.toml", base / "lab" / "racks" / "rack-102" / "inventory.toml")
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
