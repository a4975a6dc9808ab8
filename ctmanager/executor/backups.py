"""The manager's side of `ctbackup` (backupnode/cli.py) on the storage nodes: the
same SSH and one-JSON-line protocol as ctstorage (executor/storage.py), other
commands. A restore point is only ever read or restored from here: the storage
node's own key is what writes them, and nothing here can remove one."""

from __future__ import annotations

from typing import Any

from .storage import StorageNodes

VERIFY_TIMEOUT = 6 * 3600.0  # s: --verify-data re-reads the whole repository


class BackupNodes(StorageNodes):
    def status(self, node: str, timeout: float = 60.0) -> dict[str, Any]:
        return self._run(node, ["status"], timeout)

    def points(self, node: str, ctid: int) -> list[dict[str, Any]]:
        return list(self._run(node, ["list", str(ctid)], 300.0)["points"])

    def restore(self, node: str, ctid: int, *, at: float | None = None, archive: str | None = None,
                to: str | None = None, timeout: float = 3600.0) -> dict[str, Any]:
        """Into `to`/<CTID> on the storage node, or in place when `to` is None (the CT stopped first)."""
        which = ["--archive", archive] if archive else ["--at", f"{at:.6f}"] if at is not None else []
        where = ["--to", to] if to else ["--in-place"]
        return self._run(node, ["restore", str(ctid), *which, *where], timeout)

    def verify(self, node: str) -> dict[str, Any]:
        return self._run(node, ["verify"], VERIFY_TIMEOUT)
