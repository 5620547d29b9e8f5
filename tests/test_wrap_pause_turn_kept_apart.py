"""A ``pause_turn`` continuation the app keeps as an assistant message of its own.

With a server tool (``web_search``) the API may stop a long turn with ``stop_reason:
"pause_turn"``; the app sends the paused turn back to let the server go on. contextos
logs the paused turn and the reply that goes on from it as one assistant turn. An app
that then kept the continuation as its own assistant message (the API accepts
consecutive assistant messages, and combines them into one turn) made its next request
a branch: the model's answer was deleted from long-term memory and the exchange was
logged a second time (a review). The real ``anthropic`` SDK against the loopback fake, a
real SQLite memory file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos.engine.conversation import REDO_KEY, conversation
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

anthropic = pytest.importorskip("anthropic")

from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_http import FakeResponse  # noqa: E402

MODEL = "claude-sonnet-4-5"
TOOLS = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
QUESTION = "What's the weather in Paris?"
ANSWER = "Paris is sunny and 24 degrees today."


def _search(n: int) -> list[dict[str, Any]]:
    """A search the server ran before it paused the turn."""
    return [
        {
            "type": "server_tool_use",
            "id": f"srvtoolu_{n}",
            "name": "web_search",
            "input": {"query": f"weather paris {n}"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": f"srvtoolu_{n}",
            "content": [
                {
                    "type": "web_search_result",
                    "url": f"https://weather.example/{n}",
                    "title": "Weather",
                    "encrypted_content": "abc",
                }
            ],
        },
    ]


def _message(content: list[dict[str, Any]], stop: str, n: int) -> FakeResponse:
    body = {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    return FakeResponse(json_body=body)


def _logged(wrapped: Any) -> list[tuple[str, str]]:
    """The conversation as the log holds it."""
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in conversation(_turns(wrapped))]


def _turns(wrapped: Any) -> list[Any]:
    return list(wrapped.context.session.turns())


@pytest.mark.parametrize("pauses", [1, 2])
def test_a_continuation_kept_apart_is_the_logged_answer(tmp_path: Path, pauses: int) -> None:
    """The app keeps each paused part and the final reply as messages of their own, as
    it got them, then asks on: the log holds the exchange once, the model's answer stays
    remembered, and the next request sends it once."""
    parts = [[{"type": "text", "text": f"Searching ({n})."}, *_search(n)] for n in range(pauses)]
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as raw,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        fake.enqueue(
            *[_message(part, "pause_turn", n) for n, part in enumerate(parts)],
            _message([{"type": "text", "text": ANSWER}], "end_turn", pauses),
            _message([{"type": "text", "text": "You're welcome."}], "end_turn", pauses + 1),
        )
        wrapped = wrap(raw, memory=memory, session="s", user_id="ana")
        history: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
        for _ in range(pauses + 1):
            reply = wrapped.messages.create(
                model=MODEL, max_tokens=100, tools=TOOLS, messages=history
            )
            history.append({"role": "assistant", "content": reply.content})  # kept apart
        assert reply.stop_reason == "end_turn"
        said = "".join(f"Searching ({n})." for n in range(pauses)) + ANSWER
        assert _logged(wrapped) == [("user", QUESTION), ("assistant", said)]
        history.append({"role": "user", "content": "thanks"})
        before = len(_turns(wrapped))
        wrapped.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=history)
        wrapped.flush()
        new = [t.message for t in _turns(wrapped)[before:]]
        assert [(m.role, REDO_KEY in m.metadata) for m in new] == [
            ("user", False),
            ("assistant", False),
        ]  # the question and its answer, no branch
        assert _logged(wrapped) == [
            ("user", QUESTION),
            ("assistant", said),
            ("user", "thanks"),
            ("assistant", "You're welcome."),
        ]
        remembered = [r.text for r in memory.get_all(user_id="ana")]
        assert said in remembered
        sent = fake.messages_requests()[-1].json()["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
