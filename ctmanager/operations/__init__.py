"""Configuration edits as check-then-act operations (Ganeti's logical units:
CheckPrereq, then Exec), and the domain rules they share: placement, addresses,
route targets, realms, tombstones (base.py says how an operation runs).

`store/` reads and writes rows; what an edit may do and which rows it writes is
decided here. The CLI and the managers call operations; the store never does.

- base.py: Context, Operation, run; the guards of tenants under a move
- rules.py: the shared rules, one copy each
- racks.py, cts.py, tenants.py, moves.py: the operations
- inventory.py: the edits by name (Inventory), and a store's init from a template
"""

from .base import Context, Operation, run

__all__ = ["Context", "Operation", "run"]
