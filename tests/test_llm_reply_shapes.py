"""A 200 reply whose text is not a plain string (review s41, ``llmfeatures`` finding 1).

Some OpenAI-compatible servers (Mistral's reasoning models, some proxies) send
``message.content`` as a list of parts, ``[{"type": "text", "text": ...}]``, and the
SDK passes it through; an Anthropic-compatible one may send a ``text`` block with no
text or a number as its text. Read as the reply's text, it raised AttributeError
out of ``Memory.add(infer=True)``, and in the chat shape (``SessionContext.infer``,
as ``contextos chat`` runs) the exchange was lost from memory and the user's next
message failed, unlogged. Now the reply's text is joined from its text parts, a value
of any other type reads as no text, and a reply that is not a JSON document (whatever
an ``LLM`` returned) is an invalid reply: the offline extractor takes over.

The real SDK clients against the loopback fakes, real SQLite files, the hash embedder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

from contextos import Memory  # noqa: E402
from contextos.engine.context import SessionContext  # noqa: E402
from contextos.llm import BaseLLM, LLMCall, parse_json_reply  # noqa: E402
from contextos.llm.clients import AnthropicLLM, OpenAILLM  # noqa: E402
from contextos.memory.extract_llm import LLMExtractor  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_http import FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402

GPT = "gpt-4.1-mini"
FACTS = json.dumps({"facts": [{"text": "Ana is allergic to peanuts", "type": "semantic"}]})
SAID = "I am allergic to peanuts."
#: A reasoning model's reply (Mistral's shape): its thinking part, then its answer.
THINKING = {"type": "thinking", "thinking": [{"type": "text", "text": "The user said..."}]}


def said(text: str = SAID) -> dict[str, str]:
    return {"role": "user", "name": "Ana", "content": text}


def completion(content: Any) -> FakeResponse:
    """A ``chat.completion`` whose message content is ``content``, as given."""
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "finish_reason": "stop", "message": message}
    body = {"id": "chatcmpl-p", "object": "chat.completion", "created": 1, "model": GPT}
    return FakeResponse(
        json_body={**body, "choices": [choice], "usage": OpenAIUsage(50, 20).wire()}
    )


def anthropic_message(content: Any) -> FakeResponse:
    """A Messages API answer whose content is ``content``, as given."""
    body = {"id": "msg_p", "type": "message", "role": "assistant", "model": "claude-haiku-4-5"}
    usage = {"input_tokens": 50, "output_tokens": 20}
    return FakeResponse(
        json_body={**body, "content": content, "stop_reason": "end_turn", "usage": usage}
    )


def stored(memory: Memory) -> list[tuple[str, Any]]:
    return sorted(
        (r.text, r.metadata.get("extracted_by")) for r in memory.get_all(user_id="ana", limit=50)
    )


def open_memory(tmp_path: Path, **kw: Any) -> Memory:
    return Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False, **kw)


# -- the reply's text ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": FACTS}],
        [THINKING, {"type": "text", "text": FACTS}, {"type": "image_url", "image_url": {}}],
    ],
    ids=["text-part", "among-other-parts"],
)
def test_a_reply_given_as_text_parts_is_read_as_their_text(
    tmp_path: Path, fake_openai: Any, openai_client: Any, content: Any
) -> None:
    fake_openai.enqueue(completion(content))
    llm = OpenAILLM(openai_client)
    with open_memory(tmp_path) as m:
        wrote = m.add(said(), user_id="ana", infer=True, extractor=LLMExtractor(llm))
        assert [(r.text, r.metadata["extracted_by"]) for r in wrote] == [
            ("Ana is allergic to peanuts", "extract@2")
        ]
    assert llm.calls.total().output_tokens == 20  # paid for, and counted


OPENAI_NO_TEXT = {
    "number": 42,
    "object": {"facts": []},
    "parts-without-text": [THINKING, {"type": "text"}, {"type": "text", "text": 5}],
    "odd-parts": [None, 7, "x", {"type": ["text"]}],
}
ANTHROPIC_NO_TEXT = {
    "text-block-without-text": [{"type": "text"}],
    "text-block-with-a-number": [{"type": "text", "text": 5}],
    "content-a-number": 5,
}


@pytest.mark.parametrize(
    ("provider", "content"),
    [("openai", c) for c in OPENAI_NO_TEXT.values()]
    + [("anthropic", c) for c in ANTHROPIC_NO_TEXT.values()],
    ids=[f"openai-{k}" for k in OPENAI_NO_TEXT] + [f"anthropic-{k}" for k in ANTHROPIC_NO_TEXT],
)
def test_a_reply_with_no_readable_text_falls_back_to_the_offline_extractor(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    content: Any,
) -> None:
    fake = request.getfixturevalue(f"fake_{provider}")
    sdk = request.getfixturevalue(f"{provider}_client")
    fake.enqueue(completion(content) if provider == "openai" else anthropic_message(content))
    llm = OpenAILLM(sdk) if provider == "openai" else AnthropicLLM(sdk)
    with open_memory(tmp_path) as m, caplog.at_level(logging.WARNING):
        wrote = m.add(said(), user_id="ana", infer=True, extractor=LLMExtractor(llm))
        assert [r.metadata["extracted_by"] for r in wrote] == ["offline"]
        assert any("peanuts" in r.text for r in wrote)
    assert "invalid extraction reply" in caplog.text
    assert llm.calls.total().output_tokens == 20


class Returns(BaseLLM):
    """An ``LLM`` of the caller's own that returns ``value`` whatever it is asked."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def reply(self, call: LLMCall) -> str:
        result: str = self.value
        return result


@pytest.mark.parametrize("value", [None, [FACTS], {"facts": []}, 3, b"{}"], ids=repr)
def test_whatever_an_llm_returns_that_is_no_text_is_an_invalid_reply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: Any
) -> None:
    with pytest.raises(ValueError, match="not text"):
        parse_json_reply(value)
    with open_memory(tmp_path) as m, caplog.at_level(logging.WARNING):
        wrote = m.add(said(), user_id="ana", infer=True, extractor=LLMExtractor(Returns(value)))
        assert [r.metadata["extracted_by"] for r in wrote] == ["offline"]
    assert "invalid extraction reply" in caplog.text


# -- the wrapped client -------------------------------------------------------------


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


def _parts_stream(pieces: list[Any]) -> FakeResponse:
    """A streamed completion whose deltas carry ``pieces`` as their content, as given."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> SSEEvent:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": GPT}
        return SSEEvent(json.dumps({**body, "choices": [choice]}))

    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": GPT}
    usage = {**usage, "choices": [], "usage": OpenAIUsage(50, 20).wire()}
    return FakeResponse(
        events=[
            chunk({"role": "assistant", "content": ""}),
            *(chunk({"content": piece}) for piece in pieces),
            chunk({}, "stop"),
            SSEEvent(json.dumps(usage)),
            SSEEvent("[DONE]"),
        ]
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_wrapped_client_logs_a_reply_of_parts_as_its_text_and_goes_on(
    tmp_path: Path, stream: bool
) -> None:
    """Before: the list was logged as the reply's content, and the next call raised
    ``TypeError: 'list' object is not an instance of 'str'`` (streamed: the join of the
    deltas failed)."""
    parts = [THINKING, {"type": "text", "text": "Hello Ana, "}, {"type": "text", "text": "noted."}]
    with (
        FakeOpenAI() as fake,
        open_memory(tmp_path) as m,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        if stream:
            fake.enqueue(_parts_stream([parts[1:2], [parts[2]], 7]))
        else:
            fake.enqueue(completion(parts))
        client = wrap(sdk, memory=m, session="s1", user_id="ana")
        history: list[Any] = [{"role": "user", "content": SAID}]
        reply = client.chat.completions.create(model=GPT, messages=history, stream=stream)
        if stream:
            for _ in reply:
                pass
            history.append({"role": "assistant", "content": "Hello Ana, noted."})
        else:  # the app sends the reply back as it came, its parts included
            history.append({"role": "assistant", "content": reply.choices[0].message.content})
        expected = "Hello Ana, noted." if stream else "Hello Ana, \nnoted."
        assert client.calls[0].reply.content == expected
        history.append({"role": "user", "content": "What should I cook tonight?"})
        client.chat.completions.create(model=GPT, messages=history)  # before: TypeError
        assert _log(client) == [
            ("user", SAID),
            ("assistant", expected),  # once: the echo reads as the reply was logged
            ("user", "What should I cook tonight?"),
            ("assistant", "You said: What should I cook tonight?"),
        ]


@pytest.mark.parametrize(
    ("content", "extracted_by"),
    [([{"type": "text", "text": FACTS}], "extract@2"), (42, "offline")],
    ids=["text-parts", "a-number"],
)
def test_an_inferring_chat_remembers_the_exchange_whatever_its_extracting_model_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: Any, extracted_by: str
) -> None:
    """The chat shape (``SessionContext.infer``, as ``contextos chat`` runs): before, the
    extraction's AttributeError lost "I am allergic to peanuts" from memory, and the
    user's next, unrelated message failed and was not logged."""
    with (
        FakeOpenAI() as chat_server,
        FakeOpenAI() as extract_server,
        openai.OpenAI(base_url=extract_server.base_url, api_key="t", max_retries=0) as llm_sdk,
        openai.OpenAI(base_url=chat_server.base_url, api_key="t", max_retries=0) as chat_sdk,
        open_memory(tmp_path, extractor=LLMExtractor(OpenAILLM(llm_sdk))) as m,
        caplog.at_level(logging.WARNING),
    ):
        for _ in range(2):
            extract_server.enqueue(completion(content))
        ctx = SessionContext(memory=m, session="chat-1", user_id="ana")
        ctx.infer = True
        ctx.remember_replies = False
        client = wrap(chat_sdk, context=ctx)
        for text in (SAID, "What should I cook tonight?"):
            reply = client.chat.completions.create(
                model=GPT, messages=[{"role": "user", "content": text}]
            )
            answer = reply.choices[0].message.content  # the fake echoes what it was sent
            assert answer.startswith("You said: ") and answer.endswith(text)
        ctx.flush()
        facts = stored(m)
        assert {by for _, by in facts} == {extracted_by}
        assert any("peanuts" in text for text, _ in facts)
        logged = [t.message.content for t in ctx.session.turns()]
        assert logged[-2:] == ["What should I cook tonight?", answer]  # before: not logged
        assert len(extract_server.completions_requests()) == 2
    assert ("invalid extraction reply" in caplog.text) == (extracted_by == "offline")


@pytest.mark.parametrize(
    ("choices", "extracted_by"),
    [
        ({"0": {"message": {"content": FACTS}}}, "offline"),
        (5, "offline"),
        ([], "offline"),
        ([{"index": 0, "finish_reason": ["stop"], "message": {"content": FACTS}}], "extract@2"),
    ],
    ids=["an-object", "a-number", "none", "a-list-as-finish-reason"],
)
def test_choices_of_the_wrong_shape_are_no_reply_not_a_crash(
    tmp_path: Path, fake_openai: Any, openai_client: Any, choices: Any, extracted_by: str
) -> None:
    # Before: KeyError / TypeError from reading the stop reason, out of ``Memory.add``.
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": GPT}
    usage = OpenAIUsage(50, 20).wire()
    fake_openai.enqueue(FakeResponse(json_body={**body, "choices": choices, "usage": usage}))
    with open_memory(tmp_path) as m:
        llm = LLMExtractor(OpenAILLM(openai_client))
        wrote = m.add(said(), user_id="ana", infer=True, extractor=llm)
        assert [r.metadata["extracted_by"] for r in wrote] == [extracted_by]
