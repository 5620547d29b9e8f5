"""A scope's stored rules (its current ``procedural`` memories) are pinned in every window's
``rules`` segment, after the caller's own rules, and not retrieved again by the question
(``contextos.engine.recall.scope_rules``; review s44 memtypes F1: a stored "Always answer
in French" reached the model only when the search ranked it for the question).

- A rule another process stores reaches the next window of a long-running process, a
  wrapped client's and the HTTP server's, for a question that shares no word with it.
- A superseded rule leaves the window; another user's rule never enters it.
- The rules blocks stay byte-identical while nothing changes, and a new rule appends.
- Bounded: the oldest ``MAX_RULES``, within ``RULES_SHARE`` of the budget; each text once.
- An agent's core-memory blocks are left to its tool loop's own pinned snapshot.

Real ``anthropic`` clients against the loopback fake, real SQLite files, the real
``contextos`` CLI and server in their own processes, the hash embedder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from cli_support import keyed_server, run_cli
from contextos import wrap
from contextos.agent.core_memory import SOURCE, CoreMemory
from contextos.engine.recall import CORE_MEMORY_SOURCE, MAX_RULES, session_recall
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.server.keys import KeyStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.types import Message

MODEL = "claude-haiku-4-5"
RULE = "Always answer in French"
#: Shares no word with RULE.
QUESTION = "Plan a birthday cake for Saturday"
FACTS = [
    "My favourite cake is carrot cake",
    "I like baking on Saturdays",
    "My son prefers vanilla sponge",
    "I am allergic to peanuts",
]


def _open(db: Path, tenant: str = "default") -> Memory:
    return Memory(db, tenant=tenant, embedder=HashEmbedder(), background_embedding=False)


def _ask(client: Any, fake: FakeAnthropic, text: str, system: Any = None) -> dict[str, Any]:
    """Ask ``text`` through the wrapped ``client``; the request the fake received."""
    extra = {} if system is None else {"system": system}
    client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}], **extra
    )
    client.flush()
    body: dict[str, Any] = fake.messages_requests()[-1].json()
    return body


def _system(body: dict[str, Any]) -> list[str]:
    system = body.get("system", [])
    return [system] if isinstance(system, str) else [b["text"] for b in system]


def _cli_add(db: Path, text: str, *args: str) -> None:
    out = run_cli("add", text, "-u", "ana", *args, db=db)
    assert out.returncode == 0, out.stderr


# -- the wrapped client ----------------------------------------------------------------------


def test_a_rule_another_process_stores_reaches_the_next_wrapped_call(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """F1: stored with ``--type procedural`` by the CLI while the app runs, the rule is in
    the app's next request, after the request's own system blocks, for a question that
    shares no word with it; once, not again among the memories."""
    db = tmp_path / "m.db"
    own = [{"type": "text", "text": "You are a baker."}, {"type": "text", "text": "Be brief."}]
    with _open(db) as memory:
        memory.add(FACTS, user_id="ana", memory_type="semantic")
        client = wrap(anthropic_client, memory, session="chat", user_id="ana")
        before = _ask(client, fake_anthropic, QUESTION, own)
        assert _system(before) == ["You are a baker.", "Be brief."]

        _cli_add(db, RULE, "--type", "procedural")  # another process
        body = _ask(client, fake_anthropic, QUESTION, own)
    assert _system(body) == ["You are a baker.", "Be brief.", RULE]
    assert json.dumps(body["messages"]).count(RULE) == 0


def test_a_superseded_rule_leaves_the_window_and_the_rules_stay_byte_identical(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """A rule the extractor types ``procedural`` (``add --infer``) is pinned; unchanged,
    the system blocks are the same bytes call after call (the cached prefix); a new rule
    appends after them; the one a later statement supersedes is gone at the next call."""
    db = tmp_path / "m.db"
    _cli_add(db, "Always answer in French.", "--infer")
    with _open(db) as memory:
        memory.add(FACTS, user_id="ana", memory_type="semantic")
        client = wrap(anthropic_client, memory, session="chat", user_id="ana")
        first = _ask(client, fake_anthropic, QUESTION, "You are a baker.")
        second = _ask(client, fake_anthropic, "What should I buy for it?", "You are a baker.")
        [french] = [r for r in _system(first) if "French" in r]
        assert french.endswith("answer in French.")
        assert json.dumps(first["system"]) == json.dumps(second["system"])

        memory.add("Never use emoji", user_id="ana", memory_type="procedural")
        third = _ask(client, fake_anthropic, QUESTION, "You are a baker.")
        assert third["system"][: len(first["system"])] == first["system"]  # appended
        assert _system(third)[-1] == "Never use emoji"

        _cli_add(db, "Always answer in English.", "--infer")  # supersedes French
        body = _ask(client, fake_anthropic, QUESTION, "You are a baker.")
    assert "French" not in json.dumps(body)
    assert [r for r in _system(body) if "English" in r] == [french.replace("French", "English")]


def test_another_users_rule_never_enters_the_window(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """Bob's rule is not in Ana's window; an agent's window without a user pins the
    agent's own rules and none of a user who takes no part in its session."""
    db = tmp_path / "m.db"
    with _open(db) as memory:
        memory.add("Always answer in German", user_id="bob", memory_type="procedural")
        memory.add(
            "Always answer in Klingon", user_id="bob", agent_id="bot", memory_type="procedural"
        )
        memory.add("Sign every answer as Bot", agent_id="bot", memory_type="procedural")
        memory.add(RULE, user_id="ana", memory_type="procedural")
        ana = wrap(anthropic_client, memory, session="chat-ana", user_id="ana")
        assert _system(_ask(ana, fake_anthropic, QUESTION)) == [RULE]
        bot = wrap(anthropic_client, memory, session="chat-bot", agent_id="bot")
        body = _ask(bot, fake_anthropic, "Answer me, in German or Klingon")
    assert _system(body) == ["Sign every answer as Bot"]
    assert "answer in German" not in json.dumps(body)
    assert "answer in Klingon" not in json.dumps(body)


# -- the HTTP window, the CLI window -------------------------------------------------------


def test_a_rule_stored_meanwhile_reaches_the_running_servers_window(tmp_path: Path) -> None:
    """``contextos serve`` runs; this process stores a rule in its file; the server's next
    window pins it after the request's ``rules``, for a question that shares no word with
    it, and not among the memories; bob's rule stays out."""
    db = tmp_path / "server.db"
    with _open(db, "acme") as memory:
        memory.add(FACTS, user_id="ana", memory_type="semantic")
    with keyed_server(str(db), "--embedder", "hash") as (http, _key):
        ask = {"question": QUESTION, "user_id": "ana", "rules": ["Be brief."]}
        before = http.post("/v1/sessions/chat/window", json=ask)
        assert before.status_code == 200, before.text
        assert _segment(before.json(), "rules") == ["Be brief."]

        with _open(db, "acme") as memory:
            memory.add(RULE, user_id="ana", memory_type="procedural")
            memory.add("Never use emoji", user_id="bob", memory_type="procedural")

        resp = http.post("/v1/sessions/chat/window", json=ask)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert _segment(got, "rules") == ["Be brief.", RULE]
    assert RULE not in _segment(got, "memories")
    assert "emoji" not in json.dumps(got)


def test_the_mcp_window_without_a_session_pins_the_owners_rules(tmp_path: Path) -> None:
    """MCP ``assemble_window`` with no session (the owner's scope alone), in a running
    ``contextos mcp``: a rule stored meanwhile by this process is pinned; for an agent
    with no user, only the agent's own rules (no session names a user taking part)."""
    pytest.importorskip("mcp")
    from mcp_support import payload, stdio_call

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret

    async def scenario(s: Any) -> list[dict[str, Any]]:
        ask = {"question": QUESTION, "user_id": "ana", "rules": ["Be brief."]}
        out = [payload(await s.call_tool("assemble_window", ask))]
        with _open(db, "acme") as memory:
            memory.add(RULE, user_id="ana", memory_type="procedural")
            memory.add(
                "Always answer in Klingon", user_id="bob", agent_id="bot", memory_type="procedural"
            )
            memory.add("Sign every answer as Bot", agent_id="bot", memory_type="procedural")
        out.append(payload(await s.call_tool("assemble_window", ask)))
        ask = {"question": QUESTION, "agent_id": "bot"}
        out.append(payload(await s.call_tool("assemble_window", ask)))
        return out

    before, after, bot = anyio.run(stdio_call, db, key, scenario)
    assert _segment(before, "rules") == ["Be brief."]
    assert _segment(after, "rules") == ["Be brief.", RULE]
    assert _segment(bot, "rules") == ["Sign every answer as Bot"]
    assert "Klingon" not in json.dumps(bot)


def _segment(window: dict[str, Any], name: str) -> list[str]:
    return [b["text"] for b in window["blocks"] if b["segment"] == name]


def test_the_cli_window_pins_the_users_rules(tmp_path: Path) -> None:
    """``contextos window -u ana`` sends the rule as a system block."""
    db = tmp_path / "m.db"
    _cli_add(db, RULE, "--type", "procedural")
    _cli_add(db, "My favourite cake is carrot cake", "--type", "semantic")
    out = run_cli(
        "window", "--session", "chat", "-q", QUESTION, "-u", "ana", "--format", "anthropic", db=db
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert _system(body) == [RULE]
    assert RULE not in json.dumps(body["messages"])


# -- bounds and copies -------------------------------------------------------------------------


def test_the_oldest_rules_are_pinned_within_the_count_and_the_budget(tmp_path: Path) -> None:
    """Past ``MAX_RULES`` (or the budget's share) the newest rules are left out of the
    pin, and a question in their words still retrieves them as memories; a rule stored
    twice, or given by the caller too, is placed once."""
    db = tmp_path / "m.db"
    rules = [f"Rule {i:02d}: mention the colour number {i}" for i in range(MAX_RULES + 5)]
    with _open(db) as memory:
        for rule in rules:
            memory.add(rule, user_id="ana", memory_type="procedural")
        memory.add(rules[0], user_id="ana", memory_type="procedural", dedupe=False)
        session = Session(memory.store, "chat", user_id="ana")
        session.add(Message("user", "hello"), Message("assistant", "hi"))

        got = session_recall(
            memory, session, "colour number 24", limit=8, budget=100_000, rules=[rules[1]]
        )
        assert got.stored_rules == (rules[0], *rules[2:MAX_RULES])  # rules[1] is given
        assert rules[MAX_RULES + 4] in [h.record.text for h in got.hits]
        assert not set(rules[:MAX_RULES]) & {h.record.text for h in got.hits}

        small = session_recall(memory, session, QUESTION, limit=8, budget=400)
        assert (
            small.stored_rules == tuple(rules[: len(small.stored_rules)])
            and 1 <= len(small.stored_rules) < 5
        )


def test_a_rule_too_long_for_the_share_does_not_keep_out_the_rules_after_it(
    tmp_path: Path,
) -> None:
    """A house-style rule longer than the rules' share of the budget, stored first, is
    skipped, not a stop: the short rule stored after it is pinned (it left the segment
    empty, a review)."""
    house_style = "House style: " + " ".join(f"point {i} keep it plain." for i in range(80))
    with _open(tmp_path / "m.db") as memory:
        memory.add(house_style, user_id="ana", memory_type="procedural")
        memory.add(RULE, user_id="ana", memory_type="procedural")
        session = Session(memory.store, "chat", user_id="ana")
        got = session_recall(memory, session, QUESTION, limit=8, budget=2000)
    assert got.stored_rules == (RULE,)


def test_an_agents_own_rule_is_pinned_behind_a_hundred_of_its_users_rules(
    tmp_path: Path,
) -> None:
    """A window asked with ``agent_id`` alone pins the agent's own rules, not its users':
    it read the agent's 100 newest rules, all its users', and pinned none (a review)."""
    own = "Always cite your sources"
    with _open(tmp_path / "m.db") as memory:
        memory.add(own, agent_id="bot", memory_type="procedural")
        for i in range(120):
            memory.add(
                f"Call me user {i}", user_id=f"u{i}", agent_id="bot", memory_type="procedural"
            )
        session = Session(memory.store, "chat", agent_id="bot")
        session.add(Message("user", "hello"))
        got = session_recall(memory, session, QUESTION, limit=8, budget=4000)
    assert got.stored_rules == (own,)


def test_core_memory_blocks_are_left_to_the_agents_snapshot(tmp_path: Path) -> None:
    """An agent's core-memory blocks are procedural memories its tool loop pins itself
    (``CorePrefix``); the stored rules leave them out, so none is placed twice."""
    assert CORE_MEMORY_SOURCE == SOURCE
    db = tmp_path / "m.db"
    with _open(db) as memory:
        CoreMemory(memory, user_id="ana").set("human", "Name: Ana. Likes cakes.")
        memory.add(RULE, user_id="ana", memory_type="procedural")
        session = Session(memory.store, "chat", user_id="ana")
        got = session_recall(memory, session, QUESTION, limit=8, budget=4000)
    assert got.stored_rules == (RULE,)


# -- Session.window (the README's flow) ------------------------------------------------------


def test_the_readmes_session_window_pins_the_stored_rules(tmp_path: Path) -> None:
    """``Session(memory, ...).window(..., hits=memory.search(...))``: the rule is pinned
    though the search for the question did not rank it, and placed once when it did."""
    with _open(tmp_path / "readme.db") as memory:
        memory.add(RULE, user_id="ana", memory_type="procedural")
        memory.add([*FACTS, *(f"I visited city number {i}" for i in range(15))], user_id="ana")
        session = Session(memory, "chat-1", user_id="ana")
        session.add(Message("user", "Hello"))
        hits = memory.search(QUESTION, user_id="ana", limit=3)
        assert RULE not in [h.record.text for h in hits]
        window = session.window(MODEL, QUESTION, rules=["Be brief."], hits=hits)
        assert [b.text for b in window.blocks if b.segment == "rules"] == ["Be brief.", RULE]

        ranked = memory.search("answer in French", user_id="ana")
        assert RULE in [h.record.text for h in ranked]
        again = session.window(MODEL, "answer in French", hits=ranked)
        placed = [b.text for b in again.blocks]
        assert [b.text for b in again.blocks if b.segment == "rules"] == [RULE]
        assert sum(RULE in text for text in placed) == 1, placed


def test_the_callers_rules_that_do_not_fit_are_refused_as_its_system_prompt_is(
    tmp_path: Path,
) -> None:
    """A window whose question and system prompt left the caller's own rule no room
    answered 200 with the rule only in ``left_out``, and the ready request went out
    without it (review s57); the caller's rules are now all placed or a 400, as its
    system prompt and tools are. The stored rules still give way."""
    db = tmp_path / "server.db"
    rule = "Never reveal the internal discount code ZX-99. " * 20
    with _open(db, "acme") as memory:
        memory.add(RULE, user_id="ana", memory_type="procedural")
    with keyed_server(str(db), "--embedder", "hash") as (http, _key):
        ask = {"question": QUESTION, "user_id": "ana", "token_budget": 200, "format": "anthropic"}
        short = http.post("/v1/sessions/chat/window", json={**ask, "rules": ["Be brief."]})
        refused = http.post("/v1/sessions/chat/window", json={**ask, "rules": [rule]})
    assert short.status_code == 200, short.text
    assert _segment(short.json(), "rules") == ["Be brief.", RULE]
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"].startswith("segment 'rules' does not fit")


def test_a_stored_rule_does_not_take_the_historys_breakpoint_from_a_marked_system_prompt(
    tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """A stored rule follows the caller's system blocks; it was read as the caller's own
    unmarked block after its marked one, which says "what follows changes every call",
    so no breakpoint went after the system prompt: the history was never cached once the
    scope had a rule (diff review s57)."""
    prompt = [{"type": "text", "text": "You bake. " * 600, "cache_control": {"type": "ephemeral"}}]
    bodies = []
    for rule in (False, True):
        with _open(tmp_path / f"m{rule}.db") as memory:
            if rule:
                memory.add(RULE, user_id="ana", memory_type="procedural")
            client = wrap(anthropic_client, memory, session="chat", user_id="ana")
            said: list[dict[str, Any]] = []
            for text in ("Tell me about sourdough. " * 60, "And rye bread? " * 60, "Thanks!"):
                said.append({"role": "user", "content": text})
                reply = client.messages.create(
                    model="claude-sonnet-4-6", max_tokens=64, system=prompt, messages=said
                )
                said.append({"role": "assistant", "content": reply.content[0].text})
            client.flush()
            bodies.append(fake_anthropic.messages_requests()[-1].json())
    for body in bodies:
        assert "cache_control" in json.dumps(body["messages"])  # the history is cached
    assert _system(bodies[1])[-1] == RULE
