"""Which memories a session's window retrieves: one rule for the wrapped client, the
HTTP window route and ``contextos window`` (``contextos.engine.recall``; review s39:
placement bug 2, the longconv "early facts" finding, the compactrace bug, and the
scopes fixer's agent-only wrapped client).

- A memory of the session is left out exactly while the window shows its turn: the
  HTTP and CLI windows no longer place the session's remembered exchanges beside the
  same turns in the history, and a fact said early in a long chat comes back by
  retrieval once compaction took its turn out, under every strategy.
- A wrapped client of an agent with no user places no memory of another user.
- A wrapped call's request is built from one compaction state, whenever another
  writer compacts the session during the call.

Real ``anthropic`` clients against the loopback fake, real SQLite files, the real HTTP
app, the real CLI, the hash embedder.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos import wrap
from contextos.engine.context import MEMORY_HEADER
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.store import open_store
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.types import Message
from server_support import app_client, auth, issue_key

MODEL = "claude-haiku-4-5"
SECRET = "qzlockercode5521"
FACTS = [
    "I moved to Lisbon in May.",
    "My sister lives in Porto.",
    "I am allergic to peanuts.",
    "My dog is called Rex.",
    "I work as a nurse.",
]


def _open(db: Path) -> Memory:
    return Memory(db, embedder=HashEmbedder(), background_embedding=False)


def _ask(client: Any, fake: FakeAnthropic, text: str) -> dict[str, Any]:
    """Ask ``text`` through the wrapped ``client``; the request the fake received."""
    client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}])
    client.flush()
    body: dict[str, Any] = fake.messages_requests()[-1].json()
    return body


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content]


def _memories_sent(body: dict[str, Any]) -> list[str]:
    """The memories of a request: the texts of its last message before the question,
    less the header a wrapped call puts first (``contextos window`` puts none)."""
    texts = _texts(body["messages"][-1]["content"])[:-1]
    return texts[1:] if texts[:1] == [MEMORY_HEADER] else texts


def _history_sent(body: dict[str, Any]) -> list[str]:
    """The texts of a request's messages but the last (the memories and the question)."""
    return [t for m in body["messages"][:-1] for t in _texts(m["content"])]


def _window_blocks(db: Path, session: str, question: str, **ids: str) -> dict[str, list[str]]:
    """``POST /v1/sessions/{session}/window``'s blocks, their texts by segment."""
    with app_client(db) as client:
        headers = auth(issue_key(client, "default"))
        ask = {"question": question, **ids}
        resp = client.post(f"/v1/sessions/{session}/window", json=ask, headers=headers)
        assert resp.status_code == 200, resp.text
    blocks: dict[str, list[str]] = {}
    for b in resp.json()["blocks"]:
        blocks.setdefault(b["segment"], []).append(b["text"])
    return blocks


def _cli_window(db: Path, session: str, question: str, user: str) -> dict[str, Any]:
    """``contextos window``'s Anthropic request body for the session."""
    ask = ("window", "--session", session, "-q", question, "-u", user, "--budget", "4000")
    out = run_cli(*ask, "--format", "anthropic", db=db)
    assert out.returncode == 0, out.stderr
    body: dict[str, Any] = json.loads(out.stdout)
    return body


# -- the session's own exchanges are not placed again as memories ----------------------------


def test_the_http_and_cli_windows_place_no_memory_the_history_shows(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """Placement bug 2: a wrapped client remembers each exchange as a memory of the user
    and the session; the HTTP window and ``contextos window -u`` placed those beside the
    same turns in the history, where they took the places of the user's facts (the CLI
    left out "I moved to Lisbon in May.", the answer)."""
    db = tmp_path / "m.db"
    fake_anthropic.reply = lambda body: "Noted."
    with _open(db) as memory:
        memory.add(FACTS, user_id="ana", session_id="old")  # an earlier session's facts
        client = wrap(anthropic_client, memory, session="chat", user_id="ana")
        for question in [
            "Tell me about my dog Rex, where do I live?",
            "Where do I live, Lisbon?",
            "Where does my sister live, Porto?",
            "What is my dog called, Rex?",
        ]:
            wrapped = _ask(client, fake_anthropic, question)
    assert sorted(_memories_sent(wrapped)) == sorted(FACTS)

    blocks = _window_blocks(db, "chat", "Where do I live?", user_id="ana")
    assert len(blocks["turns"]) == 8
    assert not set(blocks["memories"]) & set(blocks["turns"])
    assert sorted(blocks["memories"]) == sorted(FACTS)

    body = _cli_window(db, "chat", "Where do I live?", "ana")
    assert sorted(_memories_sent(body)) == sorted(FACTS)
    assert not set(_memories_sent(body)) & set(_history_sent(body))


# -- an early fact comes back once compaction took its turn out ------------------------------


@pytest.mark.parametrize("strategy", ["summarize", "truncate", "clear_tool_results", "offload"])
def test_a_fact_compacted_out_of_a_long_chat_comes_back_by_retrieval(
    strategy: Any, tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """Longconv: the exchange remembered at the first turn named no turn, so the window
    left it out for good, as the log held it; once compaction rotated the turn out (and
    the summary kept no line of it), the fact reached the model only with ``offload``.
    With ``offload`` the turn is in memory twice (remembered, archived): sent once."""
    db = tmp_path / "m.db"
    replies = itertools.count()
    fake_anthropic.reply = lambda body: f"Noted, reply {next(replies)}."
    with _open(db) as memory:
        client = wrap(
            anthropic_client,
            memory,
            session="s1",
            user_id="ana",
            compaction=strategy,
            budget=1500,
            background_commit=False,
        )
        _ask(client, fake_anthropic, f"My gym locker code is {SECRET}, remember it.")
        session = client.context.session
        for n in range(25):
            said = f"Filler {n}: today I walked {n} km along the river and saw ducks."
            _ask(client, fake_anthropic, said)
        state = session.state()
        assert state.start_seq > 1  # the fact's turn is out of the history
        assert state.summary is None or SECRET not in json.dumps(state.summary.to_json())

        body = _ask(client, fake_anthropic, "What is my gym locker code?")
        assert json.dumps(body).count(SECRET) == 1
        assert any(SECRET in m for m in _memories_sent(body))
        assert not set(_memories_sent(body)) & set(_history_sent(body))

    # The server's and the CLI's windows of the session retrieve it the same way.
    blocks = _window_blocks(db, "s1", "What is my gym locker code?", user_id="ana")
    assert sum(SECRET in m for m in blocks["memories"]) == 1
    assert not set(blocks["memories"]) & set(blocks.get("turns", []))
    cli = _cli_window(db, "s1", "What is my gym locker code?", "ana")
    assert json.dumps(cli).count(SECRET) == 1


def test_a_turn_the_summary_keeps_a_line_of_is_not_placed_again_as_a_memory(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """The other half of the rule: the exchange's turn is out of the history but its
    summary line shows it, so the wrapped call, the HTTP and the CLI windows send it
    once, in the summary."""
    db = tmp_path / "m.db"
    replies = itertools.count()
    fake_anthropic.reply = lambda body: f"Noted, reply {next(replies)}."
    question = "What is my gym locker code?"
    with _open(db) as memory:
        client = wrap(anthropic_client, memory, session="s1", user_id="ana")
        _ask(client, fake_anthropic, f"My gym locker code is {SECRET}, remember it.")
        for n in range(6):
            _ask(client, fake_anthropic, f"Filler {n}: today I walked {n} km along the river.")
        session = client.context.session
        session.compact(600, "summarize", force=True)
        state = session.state()
        assert state.start_seq > 1 and state.summary is not None
        assert SECRET in json.dumps(state.summary.to_json())

        body = _ask(client, fake_anthropic, question)
    assert json.dumps(body).count(SECRET) == 1
    assert not any(SECRET in m for m in _memories_sent(body))
    blocks = _window_blocks(db, "s1", question, user_id="ana")
    assert not any(SECRET in m for m in blocks.get("memories", []))
    assert json.dumps(_cli_window(db, "s1", question, "ana")).count(SECRET) == 1


def test_an_exchange_remembered_before_turns_were_marked_stays_out_while_shown(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """A memory of the session that names no turn: an exchange an older version
    remembered (its words are a turn the window shows) stays out; a note the app added
    to the session (no turn says it) is placed."""
    db = tmp_path / "m.db"
    with _open(db) as memory:
        said = f"My gym locker code is {SECRET}."
        Session(memory, "s1", user_id="ana").add(Message("user", said))
        memory.add(said, user_id="ana", session_id="s1")  # remembered, unmarked
        memory.add("The gym closes at nine.", user_id="ana", session_id="s1")  # a note
        client = wrap(anthropic_client, memory, session="s1", user_id="ana")
        body = _ask(client, fake_anthropic, "When does the gym close, and my locker code?")
    assert _memories_sent(body) == ["The gym closes at nine."]
    assert json.dumps(body).count(SECRET) == 1


# -- an agent-only wrapped client ------------------------------------------------------------


def test_a_wrapped_client_of_an_agent_alone_places_no_other_users_memory(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """The scopes fixer's "Left" item: ``wrap(agent_id=..., session=...)`` with no user
    searched the agent's whole scope, every user's memories of that agent, and placed
    bob's salary in ana's chat (``Session.participants_hits`` ran only in the server's
    window)."""
    with _open(tmp_path / "m.db") as memory:
        memory.add("My salary is 900k per year.", user_id="bob", agent_id="bot", session_id="b")
        memory.add("Salaries are paid on the first of the month.", agent_id="bot")
        client = wrap(
            anthropic_client, memory, session="ana-chat", agent_id="bot", background_commit=False
        )
        body = _ask(client, fake_anthropic, "What is my salary per year?")
    sent = json.dumps(body)
    assert "900k" not in sent
    assert "paid on the first" in sent  # the agent's own memory stays


# -- one compaction state per request --------------------------------------------------------


class _CompactsMidCall:
    """A store that has another writer compact session ``c`` with ``summarize`` right
    before its ``at``-th call (counted from :attr:`calls` = 0), once."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.calls = 0
        self.at = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                Session(self._inner, "c", user_id="ana").compact(600, "summarize", force=True)
            return attr(*args, **kwargs)

        return call


def _call_during_compaction(tmp_path: Path, at: int) -> tuple[dict[str, Any], int]:
    """A wrapped question to session ``c`` (80 logged turns) while another writer
    compacts it before the store's ``at``-th call of the question (0: never); the
    request sent and the store calls the question made."""
    inner = open_store(str(tmp_path / f"race-{at}.db"))
    log = Session(inner, "c", user_id="ana")
    for i in range(40):
        log.add(
            Message("user", f"Fact {i}: my number {i} is {1000 + i}, my city Lisbon{i}."),
            Message("assistant", f"Noted fact {i}, number {1000 + i}."),
        )
    store = _CompactsMidCall(inner)
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    anthropic = pytest.importorskip("anthropic")
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory, session="c", user_id="ana", remember=False, budget=100_000)
        store.calls, store.at = 0, at
        body = _ask(client, fake, "What is my number 3?")
    memory.close()
    return body, store.calls


def test_a_wrapped_request_is_built_from_one_compaction_state(tmp_path: Path) -> None:
    """Compactrace: ``prepare`` read the compaction state twice; another process
    compacting in between gave a request with the new summary and the old state's
    verbatim turns, the same turns twice. Another writer compacts before each store
    call of the question in turn: every request is the old state's (no summary, the 80
    turns) or the new one's (its summary, the turns after it), never both."""
    _, calls = _call_during_compaction(tmp_path, 0)
    for at in range(1, calls + 1):
        body, _ = _call_during_compaction(tmp_path, at)
        system = json.dumps(body.get("system") or "")
        summarized = "Summary" in system
        assert summarized == (len(body["messages"]) < 81), at
        verbatim = json.dumps(body["messages"])
        twice = [i for i in range(40) if f"Fact {i}:" in system and f"Fact {i}:" in verbatim]
        assert twice == [], at
