"""The store: configured state (and, later, observed state) in SQLite."""

from .db import Store, default_path, open_store

__all__ = ["Store", "default_path", "open_store"]
