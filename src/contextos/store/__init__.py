"""Storage backends behind one :class:`~contextos.store.base.Store` protocol.

``open_store`` is the one place a path or URL becomes a backend.
"""

from __future__ import annotations

from pathlib import Path

from .base import Patch, Ranked, Store


def open_store(path_or_url: str | Path) -> Store:
    """A SQLite file path, or a ``postgresql://`` URL (needs ``contextos[postgres]``)."""
    target = str(path_or_url)
    if target.startswith(("postgres://", "postgresql://")):
        from .postgres import PostgresStore

        return PostgresStore(target)
    from .sqlite import SQLiteStore

    return SQLiteStore(target)


__all__ = ["Patch", "Ranked", "Store", "open_store"]
