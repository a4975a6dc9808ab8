"""The store: the only place with SQL. Configured state (written by the CLI
through `inventory`), the reconcile loop's rows (`loop`), DNS ownership (`dns`),
the proxies' configuration (`proxies`), reads by intent (`queries`), and the
change counter readers wait on (`watch`). `db` is the SQLite backend."""

from .db import Store, default_path, open_store

__all__ = ["Store", "default_path", "open_store"]
