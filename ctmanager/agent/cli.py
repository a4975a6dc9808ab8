"""`ctagent`: the HN agent's command line.

    ctagent [-c CONFIG] run                              the daemon: observe, report
    ctagent [-c CONFIG] apply ACTION CTID [--purge-data] [--epoch N]
                                                         spec JSON on stdin, result JSON on stdout
    ctagent [-c CONFIG] observe                          what runs here, as JSON
    ctagent [-c CONFIG] exec CTID -- CMD...              run a command inside a CT

Exit codes of apply: 0 done, 1 failed, 2 bad input, 3 rejected (admission or the
runtime refused: try another HN), 4 temporary (retry), 5 stale (--epoch is older
than a manager epoch this HN has seen: that manager no longer leads; nothing done),
6 sealed (start: the CT's /data is sealed on its storage node, a tenant move copied
it away; not started). See wire/results.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import add_version_flag, daemonlog
from ..errors import CtmError
from ..validate import MAX_CTID, is_digits
from ..wire import results
from . import apply as applying
from . import keycmd
from .config import load

DEFAULT_CONFIG = "/etc/ctagent/ctagent.toml"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"ctagent: error: {message} (see: ctagent --help)\n")
        sys.exit(results.EXIT_BAD_INPUT)


def build_parser() -> Parser:
    top = Parser(prog="ctagent", description=__doc__.split("\n\n")[0].strip(),
                 epilog="example: echo \"$SPEC\" | ctagent -c /etc/ctagent/ctagent.toml apply start 1005",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("-c", "--config", default=os.environ.get("CTAGENT_CONFIG", DEFAULT_CONFIG),
                     help=f"agent config (default: $CTAGENT_CONFIG, else {DEFAULT_CONFIG})")
    add_version_flag(top)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    p = sub.add_parser("run", help="run the agent daemon", epilog="example: ctagent run")
    p.add_argument("-v", "--verbose", action="store_true", help="log every observation")
    p = sub.add_parser("apply", help="apply one action to one CT (spec JSON on stdin)",
                       epilog="example: ctagent apply stop 1005 </dev/null")
    p.add_argument("action", choices=results.ACTIONS)
    p.add_argument("ctid", type=_ctid)
    p.add_argument("--purge-data", action="store_true", help="destroy only: also delete the CT's /data")
    p.add_argument("--epoch", type=_epoch, metavar="N",
                   help="the sending manager's lease epoch (the manager always passes it); refused if this HN has "
                        "seen a newer one. Without it the action is not fenced (by hand, in an emergency)")
    sub.add_parser("observe", help="print the CTs on this HN and their OPST as JSON", epilog="example: ctagent observe")
    p = sub.add_parser("exec", help="run a command inside a running CT; its exit code is passed through",
                       epilog="example: ctagent exec 1005 -- svstat /data/service/*")
    p.add_argument("ctid", type=_ctid)
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p = sub.add_parser("key", help="this HN's part of a rack key rotation (ctmanager rack key runs it on every HN)",
                       epilog="example: ctagent key status")
    p.add_argument("step", choices=keycmd.STEPS, help="status; stage (the new key, hex, on stdin); switch; retire")
    p.add_argument("--expect", default="", metavar="KEY_ID", help="switch: the id of the key staged here")
    return top


def _ctid(text: str) -> int:
    if not is_digits(text) or len(text) > 10 or not 0 < int(text) <= MAX_CTID:
        raise argparse.ArgumentTypeError(f"CTID must be an integer from 1 to {MAX_CTID} (got {text!r})")
    return int(text)


def _epoch(text: str) -> int:
    if not is_digits(text) or len(text) > 18:
        raise argparse.ArgumentTypeError(f"--epoch must be a non-negative integer (got {text!r})")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    daemonlog.setup("ctagent")
    try:
        config = load(Path(args.config))
    except CtmError as exc:
        return _fail(args, f"bad config: {exc}", results.EXIT_BAD_INPUT)
    if args.command == "key":  # before the driver: a rotation needs no runtime
        try:
            return keycmd.main(config.key, args.step, args.expect)
        except CtmError as exc:
            return _fail(args, str(exc), results.EXIT_BAD_INPUT)
        except OSError as exc:  # a full or read-only disk: one line, the files as they were (atomic writes)
            return _fail(args, f"key {args.step}: {exc.strerror or exc}"
                         f"{f' ({exc.filename})' if exc.filename else ''}", results.EXIT_FAILED)
    from .drivers import DriverError, driver_for

    driver = driver_for(config)
    if args.command == "apply":
        outcome = applying.apply(config, driver, args.action, args.ctid, sys.stdin.buffer.read(),
                                 purge=args.purge_data, epoch=args.epoch)
        print(outcome.emit())
        return outcome.exit_code
    from .daemon import Agent, NoTransport

    if args.command == "observe":  # a report body, unsigned: SSH authenticated it
        try:
            states = driver.observe()
        except DriverError as exc:
            return _fail(args, str(exc), results.EXIT_FAILED)
        print(Agent(config, driver, transport=NoTransport()).report(states, time.time()).body().decode())
        return 0
    if args.command == "exec":
        cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not cmd:
            return _fail(args, "give a command after --", results.EXIT_BAD_INPUT)
        os.execvp(driver.exec_argv(args.ctid, cmd)[0], driver.exec_argv(args.ctid, cmd))
    from ..sdnotify import Notifier

    notifier = Notifier.from_env()  # read (and taken out of the environment) before lxc-start inherits it
    try:
        agent = Agent(config, driver, notifier=notifier)
    except OSError as exc:
        return _fail(args, f"cannot listen on {config.listen[0]}:{config.listen[1]}: {exc.strerror}",
                     results.EXIT_FAILED)

    def stop(*_: object) -> None:
        agent.stopping.set()
        agent.wake()

    signal.signal(signal.SIGTERM, stop)
    agent.run()
    return 0


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.command == "apply":  # the manager parses stdout: keep it JSON
        print(json.dumps({"action": args.action, "ctid": args.ctid, "result": "bad_input" if code == 2 else "failed",
                          "message": message, "changed": False}))
    else:
        sys.stderr.write(f"ctagent: error: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
