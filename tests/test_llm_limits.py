"""The LLM steps' limits, through the real SDK clients against the local fake servers: a
provider that never answers (bounded timeout), a reply cut at the output cap
(ReplyTruncated, the extractor's fallback) and an add too long for one request (the
extractor's chunks)."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from contextos.config import load_settings
from contextos.errors import ConfigError, ProviderError, ReplyTruncated
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.memory.extract import OfflineExtractor
from contextos.memory.extract_llm import EXTRACT_CHUNK_TOKENS, LLMExtractor, split_text
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic
from contextos.testing.fake_http import FakeHTTPServer, FakeResponse, RecordedRequest
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage
from contextos.testing.llm import ScriptedLLM, turns_in
from contextos.types import Message

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

T = datetime(2024, 1, 1, tzinfo=UTC)
VENDORS = ("anthropic", "openai")


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    yield m
    m.close()


def _fake(vendor: str) -> FakeAnthropic | FakeOpenAI:
    return FakeAnthropic() if vendor == "anthropic" else FakeOpenAI()


def _clients() -> Any:
    """``contextos.llm.clients``, imported when a test runs, as the other provider tests
    do (the SDKs are optional extras)."""
    from contextos.llm import clients

    return clients


def _llm(vendor: str, fake: FakeHTTPServer) -> Any:
    """The shipped client on the vendor's real SDK, against ``fake``, no retries."""
    clients = _clients()
    if vendor == "anthropic":
        client = anthropic.Anthropic(base_url=fake.origin, api_key="k", max_retries=0)
        return clients.AnthropicLLM(client, model="claude-haiku-4-5")
    client = openai.OpenAI(base_url=fake.origin + "/v1", api_key="k", max_retries=0)
    return clients.OpenAILLM(client, model="gpt-4.1-mini")


def _enqueue(fake: Any, vendor: str, text: str, *, cut: bool) -> None:
    """Answer the next request with ``text``; ``cut``: stopped at the output cap."""
    if vendor == "anthropic":
        stop = "max_tokens" if cut else "end_turn"
        fake.enqueue_reply(text, AnthropicUsage(100, 2048), stop_reason=stop)
    else:
        finish = "length" if cut else "stop"
        fake.enqueue_reply(text, OpenAIUsage(100, 2048), finish_reason=finish)


def _requests(fake: FakeHTTPServer) -> list[RecordedRequest]:
    return fake.requests_to("/v1/messages") + fake.requests_to("/v1/chat/completions")


def _conversation(request: RecordedRequest) -> str:
    """The conversation lines an extraction request sent."""
    content = request.json()["messages"][-1]["content"]
    return str(content.split("one turn a line):\n", 1)[1].rsplit("\n\nYour JSON:", 1)[0])


# -- a provider that accepts the connection and never answers -----------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_client_from_settings_gives_up_on_a_provider_that_never_answers(
    vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: llm_from_settings's client waited the SDK's 600 s per attempt, 3 attempts:
    a hung provider blocked an add for about 30 minutes."""
    with _fake(vendor) as fake:
        if vendor == "anthropic":
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.origin)  # the SDK reads it
            env = {"ANTHROPIC_API_KEY": "k"}
        else:
            env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": fake.origin + "/v1"}
        settings = load_settings(env=env)
        clients = _clients()
        default = clients.llm_from_settings(settings)
        assert default.client.timeout == clients.LLM_TIMEOUT_S == 60
        default.client.close()
        llm = clients.llm_from_settings(
            settings, timeout=0.3
        )  # built as above, the timeout shortened
        assert llm.client.max_retries == 2  # the SDK's retries stay
        fake.enqueue(*[FakeResponse(cut="stall", stall_seconds=30)] * 3)
        outcome: dict[str, BaseException] = {}

        def call() -> None:
            try:
                llm.complete("sys", [Message("user", "hi")])
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome["error"] = exc

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), "complete() still blocked on a provider that never answers"
        assert isinstance(outcome.get("error"), ProviderError)
        assert len(_requests(fake)) == 3  # the first try and the SDK's two retries
        llm.client.close()


def test_a_client_you_build_keeps_its_own_timeout(fake_anthropic: FakeAnthropic) -> None:
    client = anthropic.Anthropic(base_url=fake_anthropic.origin, api_key="k", timeout=900.0)
    assert _clients().AnthropicLLM(client).client.timeout == 900.0
    client.close()


# -- a reply cut at the output cap ----------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_reply_cut_at_the_output_cap_raises_reply_truncated(vendor: str) -> None:
    with _fake(vendor) as fake:
        llm = _llm(vendor, fake)
        _enqueue(fake, vendor, '{"facts": []}', cut=True)
        with pytest.raises(ReplyTruncated, match="output limit"):
            llm.complete("sys", [Message("user", "hi")])
        assert len(llm.calls) == 1  # paid for: logged
        _enqueue(fake, vendor, '{"facts": []}', cut=False)
        assert llm.complete("sys", [Message("user", "hi")]) == '{"facts": []}'
        llm.client.close()


def _turns(n: int) -> list[dict[str, Any]]:
    places = ["Lisbon", "Oslo", "Kyoto", "Lima", "Accra", "Hanoi", "Quito", "Tunis"]
    return [
        {
            "role": "user",
            "name": "Alice",
            "dia_id": f"D{i}",
            "content": f"I flew to {places[i % len(places)]} on trip number {i} in 2023.",
        }
        for i in range(n)
    ]


def _messages(turns: list[dict[str, Any]]) -> list[Message]:
    return [Message("user", t["content"], name="Alice", metadata=t) for t in turns]


def _facts_of(lines: Any) -> list[dict[str, Any]]:
    """The fake model's facts: one per turn line sent."""
    out = []
    for line in lines:
        place, n = re.findall(r"flew to (\w+) on trip number (\d+)", line.text)[0]
        text = f"Alice flew to {place} on trip {n}."
        out.append({"text": text, "type": "episodic", "source": line.tid})
    return out


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("on_invalid", ["fallback", "raise"])
def test_a_cut_extraction_reply_is_an_invalid_reply(
    vendor: str, on_invalid: Literal["fallback", "raise"], mem: Memory
) -> None:
    """Defect: a reply cut at the output cap was read as the whole answer. Here the cut
    reply is even valid JSON (the model stopped right after closing it): a shorter list
    of facts that reads as complete, and the other turns of its request lost theirs.
    Now that request's turns go through the offline extractor (the others keep the
    model's facts), or, with ``on_invalid="raise"``, ReplyTruncated is raised."""
    with _fake(vendor) as fake:
        llm = _llm(vendor, fake)
        extractor = LLMExtractor(llm, chunk_tokens=100, on_invalid=on_invalid)  # 2-3 each
        chunks = extractor.chunks(_messages(_turns(8)))
        assert len(chunks) >= 3 and all(len(c) > 1 for c in chunks[:2])
        for n, chunk in enumerate(chunks):
            facts = _facts_of(chunk)
            cut = n == 1
            _enqueue(fake, vendor, json.dumps({"facts": facts[:1] if cut else facts}), cut=cut)
        add: dict[str, Any] = {"user_id": "alice", "session_id": "s1", "event_time": T}
        add.update(infer=True, extractor=extractor)
        if on_invalid == "raise":
            with pytest.raises(ReplyTruncated):
                mem.add(_turns(8), **add)
            assert mem.get_all(user_id="alice") == []
            assert len(_requests(fake)) == 2  # stopped at the cut one
            llm.client.close()
            return
        out = mem.add(_turns(8), **add)
        assert len(_requests(fake)) == len(chunks)
        by_turn = {r.provenance: r.text for r in out}
        assert set(by_turn) == {(f"D{i}",) for i in range(8)}  # every turn kept its fact
        cut_turns = [line.turn for line in chunks[1]]
        offline = OfflineExtractor().extract(cut_turns, session_time=T)
        assert {c.provenance for c in offline} == {(line.tid,) for line in chunks[1]}
        assert [by_turn[c.provenance] for c in offline] == [c.text for c in offline]
        assert by_turn[("D0",)] == "Alice flew to Lisbon on trip 0."  # the model's, kept
        assert by_turn[("D7",)] == "Alice flew to Tunis on trip 7."
        llm.client.close()


# -- an add too long for one request ------------------------------------------------------

HAIKU_WINDOW = 200_000
GARDEN = "Alice talked about her garden, the tomatoes, the roses and the trip to Lisbon. " * 400
WORDS = ["amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath", "inlet", "jade"]


def _long_turns(n: int) -> list[dict[str, Any]]:
    """``n`` turns of 32,000 characters (legal: under MAX_TEXT_CHARS), each naming a word."""
    return [
        {
            "role": "user",
            "name": "Alice",
            "dia_id": f"D{i}",
            "content": f"{GARDEN}My code word is {WORDS[i % 10]}{i}.",
        }
        for i in range(n)
    ]


def _facts_per_turn(body: dict[str, Any]) -> str:
    """One fact per turn (or part of one) a request sent, naming its code word if sent."""
    facts = []
    for tid, speaker, said in turns_in(body["messages"][-1]["content"]):
        word = re.search(r"My code word is (\w+)\.", said)
        if speaker == "Alice" and word:
            text = f"Alice's code word is {word.group(1)}."
            facts.append({"text": text, "type": "semantic", "source": tid})
    return json.dumps({"facts": facts})


class WindowedAnthropic(FakeAnthropic):
    """The fake, refusing a prompt that with ``max_tokens`` is over Haiku's window, as the
    API does ("prompt is too long"); counted with the offline cl100k tokenizer."""

    def respond(self, request: RecordedRequest) -> FakeResponse:
        body = request.json()
        if request.path.split("?")[0] == "/v1/messages" and isinstance(body, dict):
            sent = [body.get("system", ""), json.dumps(body.get("output_config"))]
            sent += [m["content"] for m in body["messages"]]
            tokens = sum(default_tokenizer().count(t) for t in sent)
            if tokens + body["max_tokens"] > HAIKU_WINDOW:
                error = {
                    "type": "invalid_request_error",
                    "message": f"prompt is too long: {tokens} tokens > {HAIKU_WINDOW} maximum",
                }
                return FakeResponse(status=400, json_body={"type": "error", "error": error})
        return super().respond(request)


def test_an_add_longer_than_the_window_is_extracted_in_requests_that_fit(mem: Memory) -> None:
    """Defect: extraction sent the whole add in one request: 40 messages of 32,000
    characters made a 272k-token prompt for Haiku's 200k window, a 400 "prompt is too
    long", nothing stored, and such an add could never succeed. With chunks as large as
    the caller allows (``chunk_tokens`` far over the window), the window bounds them."""
    with WindowedAnthropic(reply=_facts_per_turn) as fake:
        llm = _llm("anthropic", fake)
        extractor = LLMExtractor(llm, chunk_tokens=10**6)
        turns = _long_turns(40)
        out = mem.add(
            turns, user_id="alice", session_id="s1", event_time=T, infer=True, extractor=extractor
        )
        sent = [_conversation(r) for r in fake.requests_to("/v1/messages")]
        assert len(sent) > 1
        assert all(len(turns_in(s)) < 40 for s in sent)  # no request holds every turn
        assert [turn for s in sent for turn in turns_in(s)] == [
            (f"D{i}", "Alice", t["content"]) for i, t in enumerate(turns)
        ]
        assert sorted(r.text for r in out) == sorted(
            f"Alice's code word is {WORDS[i % 10]}{i}." for i in range(40)
        )
        llm.client.close()


def test_a_long_add_goes_in_requests_of_a_bounded_size_in_turn_order(
    mem: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    """The default chunk (EXTRACT_CHUNK_TOKENS of conversation) keeps each reply's facts
    under the 2,048-token output cap; a turn longer than that alone goes in parts."""
    count = default_tokenizer().count
    with FakeAnthropic(reply=_facts_per_turn) as fake:
        llm = _llm("anthropic", fake)
        short = [
            {**t, "dia_id": f"D{i + 1}", "content": f"My code word is {WORDS[i % 10]}{i + 1}."}
            for i, t in enumerate(_turns(60))
        ]
        turns = [_long_turns(1)[0], *short]
        with caplog.at_level(logging.INFO, logger="contextos.memory.extract_llm"):
            out = mem.add(
                turns,
                user_id="alice",
                session_id="s1",
                event_time=T,
                infer=True,
                extractor=LLMExtractor(llm),
            )
        sent = [_conversation(r) for r in fake.requests_to("/v1/messages")]
        assert all(count(s) <= EXTRACT_CHUNK_TOKENS for s in sent)
        parts = [text for s in sent for tid, _, text in turns_in(s) if tid == "D0"]
        assert (
            len(parts) > 5
            and "turn 'D0'" in caplog.text
            and f"in {len(parts)} parts" in caplog.text
        )
        assert " ".join(parts) == turns[0]["content"].strip()
        lines = [turn for s in sent for turn in turns_in(s)]
        assert lines[len(parts) :] == [
            (f"D{i + 1}", "Alice", t["content"]) for i, t in enumerate(short)
        ]
        words = ["amber0"] + [f"{WORDS[i % 10]}{i + 1}" for i in range(60)]
        assert [r.text for r in out] == [f"Alice's code word is {w}." for w in words]
        llm.client.close()


class _NamedLLM(ScriptedLLM):
    """The scripted double, naming a model and an output cap as the shipped clients do."""

    def __init__(self, model: str, max_tokens: int) -> None:
        super().__init__([])
        self.model = model
        self.max_tokens = max_tokens


def test_the_chunk_is_bounded_by_the_models_window() -> None:
    assert LLMExtractor(ScriptedLLM([])).chunk_limit() == EXTRACT_CHUNK_TOKENS  # no model
    assert LLMExtractor(_NamedLLM("claude-haiku-4-5", 2048)).chunk_limit() == 800
    big = LLMExtractor(_NamedLLM("gpt-4", 2048), chunk_tokens=10**6).chunk_limit()
    assert 4000 < big < int((8192 - 2048) * 0.8)  # gpt-4: an 8,192-token window
    with pytest.raises(ConfigError, match="cannot hold the extraction prompt"):
        LLMExtractor(_NamedLLM("gpt-4", 8192)).chunk_limit()


@pytest.mark.parametrize("size", [1, 7, 50])
def test_split_text_keeps_every_word_in_pieces_that_fit(size: int) -> None:
    count = default_tokenizer().count
    text = "Ünïcode 😀 words, and sentences. " * 40 + "x" * 300 + "\n" + "last line"
    pieces = split_text(text, size, count)
    if size == 50:
        assert pieces[0].endswith("sentences.")  # cut at a sentence end
    assert "".join("".join(pieces).split()) == "".join(text.split())  # only spaces dropped
    assert all(count(p) <= size or len(p) == 1 for p in pieces)
