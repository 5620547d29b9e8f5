"""The Sessions the server builds windows with, kept from one request to the next.

Why: the HTTP window routes and the MCP ``assemble_window`` tool built a new
:class:`~contextos.engine.session.Session` for every request, and a new Session reads
its log whole, however much of it a compaction had rotated out of every window: 876 ms
for a window at 40,000 turns, 958 ms after a compaction had summarised all but the
last few (a review, through the server). A Session kept here reads only the turns
logged since its last read (one indexed read) and holds only what its windows need
(``hold="window"``). It stays exact while other processes write to the log: an
erasure (a ``forget``) makes it read the log whole again, and a compaction elsewhere
moves the state it reads each time (``Session.turns``; the engine's tests compare a
long-lived Session with a fresh one after every kind of change).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine loads on the first window (``contextos mcp`` starts fast)
    from ..engine.session import Session
    from ..llm.tokens import Tokenizer
    from ..store import Store

#: How many Sessions are kept (least recently used first out). Each holds its window's
#: turns and a small print of every turn of its log (tens of bytes a turn).
MAX_LIVE_SESSIONS = 64

_Key = tuple[str, str, str | None, str | None]


class LiveSessions:
    """Sessions by tenant, session id, user and agent, least recently used evicted."""

    def __init__(self, store: Store, max_live: int = MAX_LIVE_SESSIONS) -> None:
        if max_live < 1:
            raise ValueError("max_live must be at least 1")
        self.store = store
        self.max_live = max_live
        self._lock = threading.Lock()
        self._sessions: OrderedDict[_Key, Session] = OrderedDict()

    def get(
        self,
        tenant: str,
        session_id: str,
        *,
        user_id: str | None,
        agent_id: str | None,
        tokenizer: Tokenizer,
    ) -> Session:
        """The kept Session of this scope counting with ``tokenizer``, or a new one."""
        from ..engine.session import Session

        key = (tenant, session_id, user_id, agent_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.tokenizer is tokenizer:
                self._sessions.move_to_end(key)
                return session
        session = Session(
            self.store,
            session_id,
            tenant=tenant,
            user_id=user_id,
            agent_id=agent_id,
            tokenizer=tokenizer,
            hold="window",
        )
        with self._lock:
            self._sessions[key] = session
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.max_live:
                self._sessions.popitem(last=False)
        return session

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


__all__ = ["MAX_LIVE_SESSIONS", "LiveSessions"]
