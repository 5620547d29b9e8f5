"""LLM-backed features under a misbehaving provider (review s36, ``llmfaults``).

Real SDK clients against the loopback fakes, real SQLite files, the hash embedder:

- a model fact (or an UPDATE text) holding a lone surrogate is an invalid reply, so the
  fallback runs, where ``add`` raised ``UnicodeEncodeError`` and lost its facts;
- a provider answering 200 with a body that is no reply object (an HTML page, a JSON
  string or list: a wrong ``base_url``) is a ProviderError naming it, not AttributeError;
- a summarizer's empty or all-blank summary of turns with text is refused, while the
  offline summarizer's empty summary of chit-chat is still kept;
- ``repr(Settings)`` shows no API key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from contextos import Memory
from contextos.config import Settings, load_settings
from contextos.engine.session import Session
from contextos.engine.summarize import Summary, SummaryLine
from contextos.errors import ProviderError
from contextos.memory.extract_llm import LLMExtractor
from contextos.memory.reconcile import LLMReconciler
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import AnthropicUsage
from contextos.testing.fake_http import FakeResponse
from contextos.types import Message, Turn

USAGE = AnthropicUsage(input_tokens=50, output_tokens=20)
#: Half of an emoji's surrogate pair, as a model writes it with ``\\u`` escapes.
LONE = "\ud83c"


def said(text: str) -> dict[str, str]:
    return {"role": "user", "name": "Alice", "content": text}


def texts(memory: Memory) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id="alice", limit=100))


def open_memory(tmp_path: Path) -> Memory:
    return Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)


# -- 1. a lone surrogate in a model's text is an invalid reply --------------------------


def test_a_fact_with_a_lone_surrogate_falls_back_to_the_offline_extractor(
    tmp_path: Path, fake_anthropic: Any, anthropic_client: Any
) -> None:
    from contextos.llm.clients import AnthropicLLM

    reply = json.dumps({"facts": [{"text": f"Alice loves pizza {LONE}", "type": "semantic"}]})
    fake_anthropic.enqueue_reply(reply, USAGE, model="claude-haiku-4-5")
    with open_memory(tmp_path) as m:
        m.extractor = LLMExtractor(AnthropicLLM(anthropic_client))
        wrote = m.add(said("I love pizza."), user_id="alice", infer=True)
        # The offline extractor's fact, not a UnicodeEncodeError: nothing is lost.
        assert [(r.text, r.metadata.get("extracted_by")) for r in wrote] == [
            ("Alice loves pizza.", "offline")
        ]
        assert texts(m) == ["Alice loves pizza."]
        assert len(fake_anthropic.messages_requests()) == 1


def test_an_update_text_with_a_lone_surrogate_falls_back_to_the_heuristic_decider(
    tmp_path: Path, fake_anthropic: Any, anthropic_client: Any
) -> None:
    from contextos.llm.clients import AnthropicLLM

    with open_memory(tmp_path) as m:
        m.add(said("I live in Paris."), user_id="alice", infer=True)
        m.reconciler = LLMReconciler(AnthropicLLM(anthropic_client))
        update = {"action": "UPDATE", "target": 0, "text": f"Alice lives in Berlin {LONE}"}
        fake_anthropic.enqueue_reply(json.dumps(update), USAGE, model="claude-haiku-4-5")
        wrote = m.add(said("I live in Berlin."), user_id="alice", infer=True)
        assert [(r.text, r.metadata["decided_by"]) for r in wrote] == [
            ("Alice lives in Berlin.", "heuristic")
        ]
        assert texts(m) == ["Alice lives in Berlin."]  # Paris updated, the move not lost
        assert len(fake_anthropic.messages_requests()) == 1


# -- 2. a 200 answer that is no reply object is a ProviderError -------------------------

#: What a wrong base_url answers with 200: a web page (read by the SDK as a str) and
#: JSON of another type than an object.
NOT_A_REPLY = ["<!doctype html><html><body>Welcome to nginx!</body></html>", [1, 2]]


@pytest.mark.parametrize("body", NOT_A_REPLY)
@pytest.mark.parametrize(
    ("provider", "api"), [("anthropic", "Messages API"), ("openai", "Chat Completions")]
)
def test_an_answer_that_is_no_reply_object_is_a_provider_error(
    tmp_path: Path, request: pytest.FixtureRequest, provider: str, api: str, body: object
) -> None:
    from contextos.llm.clients import AnthropicLLM, OpenAILLM

    llm = AnthropicLLM if provider == "anthropic" else OpenAILLM
    request.getfixturevalue(f"fake_{provider}").enqueue(FakeResponse(json_body=body))
    with open_memory(tmp_path) as m:
        m.extractor = LLMExtractor(llm(request.getfixturevalue(f"{provider}_client")))
        with pytest.raises(ProviderError, match=rf"{provider}: .*not a {api} .*base_url"):
            m.add(said("I live in Paris."), user_id="alice", infer=True)
        assert texts(m) == []  # nothing written


def test_the_reconciler_raises_it_as_any_provider_error(
    tmp_path: Path, fake_anthropic: Any, anthropic_client: Any
) -> None:
    # A provider error, not an invalid reply: raised whatever on_invalid says (the
    # docs: "Other errors of the model (unreachable, refused) are raised").
    from contextos.llm.clients import AnthropicLLM

    with open_memory(tmp_path) as m:
        m.add(said("I live in Paris."), user_id="alice", infer=True)  # offline
        m.reconciler = LLMReconciler(AnthropicLLM(anthropic_client))
        fake_anthropic.enqueue(FakeResponse(json_body=NOT_A_REPLY[0]))
        with pytest.raises(ProviderError, match="not a Messages API"):
            m.add(said("I live in Berlin."), user_id="alice", infer=True)
        assert texts(m) == ["Alice lives in Paris."]
        assert len(fake_anthropic.messages_requests()) == 1


# -- 3. an empty or blank summary of turns with text is refused -------------------------


class Returns:
    """A summarizer (as an LLM-backed one may answer) returning what ``make`` builds
    from the rotated turns."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def summarize(
        self, turns: Sequence[Turn], *, previous: Summary | None, max_tokens: int
    ) -> Summary:
        result: Summary = self.make(turns)
        return result


def chat(memory: Memory, sid: str, user: str, reply: str, n: int = 40) -> Session:
    s = Session(memory, sid, user_id="alice")
    for i in range(n):
        s.add(Message("user", user.format(i=i)), Message("assistant", reply.format(i=i)))
    return s


CITIES = "Turn {i}: I visited city number {i} and liked the museum there a lot."


def blank_lines(turns: Sequence[Turn]) -> Summary:
    lines = tuple(SummaryLine(" \n", t.seq, str(t.seq), 1.0, 1) for t in turns)
    return Summary(lines, turns[0].seq, turns[-1].seq)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda turns: Summary(), "empty summary that does not cover"),
        (blank_lines, "no line with text"),
    ],
    ids=["empty", "blank-lines"],
)
def test_an_empty_or_blank_summary_of_turns_with_text_is_refused(
    tmp_path: Path, make: Any, error: str
) -> None:
    with open_memory(tmp_path) as m:
        s = chat(m, "cities", CITIES, "Noted city {i}, nice.")
        before = s.state()
        with pytest.raises(ValueError, match=error):
            s.compact(300, "summarize", summarizer=Returns(make))
        assert s.state() == before  # nothing rotated: the turns stay in the window
        assert s.compact(300, "summarize").plan is not None  # the default goes on


def test_an_empty_summary_that_covers_its_turns_is_kept(tmp_path: Path) -> None:
    # A summarizer may find nothing worth a line; saying which turns it read, it is kept.
    with open_memory(tmp_path) as m:
        s = chat(m, "cities", CITIES, "Noted city {i}, nice.")
        done = s.compact(
            300, "summarize", summarizer=Returns(lambda t: Summary((), t[0].seq, t[-1].seq))
        )
        assert done.plan is not None and done.state.summary is not None
        assert done.state.summary.lines == ()


def test_the_offline_summarizer_still_folds_chit_chat_into_no_line(tmp_path: Path) -> None:
    # Greetings and fillers give the extractive summarizer no line: its empty summary
    # (which covers the turns) is no refused one.
    with open_memory(tmp_path) as m:
        s = chat(m, "chitchat", "ok {i}", "sure")
        done = s.compact(40, "summarize")
        assert done.plan is not None and done.state.start_seq > 0
        assert done.state.summary is not None and done.state.summary.lines == ()


# -- 4. the settings' repr shows no API key ---------------------------------------------


def test_the_settings_repr_masks_the_api_keys() -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-SECRET1",
        "OPENAI_API_KEY": "sk-SECRET2",
        "CONTEXTOS_DB": "postgresql://app:SECRET3@db.internal:5432/mem?sslpassword=SECRET4",
    }
    settings = load_settings(env, default_db=False)
    shown = repr(settings)
    assert "SECRET" not in shown and "SECRET" not in str(settings)
    assert "anthropic_api_key='***'" in shown and "openai_api_key='***'" in shown
    assert "model='claude-sonnet-4-6'" in shown  # the rest as a dataclass shows it
    assert "db='postgresql://***@db.internal:5432/mem?sslpassword=***'" in shown
    assert settings.anthropic_api_key == "sk-ant-api03-SECRET1"  # still there to use
    assert "anthropic_api_key=None" in repr(Settings())  # an unset key says so
