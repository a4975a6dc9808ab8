"""The store: the only place with SQL. Configured state (the rows the
operations write: `edits`, `moves`), the reconcile loop's rows (`loop`), DNS
ownership (`dns`), the proxies' configuration (`proxies`), reads by intent
(`queries`), and the change counter readers wait on (`watch`). `db` is the
backends' common interface (the Store class both implement), `sqlite` and `pg`
the two backends, `backends` picks one for a locator."""

from .backends import open_store
from .db import Store, default_path

__all__ = ["Store", "default_path", "open_store"]
