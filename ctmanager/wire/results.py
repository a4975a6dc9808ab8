"""What `ctagent apply ACTION CTID` answers, once for both ends: the actions, the
JSON result on stdout and its exit code. The manager's executor reads these;
the agent writes them. A rejection has its own code so the scheduler tries
another HN; "temporary" means try again later; "stale" means the action came
from a manager whose epoch is older than one the HN has seen (a deposed leader):
nothing was done; "sealed" means a start found the CT's /data sealed on its
storage node (`ctstorage seal`: a tenant move copied it away): not started, on
this HN or any other, until the move unseals it. Permanent, like a rejection,
but no other HN would do better.

    exit  result
    0     done
    1     failed
    2     bad_input
    3     rejected     admission or the runtime refused: try another HN
    4     temporary    try again later
    5     stale        the sender's epoch is older than one the HN has seen
    6     sealed       start only: the CT's /data is sealed"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ACTIONS = ("start", "stop", "create", "destroy", "set")
NEEDS_SPEC = ("start", "create", "set")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_TEMPORARY, EXIT_STALE, EXIT_SEALED = 0, 1, 2, 3, 4, 5, 6


class ActionResult(StrEnum):
    """What an action came to (a str: it is written to JSON and the journal as is)."""

    DONE = "done"
    FAILED = "failed"
    BAD_INPUT = "bad_input"
    REJECTED = "rejected"
    TEMPORARY = "temporary"
    STALE = "stale"
    SEALED = "sealed"


RESULT_OF_EXIT = {EXIT_OK: ActionResult.DONE, EXIT_FAILED: ActionResult.FAILED, EXIT_BAD_INPUT: ActionResult.BAD_INPUT,
                  EXIT_REJECTED: ActionResult.REJECTED, EXIT_TEMPORARY: ActionResult.TEMPORARY,
                  EXIT_STALE: ActionResult.STALE, EXIT_SEALED: ActionResult.SEALED}
EXIT_OF_RESULT = {result: code for code, result in RESULT_OF_EXIT.items()}


def result_of(exit_code: int) -> ActionResult:
    return RESULT_OF_EXIT.get(exit_code, ActionResult.FAILED)


@dataclass
class ApplyOutcome:
    action: str
    ctid: int
    hn: str
    result: ActionResult = ActionResult.DONE
    changed: bool = False
    message: str = ""
    opst: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_OF_RESULT.get(self.result, EXIT_FAILED)

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "ctid": self.ctid, "hn": self.hn, "result": self.result,
                "changed": self.changed, "message": self.message, "opst": self.opst, **self.extra}

    def emit(self) -> str:
        return json.dumps(self.as_json(), sort_keys=True)


def message_of(stdout: bytes) -> str | None:
    """The `message` of a result on stdout, or None if it is not one."""
    try:
        return str(json.loads(stdout)["message"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
