"""ctgate: the forced command of the manager's SSH key on an HN. The key may run
ctagent and nothing else: `ctagent apply ACTION CTID [--purge-data] [--epoch N]`,
`ctagent observe`, `ctagent exec CTID -- CMD ARGS...` (a command inside a CT: what
`ctmanager ct exec` is for), `ctagent key status|stage|switch|retire` (a rack key
rotation: `ctmanager rack key`). Anything else is refused in one line, exit 126.

In authorized_keys:
    restrict,command="/usr/bin/ctgate --agent /usr/bin/ctagent" ssh-ed25519 AAAA… manager
The command the manager sent is in $SSH_ORIGINAL_COMMAND; it is split like a shell
would (shlex), never run by one: the checked argv goes to ctagent by execv. The
manager's own path for ctagent is not trusted (the gate runs its --agent), nor a
`-c CONFIG` unless it is the gate's own --config.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Sequence

from .. import add_version_flag
from ..validate import MAX_CTID, is_digits
from ..wire.results import ACTIONS

REFUSED = 126  # what a shell returns for a command it may not run
_KEY_ID = re.compile(r"[0-9a-f]{12}")


class Refused(Exception):
    pass


def _ctid(text: str) -> str:
    if not is_digits(text) or len(text) > 10 or not 0 < int(text) <= MAX_CTID:
        raise Refused(f"CTID must be an integer from 1 to {MAX_CTID} (got {text!r})")
    return text


def check(command: str, agent: str, config: str = "") -> list[str]:
    """The argv to exec for the manager's `command`, or Refused."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise Refused(f"not a command line ({exc})") from None
    if not words or os.path.basename(words[0]) != "ctagent":
        raise Refused(f"only ctagent may run with this key (got {words[0] if words else 'nothing'!r})")
    rest = words[1:]
    prefix = [agent]
    if rest[:1] in (["-c"], ["--config"]):
        if len(rest) < 2 or not config or rest[1] != config:
            raise Refused("ctagent's config is the gate's to choose")
        rest = rest[2:]
    if config:
        prefix += ["-c", config]
    if not rest:
        raise Refused("ctagent without a subcommand")
    sub, args = rest[0], rest[1:]
    if sub == "observe" and not args:
        return [*prefix, "observe"]
    if sub == "apply":
        if len(args) < 2 or args[0] not in ACTIONS:
            raise Refused(f"apply ACTION CTID, ACTION one of {', '.join(ACTIONS)}")
        out = [*prefix, "apply", args[0], _ctid(args[1])]
        flags = args[2:]
        while flags:
            if flags[0] == "--purge-data":  # ctagent itself says which actions take it
                out.append(flags.pop(0))
            elif flags[0] == "--epoch" and len(flags) > 1 and is_digits(flags[1]) and len(flags[1]) <= 18:
                out += [flags.pop(0), flags.pop(0)]
            else:
                raise Refused(f"apply does not take {flags[0]!r}")
        return out
    if sub == "exec":
        if len(args) < 3 or args[1] != "--":
            raise Refused("exec CTID -- CMD ARGS...")
        return [*prefix, "exec", _ctid(args[0]), "--", *args[2:]]
    if sub == "key":  # a rack key rotation (ctmanager rack key): the new key comes on stdin, never in argv
        if args in (["status"], ["stage"], ["switch"], ["retire"]):
            return [*prefix, "key", args[0]]
        if len(args) == 3 and args[:2] == ["switch", "--expect"] and _KEY_ID.fullmatch(args[2]):
            return [*prefix, "key", *args]
        raise Refused("key status|stage|retire, or key switch [--expect KEY_ID]")
    raise Refused(f"ctagent {sub!r} is not for the manager's key (apply, observe, exec, key)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ctgate", description=__doc__.split("\n\n")[0])
    add_version_flag(ap)
    ap.add_argument("--agent", default="/usr/bin/ctagent", help="the ctagent to run")
    ap.add_argument("--config", default="", help="its config (passed as -c; the manager may not choose another)")
    args = ap.parse_args(argv)
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        full = check(command, args.agent, args.config)
    except Refused as exc:
        sys.stderr.write(f"ctgate: refused: {exc}\n")
        return REFUSED
    os.execv(full[0], full)
    return REFUSED  # not reached


if __name__ == "__main__":
    sys.exit(main())
