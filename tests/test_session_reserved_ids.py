"""Session ids with the reserved ``contextos.lock.`` prefix are no conversation.

An agent's owner lock keeps its lease in the state of a reserved session
(``contextos.agent.lock``, through the store directly). A conversation given such an
id was logged but never listed (the listings leave the prefix out), and one equal to
an owner's lock id shared its state row with the lock: the lock's give-back swapped
it to ``{}`` and erased the conversation's compaction state. ``Session`` now refuses
those ids, and with it every way in (``wrap``, HTTP); the lock works as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos import Scope, wrap
from contextos.agent.lock import lock_scope, owner_lock
from contextos.engine.session import Session
from contextos.errors import ScopeError
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.types import Message


def test_a_session_id_with_the_lock_prefix_is_refused_and_the_lock_still_works(
    store: Store,
) -> None:
    ana = Scope("default", user_id="ana")
    core = str(lock_scope(ana, "core").session_id)
    for sid in ["contextos.lock.chat-7", core]:
        with pytest.raises(ScopeError, match="reserved"):
            Session(store, sid, user_id="ana")
    assert store.turns(Scope("default", user_id="ana", session_id=core)) == []

    chat = Session(store, "contextos-lock-chat", user_id="ana")  # near, not reserved
    chat.add(Message("user", "hello"), Message("assistant", "hi"))
    chat.compact(1, "truncate", force=True)
    state = chat.state()
    with owner_lock(store, ana, "core"):
        pass
    assert store.sessions(ana) == ["contextos-lock-chat"]
    assert chat.state() == state


def test_an_id_differing_from_the_prefix_in_case_is_a_listed_conversation(
    store: Store,
) -> None:
    """``Session`` refuses exactly the prefix, so "Contextos.Lock.roadmap" is a
    conversation; the listing left out ids by LIKE, which ignores ASCII case on SQLite,
    so it was logged but never listed there, and listed on PostgreSQL (a review, s57)."""
    ana = Scope("default", user_id="ana")
    for sid in ["Contextos.Lock.roadmap", "CONTEXTOS.LOCK.x", "chat-1"]:
        Session(store, sid, user_id="ana").add(Message("user", f"hello from {sid}"))
    with owner_lock(store, ana, "core"):
        listed = store.sessions(ana)
    assert sorted(listed) == ["CONTEXTOS.LOCK.x", "Contextos.Lock.roadmap", "chat-1"]
    assert sorted(store.sessions(Scope("default"))) == sorted(listed)


def test_wrap_refuses_a_reserved_session_id(memory: Memory, anthropic_client: Any) -> None:
    with pytest.raises(ScopeError, match="reserved"):
        wrap(anthropic_client, memory, session="contextos.lock.chat-7", user_id="ana")


def test_http_refuses_a_reserved_session_id(tmp_path: Path) -> None:
    from server_support import app_client, assert_error, auth, chat, issue_key

    with app_client(tmp_path / "server.db") as c:
        h = auth(issue_key(c, "acme"))
        body = {"messages": chat("hi", "hello"), "user_id": "ana"}
        refused = c.post("/v1/sessions/contextos.lock.chat-7/turns", headers=h, json=body)
        assert "reserved" in assert_error(refused, 400)["message"]
        assert c.post("/v1/sessions/chat-7/turns", headers=h, json=body).status_code == 201
        listed = c.get("/v1/sessions", headers=h, params={"user_id": "ana"}).json()
        assert listed["results"] == ["chat-7"]
