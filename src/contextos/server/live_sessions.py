"""The Sessions the server builds windows with, kept from one request to the next.

Why: the HTTP window routes and the MCP ``assemble_window`` tool built a new
:class:`~contextos.engine.session.Session` for every request, and a new Session reads
its log whole, however much of it a compaction had rotated out of every window: 876 ms
for a window at 40,000 turns, 958 ms after a compaction had summarised all but the
last few (a review, through the server). A Session kept here reads only the turns
logged since its last read (one indexed read) and holds only what its windows need
(``hold="window"``) once its log is compacted; an uncompacted log is held whole, so
what they hold is bounded in bytes. It stays exact while other processes write to the log: an
erasure (a ``forget``) makes it read the log whole again, and a compaction elsewhere
moves the state it reads each time (``Session.turns``; the engine's tests compare a
long-lived Session with a fresh one after every kind of change).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine loads on the first window (``contextos mcp`` starts fast)
    from ..engine.session import Session
    from ..llm.tokens import Tokenizer
    from ..store import Store

#: How many Sessions are kept (least recently used first out), and how many bytes
#: they may hold together (``Session.held_size``: a compacted session holds about its
#: window; an uncompacted one its whole log). A Session holding more than
#: ``MAX_SESSION_BYTES`` alone is not kept: its log is read again on its next window, as
#: before Sessions were kept. Why a byte bound: by count alone, 64 uncompacted logs of
#: 146 MiB of text took a server from 120 to 267 MiB and kept it there (a review). Why
#: 24 MiB for one: an uncompacted log of 40,000 turns of 50 characters holds about
#: 20 MiB as ``held_size`` counts it; at 8 MiB no log past ~16,700 such turns was kept,
#: and each of its windows read it whole again (0.6-1.3 s at 20,000 turns, where the
#: docs promised 0.12-0.2 s at 40,000: a review).
MAX_LIVE_SESSIONS = 64
MAX_LIVE_BYTES = 64 * 2**20
MAX_SESSION_BYTES = 24 * 2**20

_Key = tuple[str, str, str | None, str | None]


class LiveSessions:
    """Sessions by tenant, session id, user and agent, least recently used evicted,
    within a count and a byte bound."""

    def __init__(
        self,
        store: Store,
        max_live: int = MAX_LIVE_SESSIONS,
        max_bytes: int = MAX_LIVE_BYTES,
        max_session_bytes: int = MAX_SESSION_BYTES,
    ) -> None:
        if max_live < 1 or max_bytes < 1 or max_session_bytes < 1:
            raise ValueError("max_live, max_bytes and max_session_bytes must be at least 1")
        self.store = store
        self.max_live = max_live
        self.max_bytes = max_bytes
        self.max_session_bytes = max_session_bytes
        self._lock = threading.Lock()
        #: Each kept Session with what it held after its last use.
        self._sessions: OrderedDict[_Key, tuple[Session, int]] = OrderedDict()
        self._held = 0

    @contextmanager
    def use(
        self,
        tenant: str,
        session_id: str,
        *,
        user_id: str | None,
        agent_id: str | None,
        tokenizer: Tokenizer,
    ) -> Iterator[Session]:
        """The kept Session of this scope counting with ``tokenizer`` (taken out while in
        use), or a new one; kept again afterwards if it holds little enough."""
        from ..engine.session import Session

        key = (tenant, session_id, user_id, agent_id)
        with self._lock:
            kept = self._sessions.pop(key, None)
            if kept is not None:
                self._held -= kept[1]
        session = kept[0] if kept is not None and kept[0].tokenizer is tokenizer else None
        if session is None:
            session = Session(
                self.store,
                session_id,
                tenant=tenant,
                user_id=user_id,
                agent_id=agent_id,
                tokenizer=tokenizer,
                hold="window",
            )
        yield session
        self._keep(key, session)

    def _keep(self, key: _Key, session: Session) -> None:
        size = session.held_size()
        if size > self.max_session_bytes:
            return
        with self._lock:
            old = self._sessions.pop(key, None)  # another request's, kept meanwhile
            if old is not None:
                self._held -= old[1]
            self._sessions[key] = (session, size)
            self._held += size
            while len(self._sessions) > self.max_live or self._held > self.max_bytes:
                _, (_, dropped) = self._sessions.popitem(last=False)
                self._held -= dropped

    @property
    def held(self) -> int:
        """What the kept Sessions held after their last use, in bytes (about)."""
        with self._lock:
            return self._held

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._held = 0


__all__ = ["MAX_LIVE_BYTES", "MAX_LIVE_SESSIONS", "MAX_SESSION_BYTES", "LiveSessions"]
