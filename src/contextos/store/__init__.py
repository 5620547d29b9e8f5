"""Storage backends behind one :class:`~contextos.store.base.Store` protocol.

``open_store`` is the one place a path or URL becomes a backend.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from .base import Patch, Ranked, Store

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(path_or_url: str | Path) -> Store:
    """A SQLite file path, or a ``postgresql://`` URL (needs ``contextos[postgres]``)."""
    target = str(path_or_url)
    if target.startswith(("postgres://", "postgresql://")):
        from .postgres import PostgresStore

        return PostgresStore(target)
    if (url := _URL.match(target)) is not None:  # was read as a path: "folder 'mysql:'"
        raise ConfigError(
            f"unsupported database URL scheme {url.group(1)!r}: give a SQLite file path "
            "or a postgresql:// URL"
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(target)


__all__ = ["Patch", "Ranked", "Store", "open_store"]
