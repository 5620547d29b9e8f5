"""The ``stream(...)`` helpers (Anthropic ``messages.stream``, OpenAI
``chat.completions.stream``) are as lazy wrapped as bare: nothing is logged or sent
before their ``with``.

Was (a review): the wrapped helper prepared the window when the manager was built, so
the question was logged then. A manager built and never entered (an app-side check
failed before the ``with``, a ``StreamingResponse`` whose client left first) left a
question the model never saw in the log, sent on every later call as if the user had
said it, and never remembered. The real SDK clients against the loopback fakes, a real
SQLite memory file.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anthropic")
pytest.importorskip("openai")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from sdk_support import fake_and_client, said  # noqa: E402

MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4.1-mini"}


def _stream(client: Any, provider: str, text: str) -> Any:
    """The provider's ``stream(...)`` helper for one user message (not entered)."""
    messages = [{"role": "user", "content": text}]
    if provider == "anthropic":
        return client.messages.stream(model=MODELS[provider], max_tokens=64, messages=messages)
    return client.chat.completions.stream(model=MODELS[provider], messages=messages)


def _create(client: Any, provider: str, text: str) -> None:
    messages = [{"role": "user", "content": text}]
    if provider == "anthropic":
        client.messages.create(model=MODELS[provider], max_tokens=64, messages=messages)
    else:
        client.chat.completions.create(model=MODELS[provider], messages=messages)


def _sent(fake: Any, provider: str) -> list[list[tuple[str, str]]]:
    """(role, text) of the messages of every request the fake received."""
    requests = fake.messages_requests() if provider == "anthropic" else fake.completions_requests()
    return [said(r.json()["messages"]) for r in requests]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_stream_manager_never_entered_logs_and_sends_nothing(
    tmp_path: Path, provider: str
) -> None:
    with (
        fake_and_client(provider) as (fake, sdk),
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        client = wrap(sdk, memory=memory, session="s", user_id="ana")
        manager = _stream(client, provider, "Draft A (never sent)")
        del manager
        gc.collect()
        client.flush()
        assert _sent(fake, provider) == []
        assert list(client.context.session.turns()) == []

        _create(client, provider, "Real question")
        client.flush()
        sent = _sent(fake, provider)[-1]
        assert [text for role, text in sent if role == "user"] == ["Real question"]
        logged = [t.message.content for t in client.context.session.turns()]
        assert logged == ["Real question", "You said: Real question"]
        assert not any("Draft" in r.text for r in memory.get_all(user_id="ana"))


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_stream_manager_prepares_its_window_when_entered(tmp_path: Path, provider: str) -> None:
    """Built before another call and entered after it, the stream's question is logged
    after that call's exchange, and its window holds it: the window is the one at the
    time it is sent."""
    with (
        fake_and_client(provider) as (fake, sdk),
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        client = wrap(sdk, memory=memory, session="s", user_id="ana")
        manager = _stream(client, provider, "Second")
        _create(client, provider, "First")
        with manager as stream:
            stream.until_done()
        client.flush()
        logged = [t.message.content for t in client.context.session.turns()]
        assert logged == ["First", "You said: First", "Second", "You said: Second"]
        assert [text for _, text in _sent(fake, provider)[-1]][-3:] == [
            "First",
            "You said: First",
            "Second",
        ]
        assert len(client.calls) == 2 and all(c.complete for c in client.calls)
