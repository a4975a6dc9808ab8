"""The manager's side of `ctstorage` (storagenode/cli.py): its commands on a
storage node over SSH (pinned host keys, as for the HNs), one JSON line back.
Failures are typed: StorageFailed (the node ran it and said why), StaleToken (a
pull or unseal whose token is older than one the node recorded for the CT: a
newer leader moves it; nothing was done) or SshError.

Fencing tokens (the move's leader epoch) go with `pull`, `seal` and `unseal`:
a sealed /data is one no HN starts its CT on (ctagent answers "sealed")."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import CtmError
from .ssh import Remote, SshSettings


class StorageFailed(CtmError):
    """The storage node ran the command and it failed (its reason, one line)."""


class StaleToken(StorageFailed):
    """The node has recorded a newer token for the CT (`recorded`) than the one
    sent: the sender no longer leads the move. Permanent: do not retry."""

    def __init__(self, message: str, recorded: int | None) -> None:
        super().__init__(message)
        self.recorded = recorded


@dataclass(frozen=True)
class DataInfo:
    path: str
    exists: bool
    bytes: int
    files: int
    free: int  # on the node's data file system


@dataclass(frozen=True)
class Seal:
    sealed: bool
    changed: bool
    token: int | None  # the seal's (None: unsealed)
    path: str  # the marker on the storage node


@dataclass(frozen=True)
class Pulled:
    bytes: int  # of the files this pass brought over
    files_transferred: int
    total_bytes: int
    files: int
    seconds: float


class StorageNodes:
    def __init__(self, addresses: dict[str, str], ssh: SshSettings, command: list[str]) -> None:
        """`addresses`: storage node hostname -> address; `command`: how ctstorage is run there."""
        self.addresses, self.ssh, self.command = dict(addresses), ssh, list(command)
        self._remotes: dict[str, Remote] = {}
        self.tool = os.path.basename(self.command[-1] if self.command else "ctstorage")

    def learn(self, addresses: dict[str, str]) -> None:
        """The DC's storage nodes as the store has them now (racks come and go)."""
        for node, address in addresses.items():
            if self.addresses.get(node) != address:
                self.addresses[node] = address
                old = self._remotes.pop(node, None)
                if old is not None:
                    old.close()

    def _run(self, node: str, args: list[str], timeout: float) -> dict[str, Any]:
        if node not in self.addresses:
            raise StorageFailed(f"{node}: no such storage node")
        remote = self._remotes.get(node)
        if remote is None:
            remote = self._remotes[node] = Remote(node, self.addresses[node], self.ssh)
        out = remote.run([*self.command, *args], timeout=timeout)
        try:
            got = json.loads(out.out.decode(errors="replace").strip().splitlines()[-1])
            if not isinstance(got, dict):
                raise ValueError("not an object")
        except (ValueError, IndexError):
            err = out.err.decode(errors="replace").strip().splitlines()
            raise StorageFailed(f"{node}: {self.tool} {args[0]}: exit {out.rc}: {(err or ['no output'])[-1][:300]}") \
                from None
        if not got.get("ok"):
            message = f"{node}: {str(got.get('error', 'failed'))[:300]}"
            if got.get("stale") is True:
                recorded = got.get("token")
                raise StaleToken(message, recorded if type(recorded) is int else None)
            raise StorageFailed(message)
        return got

    def info(self, node: str, ctid: int) -> DataInfo:
        g = self._run(node, ["info", str(ctid)], 600.0)
        return DataInfo(str(g["path"]), bool(g["exists"]), int(g["bytes"]), int(g["files"]), int(g["free"]))

    def pull(self, node: str, ctid: int, source: str, path: str, bwlimit: int, timeout: float,
             token: int) -> Pulled:
        """Mirror `source` node's `path` into `node`'s copy of CT `ctid`'s /data.
        `token`: the move's leader epoch; StaleToken if `node` saw a newer one."""
        if source not in self.addresses:
            raise StorageFailed(f"{source}: no such storage node")
        g = self._run(node, ["pull", str(ctid), "--from", self.addresses[source], "--path", path,
                             "--token", str(int(token)), "--bwlimit", str(bwlimit), "--timeout", str(int(timeout))],
                      timeout + 30)
        return Pulled(int(g["bytes"]), int(g["files_transferred"]), int(g["total_bytes"]), int(g["files"]),
                      float(g["seconds"]))

    def seal(self, node: str, ctid: int, token: int) -> Seal:
        """No CT may write `node`'s copy of CT `ctid`'s /data any more (ctagent
        refuses to start it). Idempotent; a seal keeps the highest token given."""
        g = self._run(node, ["seal", str(ctid), "--token", str(int(token))], 60.0)
        return Seal(True, bool(g["changed"]), int(g["token"]) if g.get("token") is not None else None,
                    str(g["path"]))

    def unseal(self, node: str, ctid: int, token: int) -> Seal:
        """Lift that seal (idempotent); StaleToken if it was sealed with a newer token."""
        g = self._run(node, ["unseal", str(ctid), "--token", str(int(token))], 60.0)
        return Seal(False, bool(g["changed"]), None, str(g["path"]))

    def cancel(self, node: str, ctid: int) -> bool:
        """Stop `node`'s running pull of CT `ctid` (the pull then fails)."""
        return bool(self._run(node, ["cancel", str(ctid)], 30.0)["cancelled"])

    def remove(self, node: str, ctid: int) -> bool:
        """Delete `node`'s copy of CT `ctid`'s /data, its seal and its pull token."""
        return bool(self._run(node, ["remove", str(ctid)], 600.0)["removed"])

    def close(self) -> None:
        for r in self._remotes.values():
            r.close()
        self._remotes.clear()
