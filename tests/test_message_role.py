"""A message's role is one of system, user, assistant, tool wherever it comes in.

Found by a first-hour review: ``Message("bot", "hello")`` was stored by ``Memory.add``
(metadata ``{"role": "bot"}``) and logged by ``Session.add``, and the Anthropic request
then sent that turn as a user turn. A dict with a bad role was already refused. Both
stores, real files.
"""

from __future__ import annotations

import sqlite3

import pytest

from contextos import Filter, Memory, Scope
from contextos.engine.session import Session
from contextos.store.base import Store
from contextos.types import Message


def test_memory_add_refuses_a_message_of_an_unknown_role(memory: Memory) -> None:
    for bad in (Message("bot", "hello"), {"role": "bot", "content": "hello"}):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown role 'bot'"):
            memory.add([Message("user", "fine"), bad], user_id="ana")
    assert memory.store.list(Filter(scope=Scope(tenant=memory.tenant, user_id="ana"))) == []


def test_every_append_to_a_log_refuses_an_unknown_role(store: Store) -> None:
    session = Session(store, "s", user_id="ana")
    with pytest.raises(ValueError, match="unknown role 'bot'"):
        session.add(Message("user", "fine"), Message("bot", "hello"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown role 'Assistant'"):
        store.append_turns(session.scope, [Message("Assistant", "hi")], [3])  # type: ignore[arg-type]
    assert store.turns(session.scope) == []
    session.add(*(Message(role, "ok") for role in ("system", "user", "assistant")))  # type: ignore[arg-type]
    assert [t.message.role for t in store.turns(session.scope)] == ["system", "user", "assistant"]


def test_a_turn_logged_with_another_role_before_the_check_is_still_offloaded(
    memory: Memory,
) -> None:
    """Logs written before roles were checked may hold one ("bot"); offload compaction
    passes logged turns through ``memory.add``, which refused it: every compaction of
    that session failed (found by a review). It is archived as the user's, as the
    providers' requests sent it."""
    session = Session(memory, "old", user_id="ana")
    session.add(*(Message("user", f"turn {i} about the garden " * 8) for i in range(12)))
    path = memory.store.path  # type: ignore[attr-defined]
    with sqlite3.connect(path) as con:  # as an older contextos stored it
        con.execute("UPDATE turns SET role = 'bot' WHERE seq = 1")
    old = Session(memory, "old", user_id="ana")
    assert old.turns()[1].message.role == "bot"
    result = old.compact(200, "offload", memory=memory, force=True)
    assert result.plan is not None and result.archived > 1
    archived = memory.store.list(Filter(scope=Scope(tenant=memory.tenant, user_id="ana")))
    assert any(r.text.startswith("turn 1 about") for r in archived)
    assert {r.metadata.get("role") for r in archived} <= {"user"}
