"""Run planned actions on the HNs: `ctagent apply` over SSH, bounded concurrency,
a timeout per action, and one result per action (fabric's GroupResult idea), so
one bad HN never hides or blocks the others. Actions on one HN run in order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..reconcile.state import Action
from ..wire.results import ActionResult, message_of, result_of
from .ssh import Remote, SshError, SshSettings

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Result:
    action: Action
    result: ActionResult
    message: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.result == ActionResult.DONE  # "sealed" is not: the CT did not start

    def as_json(self) -> dict[str, Any]:
        a = self.action
        return {"kind": a.kind, "ctid": a.ctid, "hn": a.hn, "reason": a.reason, "result": self.result,
                "message": self.message, "seconds": round(self.seconds, 3)}


class Executor:
    def __init__(self, addresses: Mapping[str, str], ssh: SshSettings, agent_command: list[str], *,
                 timeout: float = 30.0, concurrency: int = 8) -> None:
        self.hns = {name: Remote(name, addr, ssh) for name, addr in addresses.items()}
        self.agent_command = agent_command
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ssh")

    def hn(self, name: str) -> Remote:
        hn = self.hns.get(name)
        if hn is None:
            raise SshError(f"{name} is not a compute node of this rack (no address)")
        return hn

    def apply(self, action: Action, spec: Mapping[str, Any] | None, epoch: int = 0) -> Result:
        """One action, synchronously. Never raises: every failure is a Result.
        `epoch`: the sender's lease epoch (the agent refuses one older than it saw)."""
        started = time.monotonic()
        argv = [*self.agent_command, "apply", action.kind, str(action.ctid)]
        if action.purge:
            argv.append("--purge-data")
        if epoch:
            argv += ["--epoch", str(int(epoch))]
        stdin = json.dumps(spec).encode() if spec is not None else b""
        try:
            out = self.hn(action.hn).run(argv, stdin, self.timeout)
        except SshError as exc:
            return Result(action, ActionResult.TEMPORARY if exc.temporary else ActionResult.FAILED, str(exc),
                          time.monotonic() - started)
        result = result_of(out.rc)
        message = message_of(out.out)
        if message is None:
            tail = (out.err or out.out).decode(errors="replace").strip().splitlines()
            message = f"ctagent exited {out.rc}: {tail[-1] if tail else 'no output'}"
        return Result(action, result, " ".join(message.split()), time.monotonic() - started)

    def submit(self, actions: Iterable[Action], spec_of: Callable[[int], Mapping[str, Any] | None],
               done: Callable[[Result], None], epoch: int = 0) -> list[Future[None]]:
        """Run actions in the background: one task per HN, in order within it;
        `done` is called with each result as it comes."""
        by_hn: dict[str, list[Action]] = {}
        for a in actions:
            by_hn.setdefault(a.hn, []).append(a)

        def run_hn(batch: list[Action]) -> None:
            for a in batch:
                done(self.apply(a, spec_of(a.ctid), epoch))  # the caller logs the result

        return [self.pool.submit(run_hn, batch) for batch in by_hn.values()]

    def run_all(self, actions: Iterable[Action], spec_of: Callable[[int], Mapping[str, Any] | None],
                epoch: int = 0) -> list[Result]:
        """Run and wait. Each HN's batch has its own deadline (its actions times the
        per-action timeout), so a hung HN cannot hold the others' results."""
        results: list[Result] = []
        acts = list(actions)
        futures = self.submit(acts, spec_of, results.append, epoch)
        per_hn: dict[str, int] = {}
        for a in acts:
            per_hn[a.hn] = per_hn.get(a.hn, 0) + 1
        deadline = time.monotonic() + self.timeout * max(per_hn.values(), default=0) + 5
        for f in futures:
            try:
                f.result(timeout=max(deadline - time.monotonic(), 0))
            except Exception as exc:  # a timeout or a bug in one batch: the others' results still count
                log.error("an HN batch did not finish: %s", exc)
        finished = {(r.action.kind, r.action.ctid, r.action.hn) for r in results}
        for a in acts:
            if (a.kind, a.ctid, a.hn) not in finished:
                results.append(Result(a, ActionResult.FAILED, f"no result within {self.timeout:g} s per action", self.timeout))
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for hn in self.hns.values():
            hn.close()
