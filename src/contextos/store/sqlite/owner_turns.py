"""The users' turns (``store.owner_turns``) on SQLite: a one-byte lock per owner in a
file beside the database (``<db>-turns``, as SQLite keeps ``<db>-wal`` and ``<db>-shm``),
at an offset drawn from a digest of the owner's key. The file holds no data.

The locks are Linux's open file description locks (``F_OFD_SETLK``). POSIX record locks
(``lockf``) belong to the process: two stores of one process would not exclude each
other, and closing either store's file would drop both stores' locks. A description's
locks end when it is closed, and with its process (a crash frees them). Where there are
none (macOS), or the file cannot be made (a read-only folder, an in-memory database),
adds go on without turns, refused and decided again as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
from pathlib import Path

from contextos.store.owner_turns import OWNER_TURN_WAIT_S, PolledTurns

log = logging.getLogger(__name__)

_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
#: ``struct flock`` on Linux: l_type, l_whence, l_start, l_len, l_pid, padded to 32 bytes.
_FLOCK = "hhqqi4x"


def _offset(key: str) -> int:
    """The byte of ``key``'s lock: 7 bytes of a digest (two owners share one only by a
    collision of those, and then only wait for each other)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=7).digest(), "big")


class FileTurns(PolledTurns):
    """The users' turns among the handles on one SQLite file."""

    def __init__(self, db_path: str, *, wait_s: float = OWNER_TURN_WAIT_S) -> None:
        super().__init__(namespace=None, wait_s=wait_s)
        # Beside the file itself, as SQLite keeps -wal: a database named through a link
        # and by its own path is one database.
        self._db = None if db_path in ("", ":memory:") else Path(os.path.realpath(db_path))
        self._path = None if self._db is None else Path(f"{self._db}-turns")
        self._fd: int | None = None
        self._closed = _OFD_SETLK is None or self._path is None

    def close(self) -> None:
        """Close the file (every turn it holds ends with it)."""
        with self._guard:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def inherited_by_fork(self) -> None:
        """In a forked child: its copy of the descriptor is closed. The description's
        locks stay the parent's while the parent has it open, and a child that kept it
        would keep the parent's turns held after the parent died."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        super().inherited_by_fork()

    def _try_lock(self, key: str) -> bool | None:
        return self._set(key, fcntl.F_WRLCK)

    def _unlock(self, key: str) -> None:
        self._set(key, fcntl.F_UNLCK)

    def _try_shared(self, key: str) -> bool | None:
        return self._set(key, fcntl.F_RDLCK)

    def _unlock_shared(self, key: str) -> None:
        self._set(key, fcntl.F_UNLCK)

    def _open(self) -> int:
        """The lock file, made with the database's own permissions (as SQLite makes
        -wal): another account that may write the database may lock in it too."""
        assert self._db is not None and self._path is not None
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with contextlib.suppress(OSError):  # not the file's owner: its mode stands
            os.fchmod(fd, os.stat(self._db).st_mode & 0o666)
        return fd

    def _set(self, key: str, kind: int) -> bool | None:
        """Set the lock of ``key`` to ``kind``; False when another description holds it,
        None when there are no turns (closed, or the file failed: adds go on without)."""
        with self._guard:
            if self._closed or _OFD_SETLK is None or self._path is None:
                return None
            try:
                if self._fd is None:
                    self._fd = self._open()
            except OSError as exc:  # a read-only folder, a full disk
                log.warning("no turns for inferring adds on %s: %s", self._path, exc)
                self._closed = True
                return None
            lock = struct.pack(_FLOCK, kind, os.SEEK_SET, _offset(key), 1, 0)
            try:
                fcntl.fcntl(self._fd, _OFD_SETLK, lock)
            except (BlockingIOError, PermissionError):
                return False  # EAGAIN / EACCES: held by another description
            except OSError as exc:
                log.warning("no turns for inferring adds on %s: %s", self._path, exc)
                self._closed = True
                return None
            except BaseException:
                # A Ctrl-C as the lock was set: whether it is held is unknown, and one
                # left held would keep other processes' adds waiting. Closing the file
                # ends this store's locks; the next try opens it again.
                os.close(self._fd)
                self._fd = None
                raise
            return True
