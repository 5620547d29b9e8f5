"""Stores and ``os.fork()``: a store opened before a fork refuses, in the child, to be
used, with an error that says what to do.

Why: SQLite connections must not cross a fork (SQLite's own rule: the child inherits
the parent's view of its locks), and a PostgreSQL pool's connections are sockets the
parent goes on using. A web server that imports the app before forking its workers
(gunicorn ``--preload``, a ``multiprocessing`` fork) used the parent's connections in
every child: a review saw acknowledged adds lost without an error (the parent's close
checkpointed the WAL under the children's writes). Reopening in the child cannot be
made safe from Python (the inherited lock state is SQLite's, in C), so each child must
open its own store; this module makes the inherited one say so at its first use,
instead of failing in a way nobody can trace.

The inherited connections are kept and never touched in the child (closing one there
would act on the parent's lock state or send on the parent's sockets).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, Protocol

from ..errors import StoreError


class ForkAware(Protocol):
    """A store that hands its connections over when the process forks."""

    def _inherited_by_fork(self) -> None: ...


#: Stores open in this process (a fork's child finds those its parent had open).
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()
#: What the children inherited: kept alive, never used or closed here.
_INHERITED: list[object] = []


def track(store: ForkAware) -> int:
    """Register ``store`` to be handed over at a fork; returns this process's id."""
    _OPEN.add(store)
    return os.getpid()


def inherit(*connections: object) -> None:
    """Keep a child's inherited connections (or pools) from ever being closed by it."""
    _INHERITED.extend(connections)


class OpenedBeforeFork:
    """Stands for a connection (or a pool) in a forked child: any use raises
    ``StoreError`` naming the store and what to do."""

    def __init__(self, where: str | Path, pid: int) -> None:
        self._message = (
            f"this store ({where}) was opened in process {pid}, before this process "
            "was forked from it, and its connections cannot be used here: open the "
            "Memory (or store) in each process after it starts (gunicorn: in a "
            "post_fork hook or on first use, not at import with --preload)"
        )

    def __getattr__(self, name: str) -> Any:
        raise StoreError(self._message)


def _after_fork_in_child() -> None:
    for store in list(_OPEN):
        store._inherited_by_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
