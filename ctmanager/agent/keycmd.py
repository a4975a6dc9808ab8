"""`ctagent key status|stage|switch|retire`: this HN's part of a rack key rotation
(wire/keys.py has the steps; `ctmanager rack key` runs them on every machine of
a rack). `stage` reads the new key, hex, from stdin: a key is never in argv,
where `ps` would show it. Prints the ids of the keys held, as JSON; exit 2 when
a step is refused (a rotation half done, a different key staged)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError
from ..wire import keys

STEPS = ("status", "stage", "switch", "retire")


def run(key_file: Path, step: str, expect: str = "", stdin: bytes | None = None) -> dict[str, str]:
    where = str(key_file)
    if step == "status":
        return keys.state(key_file, where)
    if step == "stage":
        data = (sys.stdin.buffer.read(4096) if stdin is None else stdin).decode("ascii", "replace")
        return keys.stage(key_file, keys.parse_key(data, "the new key (stdin)"), where)
    if step == "switch":
        return keys.switch(key_file, where, expect)
    if step == "retire":
        return keys.retire(key_file, where)
    raise InputError(f"unknown key step {step!r} (one of {', '.join(STEPS)})")


def main(key: bytes | keys.Keyring, step: str, expect: str = "") -> int:
    if not isinstance(key, keys.Keyring):
        raise InputError("this agent's config names no key file to rotate")
    print(json.dumps(run(key.path, step, expect)))
    return 0
