"""Turns of one user's inferring adds across the handles (processes) on one store.

An inferring add decides its facts on what the user's memories are as read and writes
only if that still holds (``Plan.commit``); a refused add decides again, asking the
model again. Threads of one ``Memory`` take turns per user (``KeyedLocks``), but
handles in other processes (replicas of a server, ``serve --workers``, a CLI beside
them) met each other's adds only as refusals. With sixteen handles adding one user's
facts at once on PostgreSQL, each try lost to whichever add wrote first, and an add
could lose all of its ``ADD_TRIES`` tries (1 of 240 in a CI run) and fail; with a
model deciding, every refusal cost another model call.

Here such adds take turns too, through a lock of the owner's that the store keeps for
the whole add, from its first read to its write (``Store.owner_turn``): an advisory
lock on PostgreSQL (``store.postgres.owner_turns``), a byte-range lock on a file beside
the database on SQLite (``store.sqlite.owner_turns``). Both are tried without blocking,
then tried again after a short random wait, on one lock connection (or file) per store
shared by its threads.

A turn is an aid to progress, never what keeps the memories right: the write is
conditional as before. A turn not had within ``wait_s`` (another process's model took
that long), or a lock that failed, lets the add go on without it, to be refused and
decided again if it meets another writer.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from contextos.keyed_locks import KeyedLocks
from contextos.types import Scope

log = logging.getLogger(__name__)

#: How long an inferring add waits for another handle's add of the same user's facts
#: to write before it decides without its turn. Long enough for a model's answer.
OWNER_TURN_WAIT_S = 60.0
#: The longest pause between two tries for a turn.
POLL_CAP_S = 0.02


def owner_key(namespace: str | None, owner: Scope) -> str:
    """The lock's name: the store's namespace (a PostgreSQL schema) and the whole owner
    scope (a session's, for adds that name no user or agent: other sessions' adds do
    not wait)."""
    fields = [owner.tenant, owner.user_id, owner.agent_id, owner.session_id]
    return json.dumps(["owner turn", namespace, *fields])


def waiting_key(key: str) -> str:
    """The name of the lock that adds waiting for ``key``'s turn hold shared."""
    return f"waiting {key}"


class PolledTurns:
    """``with turns.held(owner):`` runs one inferring add of ``owner`` at a time among
    the handles on one store. A backend says how to try a lock without blocking, alone
    or shared, and how to release it."""

    def __init__(self, *, namespace: str | None, wait_s: float) -> None:
        self._namespace = namespace
        self._wait_s = wait_s
        #: The store's own holders take turns first: the backend's lock is the store's
        #: (one connection, one file), so two Memory objects sharing a store would both
        #: have it, and the first to end would end the other's turn too.
        self._here = KeyedLocks()
        #: One statement (or lock call) at a time on the backend's connection (file).
        self._guard = threading.Lock()
        self._closed = False

    @contextmanager
    def held(self, owner: Scope) -> Iterator[bool]:
        """The owner's turn while the block runs; yields whether it was had."""
        key = owner_key(self._namespace, owner)
        with self._here.held(key):
            had = self._take(key)
            try:
                yield had
            finally:
                if had:
                    self._unlock(key)

    def inherited_by_fork(self) -> None:
        """In a forked child: no turns here (the store is the parent's). No lock a
        parent's thread held at the fork is taken or waited for: that thread does not
        exist here, and the child would wait for it for ever."""
        self._closed = True
        self._guard = threading.Lock()
        self._here = KeyedLocks()

    def _take(self, key: str) -> bool:
        """Try for the turn until ``wait_s`` passes. A waiting add says so (a shared
        lock of ``waiting_key``), and a new add that finds one waiting gives way once,
        for longer than a waiting add pauses between tries: without that, a process
        whose threads added one user's facts back to back handed the turn from thread to
        thread as it came free, and another process's add waited 0.5-2.7 s behind adds
        of 20 ms (up to ``wait_s`` behind a model's)."""
        deadline = time.monotonic() + self._wait_s
        waiting = waiting_key(key)
        if self._others_wait(waiting):
            time.sleep(random.uniform(POLL_CAP_S, 2 * POLL_CAP_S))
        announced = False
        pause = 0.001
        try:
            while True:
                got = self._try_lock(key)
                if got is None:
                    return False  # no turns now: go on without
                if got:
                    return True
                if time.monotonic() >= deadline:
                    log.warning("an add waited %.0f s for its turn; going on", self._wait_s)
                    return False
                announced = announced or bool(self._try_shared(waiting))
                time.sleep(random.uniform(0, pause))
                pause = min(POLL_CAP_S, pause * 2)
        finally:
            if announced:
                self._unlock_shared(waiting)

    def _others_wait(self, waiting: str) -> bool:
        """Whether an add of another handle announced that it waits (its shared lock of
        ``waiting`` keeps this exclusive try from being had)."""
        got = self._try_lock(waiting)
        if got:
            self._unlock(waiting)
        return got is False

    def _try_lock(self, key: str) -> bool | None:
        """An exclusive lock of ``key``: True, False when held elsewhere, None when
        there are no turns now."""
        raise NotImplementedError

    def _unlock(self, key: str) -> None:
        raise NotImplementedError

    def _try_shared(self, key: str) -> bool | None:
        """A shared lock of ``key``, as ``_try_lock``."""
        raise NotImplementedError

    def _unlock_shared(self, key: str) -> None:
        raise NotImplementedError
