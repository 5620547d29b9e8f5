"""The app's own cache breakpoints on its system blocks, and the SDK's "not given" marks.

An app that follows Anthropic's caching guide marks its large static system block and
puts a small block that changes every call (the time, the user's name) after it. The
wrapper dropped the app's mark and put its own 1-hour system breakpoint after the
changing block: no call ever read the cache, and every call wrote the whole system
prompt again at the 1-hour price, where the bare SDK read it (a review). And
``cache_control=anthropic.omit`` (the SDK's "not given") counted as a top-level
breakpoint, so one of the app's own four was dropped. The real ``anthropic`` SDK
against the loopback fake (which caches as the API does), a real SQLite memory file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

anthropic = pytest.importorskip("anthropic")

from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4-5"
STATIC = "You are a meticulous assistant. " * 400  # ~3,200 tokens, the same every call
EPHEMERAL = {"type": "ephemeral"}


def _system(n: int, *, mark_last: bool = False) -> list[dict[str, Any]]:
    """The static block, marked, then one that changes every call."""
    changing: dict[str, Any] = {"type": "text", "text": f"Current time: 10:0{n}:00"}
    if mark_last:
        changing["cache_control"] = EPHEMERAL
    return [{"type": "text", "text": STATIC, "cache_control": EPHEMERAL}, changing]


def _marks(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(where, message, block) of every marker a request carried."""
    out = [("system", 0, n) for n, b in enumerate(body.get("system") or []) if "cache_control" in b]
    for m, message in enumerate(body["messages"]):
        content = message["content"]
        blocks = content if isinstance(content, list) else []
        out += [("messages", m, n) for n, b in enumerate(blocks) if "cache_control" in b]
    return out


@dataclass
class Side:
    """A client and the fake it talks to (each fake its own cache)."""

    client: Any
    fake: FakeAnthropic

    def sent(self) -> dict[str, Any]:
        """The body of the last request."""
        return dict(self.fake.messages_requests()[-1].json())


def _converse(side: Side, calls: int, *, mark_last: bool = False) -> list[tuple[Any, Any]]:
    """An app that keeps its history and asks ``calls`` questions: (usage, body) each."""
    history: list[dict[str, Any]] = []
    out = []
    for n in range(calls):
        history.append({"role": "user", "content": f"question {n} " + "blah " * 20})
        reply = side.client.messages.create(
            model=MODEL, max_tokens=50, system=_system(n, mark_last=mark_last), messages=history
        )
        history.append({"role": "assistant", "content": reply.content[0].text})
        out.append((reply.usage, side.sent()))
    return out


@pytest.fixture
def clients(tmp_path: Any) -> Any:
    """(bare, wrapped): the real SDK client, bare and wrapped, each on a fake of its own."""
    with (
        FakeAnthropic() as bare_fake,
        FakeAnthropic() as wrapped_fake,
        anthropic.Anthropic(base_url=bare_fake.base_url, api_key="t", max_retries=0) as bare,
        anthropic.Anthropic(base_url=wrapped_fake.base_url, api_key="t", max_retries=0) as raw,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        wrapped = wrap(raw, memory=memory, session="s", user_id="ana")
        yield Side(bare, bare_fake), Side(wrapped, wrapped_fake)
        wrapped.flush()


def test_the_apps_mark_before_a_changing_system_block_is_kept_and_read(clients: Any) -> None:
    """Every call after the first reads the static block from the cache, as with the bare
    SDK, and nothing of contextos's is marked after the block that changes."""
    bare, wrapped = clients
    bare_calls = _converse(bare, 4)
    wrapped_calls = _converse(wrapped, 4)
    for (bare_usage, _), (usage, body) in zip(bare_calls, wrapped_calls, strict=True):
        assert _marks(body) == [("system", 0, 0)]  # the app's, where the app put it
        assert usage.cache_read_input_tokens == bare_usage.cache_read_input_tokens
    reads = [usage.cache_read_input_tokens for usage, _ in wrapped_calls]
    assert reads[0] == 0 and all(r >= 3_000 for r in reads[1:])
    # no call writes the history it can never read again (behind the changing block)
    writes = [u.cache_creation_input_tokens for u, _ in wrapped_calls[1:]]
    assert writes == [0, 0, 0]
    bodies = [body for _, body in wrapped_calls]
    assert all(b["system"][0] == bodies[0]["system"][0] for b in bodies)  # byte-stable
    # the window's instruction breakpoint is that one: 1-hour, as it caches instructions
    assert bodies[0]["system"][0]["cache_control"] == {**EPHEMERAL, "ttl": "1h"}


def test_marks_on_every_system_block_keep_the_history_cached(clients: Any) -> None:
    """An app that marks its last system block too says nothing after it changes:
    its marks stay, and the window's history breakpoints go after them (the cache reads
    grow with the history)."""
    _, wrapped = clients
    calls = _converse(wrapped, 4, mark_last=True)
    for n, (_, body) in enumerate(calls):
        marks = _marks(body)
        assert marks[:2] == [("system", 0, 0), ("system", 0, 1)]
        assert len(marks) <= 4
        if n:
            assert any(where == "messages" for where, _, _ in marks), "the history is marked"


def test_the_apps_system_marks_outlast_contextos_own_at_the_limit(clients: Any) -> None:
    """Two system marks and two on the question are the app's four: the window's own
    history breakpoints give way, not the app's earliest mark."""
    _, wrapped = clients
    history: list[dict[str, Any]] = []
    for n in range(4):
        question = [
            {"type": "text", "text": f"chunk {n}a " + "lorem " * 300, "cache_control": EPHEMERAL},
            {"type": "text", "text": f"chunk {n}b " + "ipsum " * 300, "cache_control": EPHEMERAL},
            {"type": "text", "text": "summarise"},
        ]
        history.append({"role": "user", "content": question})
        reply = wrapped.client.messages.create(
            model=MODEL, max_tokens=50, system=_system(n, mark_last=True), messages=history
        )
        history.append({"role": "assistant", "content": reply.content[0].text})
        body = wrapped.sent()
        last = len(body["messages"]) - 1
        assert _marks(body) == [
            ("system", 0, 0),
            ("system", 0, 1),
            ("messages", last, 0),
            ("messages", last, 1),
        ]


@pytest.mark.parametrize("sentinel", ["omit", "NOT_GIVEN"])
def test_the_sdks_not_given_is_no_breakpoint(clients: Any, sentinel: str) -> None:
    """``cache_control=anthropic.omit`` (or ``NOT_GIVEN``) is no automatic breakpoint:
    the app's four marked blocks all go out, as the bare SDK sends them; and a block
    marked with it before a 1-hour one goes out unmarked, where it failed the call."""
    bare, wrapped = clients
    value = getattr(anthropic, sentinel)
    sent = []
    for side in (bare, wrapped):
        question = [
            {
                "type": "text",
                "text": f"chunk {i}: " + "lorem ipsum " * 150,
                "cache_control": EPHEMERAL,
            }
            for i in range(4)
        ]
        question.append({"type": "text", "text": "summarise"})
        side.client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": question}],
            cache_control=value,
        )
        body = side.sent()
        sent.append([n for where, _, n in _marks(body) if where == "messages"])
    assert sent == [[0, 1, 2, 3], [0, 1, 2, 3]]
    question = [
        {"type": "text", "text": "context " * 50, "cache_control": value},
        {"type": "text", "text": "the question", "cache_control": {**EPHEMERAL, "ttl": "1h"}},
    ]
    wrapped.client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": question}]
    )
    content = wrapped.sent()["messages"][-1]["content"]
    assert [b.get("cache_control") for b in content[-2:]] == [None, {**EPHEMERAL, "ttl": "1h"}]
