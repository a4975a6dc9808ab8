"""`ctmanager lab up|status|down`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..errors import InputError
from ..lab import layout, managers, storagenodes
from ..store import queries
from .common import Registry, integer_in, parse_rack, seconds_in, store_of, want_json
from .output import emit_json, table

CONVERGE_TIMEOUT = 120.0


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    labs = group("lab", "a real rack on this machine: namespaces as HNs, sshd, ctagent, LXC CTs, the manager")

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", help=f"lab folder (default: ${layout.ENV_VAR}, else {layout.DEFAULT_DIR})")
        return p

    p = with_dir(cmd(labs, "up", cmd_lab_up, "bring a rack of the store up in the lab and wait until every CT is UP",
                     "ctmanager lab up --hns 3"))
    p.add_argument("--rack", help="rack to bring up (default: the first installed)")
    p.add_argument("--racks", metavar="SLOTS", help="a DC lab: these racks at once (e.g. 101,102), each with its own "
                   "HNs and its own manager, on one store; the first one's folder holds them all")
    p.add_argument("--hns", type=integer_in(1, 64), default=3,
                   help="how many of each rack's HNs to run (default 3; fewer if a rack has fewer)")
    p.add_argument("--managers", type=integer_in(1, managers.MAX), default=1,
                   help="managers per rack (default 1, on the host); 2 or more: a pair (one leads, the others "
                        "stand by), each in a network namespace of its own so a fault can cut one off")
    p.add_argument("--no-wait", action="store_true", help="return once started, without waiting for UP|UP")
    p.add_argument("--timeout", type=seconds_in(1, 86400), default=CONVERGE_TIMEOUT, help="seconds to wait for convergence")
    with_dir(cmd(labs, "status", cmd_lab_status, "the lab's HNs, processes and running CTs", "ctmanager lab status"))
    with_dir(cmd(labs, "down", cmd_lab_down, "remove everything `lab up` made (safe to run twice)", "ctmanager lab down"))
    p = cmd(labs, "machine", cmd_lab_machine,
            "set this machine up as one part of a lab rack on real machines (the Vagrant rack)",
            "ctmanager lab machine hn hn-101-1 --manager 10.101.0.2 --dns 10.101.0.53")
    p.add_argument("role", choices=("storage", "dns", "hn", "manager"),
                   help="storage (keys, /data; first), dns (BIND), hn (agent), manager (daemon, inventory; last)")
    p.add_argument("name", help="this machine's name (an HN's hostname, e.g. hn-101-1)")
    p.add_argument("--rack", help="rack (default: the first installed)")
    p.add_argument("--manager", required=True, metavar="IP", help="the manager's rack address (an HN of a rack "
                   "with a manager pair: every manager's, separated by commas; a manager: its own)")
    p.add_argument("--dns", required=True, metavar="IP", help="the dns machine's rack address")
    p.add_argument("--root", default="/srv/ctmanager", help="where it keeps things; shared/ below it must be "
                   "the rack's shared folder (default /srv/ctmanager)")
    faults = group("fault", "rehearse failures on the lab rack (see README: When a node fails)", parent=labs)
    p = with_dir(cmd(faults, "partition", cmd_fault, "cut HNs, or a manager of a pair, off the rack network "
                     "(their links go down; a manager keeps its store)", "ctmanager lab fault partition hn-101-2"))
    p.add_argument("hn", nargs="+", metavar="NODE", help="an HN, or a manager (mgr-101-b) of a lab with --managers 2")
    p = with_dir(cmd(faults, "heal", cmd_fault, "links up, killed agents back, killed managers started again",
                     "ctmanager lab fault heal"))
    p.add_argument("hn", nargs="*", metavar="NODE", help="only these HNs or managers (default: everything)")
    p = with_dir(cmd(faults, "kill-agent", cmd_fault, "kill -9 an HN's ctagent and keep it down (its watchdog fires)",
                     "ctmanager lab fault kill-agent hn-101-2"))
    p.add_argument("hn", nargs=1, metavar="HN")
    p = with_dir(cmd(faults, "kill-manager", cmd_fault, "kill -9 the leading manager (or NAME) and keep it down "
                     "until `lab fault heal`", "ctmanager lab fault kill-manager mgr-101-a"))
    p.add_argument("hn", nargs="?", metavar="NAME", help="this manager (default: the one that leads now)")
    p.add_argument("--restart", action="store_true", help="start it again at once, as systemd would")
    p = with_dir(cmd(faults, "kill-backup", cmd_fault, "kill -9 a storage node's backup daemon and its borg "
                     "(as systemd stops a unit)", "ctmanager lab fault kill-backup storage-101-4 --restart"))
    p.add_argument("hn", nargs=1, metavar="NODE", help="the storage node")
    p.add_argument("--restart", action="store_true", help="start it again at once, as systemd would")
    with_dir(cmd(faults, "backup-node-down", cmd_fault, "stop the DC's backup nodes until `lab fault heal` "
                 "(repositories unreachable)", "ctmanager lab fault backup-node-down"))
    p = with_dir(cmd(faults, "link-cut", cmd_fault, "a cloud peering's link drops everything at the provider's end "
                     "until `lab fault heal` (the carrier stays up)", "ctmanager lab fault link-cut aws-vpc1-a"))
    p.add_argument("hn", nargs=1, metavar="PEERING")
    for name, what in (("cloud-announce", "announces"), ("cloud-withdraw", "withdraws")):
        p = with_dir(cmd(faults, name, cmd_fault, f"the provider of a peering's cloud {what} a prefix over every link",
                         f"ctmanager lab fault {name} aws-vpc1-a 10.0.0.0/16"))
        p.add_argument("hn", nargs=1, metavar="PEERING")
        p.add_argument("prefix", metavar="PREFIX")


def _say(args: argparse.Namespace) -> Any:
    return (lambda msg: sys.stderr.write(f"lab: {msg}\n")) if not want_json(args) else (lambda msg: None)


def cmd_lab_up(args: argparse.Namespace) -> int:
    from ..lab import rack

    if args.hns < 1:
        raise InputError(f"--hns must be 1 or more (got {args.hns})")
    if args.rack and args.racks:
        raise InputError("--rack and --racks: give one of them")
    lab = layout.Lab(args.dir)
    say = _say(args)
    started = time.monotonic()
    with store_of(args) as store:
        slots = _slots(store, args)
        labs = [(slots[0], lab)] + [(s, layout.Lab(str(lab.root / "racks" / f"rack-{s}"))) for s in slots[1:]]
        for i, (slot, here) in enumerate(labs):
            have = sum(1 for n in queries.nodes(store, rack=slot) if n.role == "compute")
            rack.up(store, here, slot, args.hns if i == 0 else max(min(args.hns, have), 1), say,
                    dns=i == 0, fresh=i == 0, manager_count=args.managers, dc_lab=lab)
            if i == 0 and len(labs) > 1:
                storagenodes.route_between_racks(lab)  # a tenant move copies between the racks' storage nodes
            if i == 0 and len(labs) > 1:  # recorded before the others start: `down` finds them all
                lab.write_state({**lab.read_state(), "racks": [str(sub.root) for _, sub in labs[1:]]})
            say(f"inventory of rack-{slot}: {here.inventory}")
        if args.no_wait:
            return 0
        ok = all([_wait(store, slot, args.timeout, say, here) for slot, here in labs])
    seconds = time.monotonic() - started
    if want_json(args):
        emit_json({"rack": f"rack-{slots[0]}", "converged": ok, "seconds": round(seconds, 2),
                   "inventory": str(lab.inventory), "manager_config": str(lab.manager_config),
                   "racks": [{"rack": f"rack-{s}", "inventory": str(here.inventory),
                              "manager_config": str(here.manager_config)} for s, here in labs]})
    else:
        names = ", ".join(f"rack-{s}" for s in slots)
        print(f"lab {names} {'up' if ok else 'NOT converged'} in {seconds:.1f} s; "
              f"export CTMANAGER_CONFIG={lab.manager_config}")
    return 0 if ok else 1


def _slots(store: Any, args: argparse.Namespace) -> list[int]:
    if not args.racks:
        return [parse_rack(args.rack, "--rack") if args.rack else _first_rack(store)]
    slots = [parse_rack(s.strip(), "--racks") for s in args.racks.split(",") if s.strip()]
    if not slots or len(set(slots)) != len(slots):
        raise InputError(f"--racks: racks separated by commas, each once (got {args.racks!r})")
    installed = {int(r["slot"]) for r in queries.racks(store)}
    missing = [s for s in slots if s not in installed]
    if missing:
        raise InputError(f"--racks: rack-{missing[0]} is not installed (ctmanager rack install rack-{missing[0]} "
                         f"MANIFEST); installed: {', '.join(f'rack-{s}' for s in sorted(installed))}")
    return slots


def _wait(store: Any, slot: int, timeout: float, say: Any, lab: layout.Lab) -> bool:
    from ..lab.faults import alive

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        running = managers.pids(lab)
        if not any(alive(pid) for pid in running.values()):
            log = managers.of(lab)[0].log
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise InputError(f"the lab's manager exited: {tail[0] if tail else 'no log'} (log: {log})")
        mine = {c.ctid for c in queries.cts(store, rack=slot)}
        rows = [r for r in queries.status(store) if r[0] in mine]
        want = [r for r in rows if r[5] == "UP"]
        up = sum(1 for r in want if r[6] == "UP")
        msg = f"{up}/{len(want)} CTs UP"
        if msg != last:
            say(msg)
            last = msg
        if up == len(want):
            return True
        if time.monotonic() > deadline:
            _why_not(rows, lab, say)
            return False
        time.sleep(0.2)


def _why_not(rows: list[Any], lab: layout.Lab, say: Any) -> None:
    """What a lab that did not converge shows (CI keeps only the output): the CTs not
    UP, the newest lines of the rack's manager and HN logs, and the free disk."""
    import shutil

    late = [f"{r[0]} {r[1]}: {r[6]} on {r[4] or 'no HN'}, report {r[8]} s old" for r in rows
            if r[5] == "UP" and r[6] != "UP"]
    say(f"not UP: {'; '.join(late[:8])}")
    logs = [m.log for m in managers.of(lab)] + sorted(lab.logs.glob("hn-*.log"))
    for log in logs:
        lines = log.read_text(errors="replace").strip().splitlines()[-4:] if log.exists() else ["(no log)"]
        for line in lines:
            say(f"{log.name}: {line[:240]}")
    free = shutil.disk_usage(lab.root)
    say(f"disk of {lab.root}: {free.free >> 20} MiB free of {free.total >> 20} MiB")


def cmd_lab_status(args: argparse.Namespace) -> int:
    from ..lab.shell import sh

    lab = layout.Lab(args.dir)
    state = lab.read_state()
    if not state:
        raise InputError(f"no lab in {lab.root} (start one: ctmanager lab up)")
    racks = [lab] + [layout.Lab(root) for root in state.get("racks", [])]  # a DC lab: every rack
    out: list[dict[str, Any]] = []
    for here in racks:
        rows = []
        for name, pid in sorted(here.read_state().get("pids", {}).items()):
            alive = os.path.exists(f"/proc/{pid}")
            cts = "-"
            if name in here.read_state().get("hns", []):
                p = sh("lxc-ls", "-P", str(here.hn_dir(name) / "lxc"), "--running", ns=here.netns(name), check=False)
                cts = (" ".join(sorted(p.stdout.split(), key=lambda s: (len(s), s))) or "-") if p.returncode == 0 else "?"
            rows.append({"name": name, "pid": pid, "alive": alive, "running_cts": cts})
        out.append({"dir": str(here.root), "rack": f"rack-{here.read_state().get('slot')}",
                    "inventory": str(here.inventory), "processes": rows})
    if want_json(args):
        emit_json({**out[0], "racks": out})
    else:
        for r in out:
            print(f"lab {r['dir']} ({r['rack']}); inventory {r['inventory']}")
            table(("PROCESS", "PID", "ALIVE", "RUNNING_CTS"), [(p["name"], p["pid"], "yes" if p["alive"] else "NO",
                                                               p["running_cts"]) for p in r["processes"]])
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    from ..lab.rack import check_host, down

    check_host()
    lab = layout.Lab(args.dir)
    down(lab, _say(args))
    if want_json(args):
        emit_json({"removed": str(lab.root)})
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from ..lab import faults
    from ..lab.rack import check_host

    check_host()
    lab = layout.Lab(args.dir)
    lines: list[str] = []

    def say(msg: str) -> None:
        lines.append(msg)
        if not want_json(args):
            print(msg)

    kind = args.fault_command
    if kind == "partition":
        faults.partition(lab, args.hn, say)
    elif kind == "heal":
        faults.heal(lab, args.hn, say)
    elif kind == "kill-agent":
        faults.kill_agent(lab, args.hn[0], say)
    elif kind == "kill-backup":
        faults.kill_backup(lab, args.hn[0], args.restart, say)
    elif kind == "backup-node-down":
        faults.backup_node_down(lab, say)
    elif kind in ("link-cut", "cloud-announce", "cloud-withdraw"):
        from ..lab import borders
        from ..lab.shell import sh
        with store_of(args) as store:
            dc = queries.dc_template(store)
        if kind == "link-cut":
            borders.cut(lab, dc, args.hn[0], sh, say)
        else:
            borders.announce(lab, dc, args.hn[0], args.prefix, sh, kind == "cloud-withdraw", say)
    else:
        faults.kill_manager(lab, args.hn, args.restart, say)
    if want_json(args):
        emit_json({"fault": kind, "done": lines})
    return 0


def cmd_lab_machine(args: argparse.Namespace) -> int:
    from ..lab import machines

    machines.check_root()
    lab = layout.Lab(args.root)
    with store_of(args) as store:
        slot = parse_rack(args.rack, "--rack") if args.rack else _first_rack(store)
        machines.setup(args.role, args.name, store, lab, slot, args.manager, args.dns, _say(args))
    if want_json(args):
        emit_json({"role": args.role, "name": args.name, "root": str(lab.root)})
    return 0


def _first_rack(store: Any) -> int:
    racks = queries.racks(store)
    if not racks:
        raise InputError("no rack installed in the store: ctmanager init example")
    return int(racks[0]["slot"])
