"""Storage backends behind one :class:`~contextos.store.base.Store` protocol.

``open_store`` is the one place a path or URL becomes a backend.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from .base import Patch, Ranked, Store

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


#: How SQLite spells a URI filename, which it parses as one where it was built to
#: (``SQLITE_USE_URI``, on in Debian's build) and takes as a plain name elsewhere.
SQLITE_URI_PREFIX = "file:"


def check_location(target: str) -> None:
    """Refuse a database location that no backend opens as written: a URL of another
    scheme (``mysql://``, ``sqlite://``: it was read as a path, "folder 'mysql:'") or a
    SQLite URI filename (``file:notes.db``).

    Why refuse ``file:``: the platform's SQLite decides how it reads one. Where it parses
    URIs, ``add --db file:notes.db`` wrote ``notes.db`` while every check looked for a
    file named ``file:notes.db``, so ``list`` and ``get`` said nothing was stored there
    (a review); where it does not, the same command made ``file:notes.db``. The path
    itself means one file everywhere.

    Raises:
        ConfigError: naming what to give instead.
    """
    if target.startswith(("postgres://", "postgresql://")):
        return
    if (url := _URL.match(target)) is not None:
        raise ConfigError(
            f"unsupported database URL scheme {url.group(1)!r}: give a SQLite file path "
            "or a postgresql:// URL"
        )
    if target.startswith(SQLITE_URI_PREFIX):
        raise ConfigError(
            f"{target!r} is a SQLite URI filename, which contextos does not take (SQLite "
            f"reads it differently on different platforms): give the file's path, e.g. "
            f"{target[len(SQLITE_URI_PREFIX) :].split('?', 1)[0] or 'memory.db'!r}"
        )


def open_store(path_or_url: str | Path) -> Store:
    """A SQLite file path, or a ``postgresql://`` URL (needs ``contextos[postgres]``);
    any other location is refused (:func:`check_location`)."""
    target = str(path_or_url)
    check_location(target)
    if target.startswith(("postgres://", "postgresql://")):
        from .postgres import PostgresStore

        return PostgresStore(target)
    from .sqlite import SQLiteStore

    return SQLiteStore(target)


__all__ = ["Patch", "Ranked", "Store", "check_location", "open_store"]
