"""A message's role is one of system, user, assistant, tool wherever it comes in.

Found by a first-hour review: ``Message("bot", "hello")`` was stored by ``Memory.add``
(metadata ``{"role": "bot"}``) and logged by ``Session.add``, and the Anthropic request
then sent that turn as a user turn. A dict with a bad role was already refused. Both
stores, real files.
"""

from __future__ import annotations

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
