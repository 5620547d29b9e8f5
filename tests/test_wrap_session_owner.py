"""A wrapped client given a Session and a user works for that Session's user, or refuses.

The context reads and writes the memories of its session's scope, and the ``user_id``
(``agent_id``, tenant) given to ``wrap`` beside a Session object was dropped without a
word (found by a review): wrapped with ``user_id="bob"``, a Session of no user
remembered bob's exchanges with no user, so ``forget(user_id="bob")`` erased none of
them; a Session of ana's sent ana's memories in bob's requests. Now a Session whose
owner differs from the one given is refused with a ScopeError; one that agrees, or is
given alone, works as before. The real ``anthropic`` SDK client against the fake.
"""

from __future__ import annotations

from typing import Any

import pytest

from contextos import Filter, Memory, Scope
from contextos.engine.session import Session
from contextos.errors import ScopeError
from contextos.providers import wrap
from contextos.testing.fake_anthropic import FakeAnthropic

pytest.importorskip("anthropic")

MODEL = "claude-sonnet-4"


def _ask(wrapped: Any, text: str) -> None:
    wrapped.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}]
    )
    wrapped.flush()


@pytest.mark.parametrize(
    ("owner", "given"),
    [
        ({}, {"user_id": "bob"}),  # a Session of no user, wrapped for bob
        ({"user_id": "ana"}, {"user_id": "bob"}),  # ana's Session, wrapped for bob
        ({"user_id": "ana", "agent_id": "x"}, {"user_id": "ana", "agent_id": "y"}),
        ({"user_id": "ana", "tenant": "acme"}, {"user_id": "ana"}),  # the memory's tenant
    ],
)
def test_a_session_of_another_owner_is_refused(
    memory: Memory,
    fake_anthropic: FakeAnthropic,
    anthropic_client: Any,
    owner: dict[str, str],
    given: dict[str, str],
) -> None:
    client = anthropic_client
    session = Session(memory.store, "chat", **owner)
    with pytest.raises(ScopeError, match="was given with it"):
        wrap(client, memory, session=session, **given)
    assert fake_anthropic.messages_requests() == []


def test_a_session_that_agrees_with_the_ids_given_works_for_its_user(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    client = anthropic_client
    memory.add("Ana's bank PIN is 4417.", user_id="ana")
    bob = wrap(client, memory, session=Session(memory.store, "b", user_id="bob"), user_id="bob")
    _ask(bob, "My bank PIN is 9999, remember it.")
    assert "4417" not in fake_anthropic.messages_requests()[-1].body.decode()
    ana = wrap(client, memory, session=Session(memory.store, "a", user_id="ana"))  # alone
    _ask(ana, "What is my bank PIN?")
    assert "4417" in fake_anthropic.messages_requests()[-1].body.decode()
    in_b = Filter(scope=Scope(tenant=memory.tenant, session_id="b"))
    assert any("9999" in r.text for r in memory.store.list(in_b))
    memory.forget(user_id="bob")  # bob's exchange was remembered as bob's: all of it goes
    assert Session(memory.store, "b", user_id="bob").turns() == []
    assert not any("9999" in r.text for r in memory.store.list(in_b))
