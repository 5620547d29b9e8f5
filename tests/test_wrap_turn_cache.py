"""A long-lived wrapped client holds the window's turns, not every turn it ever read.

A server or chat app keeps one wrapped client up for days. Its Session matched each
request against every logged turn, so it held them all whole (about 2.3 KB a turn,
nearly all of them long rotated out of the window): memory grew with the log. It now
holds the turns from the history's start on and a small print of each older turn
(what matching a resent whole conversation needs), and reads old turns from the store
when something asks for them (``Session.turns``: conversation search, offload).

Each test drives the real ``anthropic`` SDK client against the loopback fake twice
with the same script: once wrapped as an app does (``wrap(client, memory=...,
session="s")``), once with a Session that holds every turn (``hold="log"``, the
behaviour before), and checks that every request sent is the same byte for byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.context import REDO_KEY, SessionContext  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_http import echo_reply  # noqa: E402

MODEL = "claude-sonnet-4"
BUDGET = 2000


@contextmanager
def _fake() -> Iterator[FakeAnthropic]:
    """The fake, its answers numbered (a regenerated answer differs from the first)."""
    numbers = itertools.count(1)

    def reply(body: Mapping[str, Any]) -> str:
        return f"answer {next(numbers)}. {echo_reply(body)}"

    with FakeAnthropic(reply=reply) as server:
        yield server


def _question(i: int) -> str:
    return f"Question {i}: what did Ana say about city number {i} and the trip in May {2000 + i}?"


def _run(
    tmp: Path, *, hold: str, calls: int, compaction: str
) -> tuple[list[dict[str, Any]], list[int], list[Any], Session, Memory]:
    """One app's conversation: the requests the model got, how many turns its Session
    held whole after each call, the log, the Session and its Memory."""
    memory = Memory(tmp / f"{hold}.db", embedder=HashEmbedder(), background_embedding=False)
    options: dict[str, Any] = {"budget": BUDGET, "remember": False, "compaction": compaction}
    with (
        _fake() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        if hold == "window":  # as an app wraps its client
            wrapped = wrap(client, memory=memory, session="s", user_id="ana", **options)
        else:  # the same, its Session holding every turn it read
            session = Session(memory.store, "s", user_id="ana", hold="log")
            context = SessionContext(memory=memory, session=session, user_id="ana", **options)
            wrapped = wrap(client, context=context)
        session = wrapped.context.session
        held: list[int] = []
        history: list[dict[str, Any]] = []
        for i in range(calls):
            if i and i % 25 == 0:  # the user pressed "regenerate": the same request again
                history = history[:-1]
            elif i == calls // 2:  # the user edited their third message and went on from it
                history = [*history[:4], {"role": "user", "content": f"Edited: {_question(i)}"}]
            else:
                history.append({"role": "user", "content": _question(i)})
            # An app that keeps the history sends all of it; every 9th call only the turn.
            sent = history[-1:] if i % 9 == 4 else history
            if i % 40 == 17:  # a failed call, and the app's retry of it
                fake.enqueue_error(500)
                with pytest.raises(ProviderError):
                    wrapped.messages.create(model=MODEL, max_tokens=64, messages=sent)
            reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=sent)
            history.append({"role": "assistant", "content": reply.content[0].text})
            wrapped.flush()
            held.append(session.held_turns)
        requests = [r.json() for r in fake.messages_requests()]
    return requests, held, session.turns(), session, memory


def _said(turns: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (t.seq, t.message.role, t.message.content, t.message.metadata.get(REDO_KEY)) for t in turns
    ]


@pytest.mark.parametrize(("compaction", "calls"), [("summarize", 240), ("offload", 150)])
def test_a_long_lived_client_holds_the_window_not_the_log(
    tmp_path: Path, compaction: str, calls: int
) -> None:
    requests, held, log, session, memory = _run(
        tmp_path, hold="window", calls=calls, compaction=compaction
    )
    ref_requests, ref_held, ref_log, ref_session, ref_memory = _run(
        tmp_path, hold="log", calls=calls, compaction=compaction
    )
    # Every request matched the log as before (retries, regenerates, an edit far back,
    # whole conversations and single turns): the model got the same bytes every call.
    assert len(requests) == len(ref_requests) > calls
    for mine, theirs in zip(requests, ref_requests, strict=True):
        assert mine == theirs
    # The log is the same, every turn logged once; Session.turns still reads all of it.
    assert _said(log) == _said(ref_log) == _said(session.store.turns(session.scope))
    assert len(log) >= 2 * calls
    assert any(t.message.metadata.get(REDO_KEY) is not None for t in log)
    assert session.state() == ref_session.state()
    assert session.state().compactions >= (15 if compaction == "summarize" else 5)
    # The memory: the reference held every turn; this one a window's worth.
    assert ref_session.held_turns == len(ref_log) and ref_held == sorted(ref_held)
    print(f"{compaction}: log {len(log)} turns, held at most {max(held)}, at the end {held[-1]}")
    assert max(held) <= 70 < len(log) // 4  # the window's turns, and after the edit the
    assert session.held_turns <= 70  # replaced ones until a compaction passes them
    # Offload read the rotated turns from the store: the same archive.
    if compaction == "offload":
        archived = sorted(r.text for r in memory.get_all(user_id="ana", limit=1000))
        assert archived and archived == sorted(
            r.text for r in ref_memory.get_all(user_id="ana", limit=1000)
        )
    memory.close()
    ref_memory.close()


TOOLS = [{"name": "look", "description": "look at the page", "input_schema": {"type": "object"}}]
TASK = "Book me a flight to Lisbon for the first week of May."


def _run_tool_loop(tmp: Path, *, hold: str, steps: int) -> tuple[list[Any], list[int], int]:
    """An agent's task: one user turn, then ``steps`` tool calls and results (the app
    sends only each new result). The requests, the turns held after each, the log's size."""
    memory = Memory(tmp / f"loop-{hold}.db", embedder=HashEmbedder(), background_embedding=False)
    calls = itertools.count()

    def reply(body: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"type": "tool_use", "id": f"toolu_{next(calls)}", "name": "look", "input": {}}]

    options: dict[str, Any] = {"budget": BUDGET, "remember": False, "compaction": "summarize"}
    with (
        FakeAnthropic(reply=reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        if hold == "window":
            wrapped = wrap(client, memory=memory, session="s", user_id="ana", **options)
        else:
            session = Session(memory.store, "s", user_id="ana", hold="log")
            context = SessionContext(memory=memory, session=session, user_id="ana", **options)
            wrapped = wrap(client, context=context)
        session = wrapped.context.session
        ask = {"model": MODEL, "max_tokens": 64, "tools": TOOLS}
        r = wrapped.messages.create(**ask, messages=[{"role": "user", "content": TASK}])
        held: list[int] = []
        for i in range(steps):
            page = f"step {i}: the page lists flights to Lisbon on May {1 + i % 7}. " * 6
            result = {"type": "tool_result", "tool_use_id": r.content[-1].id, "content": page}
            r = wrapped.messages.create(**ask, messages=[{"role": "user", "content": [result]}])
            wrapped.flush()
            held.append(session.held_turns)
        requests = [q.json() for q in fake.messages_requests()]
    size = len(session.store.turns(session.scope))
    memory.close()
    return requests, held, size


def test_an_agents_open_tool_loop_is_held_as_its_window_not_whole(tmp_path: Path) -> None:
    """Compaction keeps the task's user turn (``kept``) while it rotates the loop's steps
    out; the Session held every turn from that one on: every step of the loop, for as
    long as the task ran (+0.38 MB a step with screenshots), while ~10 were sent."""
    requests, held, size = _run_tool_loop(tmp_path, hold="window", steps=160)
    ref_requests, ref_held, ref_size = _run_tool_loop(tmp_path, hold="log", steps=160)
    assert requests == ref_requests  # the same bytes, call by call
    assert size == ref_size == 2 + 2 * 160 and ref_held[-1] >= size - 1  # the last reply unread
    assert all(r["messages"][0]["content"][0]["text"] == TASK for r in requests[100:])
    print(f"loop of {size} turns: held at most {max(held)}, at the end {held[-1]}")
    assert max(held) <= 60 < size // 4
