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

Nor may the child open a new connection to a SQLite file its parent had open at the
fork (:func:`check_not_inherited`). SQLite keeps one table of a process's locks per
file, in C, and the child inherits the parent's: a new connection there found its
locks already "held" and took none. Another process then believed itself the file's
last user, and its close deleted the -wal under the child's writes: a review lost the
whole database (908 acknowledged adds, then "file is not a database") to a plain
``contextos status`` run while a child wrote, after the parent closed its Memory.
Such an open is refused, with what to do; a file the parent closed before the fork
(its lock table then freed) and any other file open as usual.
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
#: SQLite files (device, inode) open in an ancestor when it forked this process, by
#: path as opened there (:func:`check_not_inherited`).
_INHERITED_FILES: dict[tuple[int, int], str] = {}


def track(store: ForkAware) -> int:
    """Register ``store`` to be handed over at a fork; returns this process's id."""
    _OPEN.add(store)
    return os.getpid()


def inherit(*connections: object) -> None:
    """Keep a child's inherited connections (or pools) from ever being closed by it."""
    _INHERITED.extend(connections)


def inherit_file(path: str | Path) -> None:
    """In a forked child: the SQLite file at ``path`` was open in the parent at the fork
    (its lock table is inherited); no new connection to it may be opened here."""
    try:
        info = os.stat(path)
    except OSError:
        return  # removed meanwhile: a new file at that path is another file
    _INHERITED_FILES[(info.st_dev, info.st_ino)] = str(path)


def check_not_inherited(path: str | Path) -> None:
    """Raise ``StoreError`` if the SQLite file at ``path`` was open in an ancestor of
    this process when it forked (see the module docstring); else nothing."""
    if not _INHERITED_FILES:
        return
    try:
        info = os.stat(path)
    except OSError:
        return
    if (info.st_dev, info.st_ino) in _INHERITED_FILES:
        raise StoreError(
            f"the database {path} was open in the process this one was forked from, and "
            "SQLite cannot lock a file here whose locks it inherited (another process could "
            "delete its -wal under this one's writes, and the database be lost): open it "
            "only in processes that did not inherit it open (open it after forking, never "
            "before; gunicorn --preload: on first use in each worker, not at import), or "
            "start workers with multiprocessing's 'spawn' or 'forkserver' method"
        )


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
