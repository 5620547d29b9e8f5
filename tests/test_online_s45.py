"""Online review, session 45: three ways a session's or an agent's window went wrong.

- A turn logged with a metadata key ``Memory.add`` reserves for its own marks
  (``fact_of``, ``turn_facts``) made every later offload of the session fail, and the
  rotated turns reached neither the window nor memory.
- ``Session(memory, ..., tenant="other").window()`` pinned the Memory's tenant's rules.
- An agent's window with no user and no session (MCP ``assemble_window``) held a user's
  memories filed with the agent: the fact always, the rule once the agent had more rules
  than are pinned.

Real SQLite files, the real ``contextos mcp`` in its own process, the hash embedder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from contextos.engine.recall import MAX_RULES
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.server.keys import KeyStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

MODEL = "claude-haiku-4-5"


def _open(db: Path, tenant: str = "default") -> Memory:
    return Memory(db, tenant=tenant, embedder=HashEmbedder(), background_embedding=False)


@pytest.mark.parametrize("key", ["fact_of", "turn_facts"])
def test_a_turn_holding_a_reserved_key_is_still_offloaded(tmp_path: Path, key: str) -> None:
    with _open(tmp_path / "m.db") as memory:
        session = Session(memory, "chat", user_id="ana")
        code = Message("user", "My locker code is 4417, remember it. " * 5, metadata={key: "x"})
        session.add(code, Message("assistant", "Noted. " * 20))
        for i in range(3):
            session.add(Message("user", f"question {i} " * 20), Message("assistant", "ok " * 20))
            session.compact(120, "offload")
        assert session.state().unarchived == ()
        hits = memory.search("locker code", user_id="ana")
        assert any("4417" in h.record.text for h in hits)
        held = [h.record for h in hits if "4417" in h.record.text]
        assert all(key not in r.metadata or r.metadata[key] != "x" for r in held)


def test_a_session_of_another_tenant_pins_none_of_the_memorys_rules(tmp_path: Path) -> None:
    with _open(tmp_path / "m.db", "acme") as acme:
        acme.add("Reveal the discount code ACME-42", user_id="ana", memory_type="procedural")
        mine = Session(acme, "chat", user_id="ana")
        mine.add(Message("user", "hello"))
        assert "ACME-42" in mine.window(MODEL, "hi").render_text()
        other = Session(acme, "chat", tenant="globex", user_id="ana")
        other.add(Message("user", "hello"))
        window = other.window(MODEL, "hi")
        assert [b.text for b in window.blocks if b.segment == "rules"] == []
        assert "ACME-42" not in window.render_text()


def test_an_agents_window_without_user_or_session_holds_no_users_memory(tmp_path: Path) -> None:
    """MCP ``assemble_window`` with only an ``agent_id``: bob's rule and fact, filed with
    the agent, stay out, also once the agent has more rules than are pinned (then the
    question's search asks for rules too)."""
    pytest.importorskip("mcp")
    from mcp_support import payload, stdio_call

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    with _open(db, "acme") as memory:
        memory.add(
            "Always answer in Klingon when asked about cake",
            user_id="bob",
            agent_id="bot",
            memory_type="procedural",
        )
        memory.add("Bob's card number is 4111 for cake orders", user_id="bob", agent_id="bot")
        memory.add(
            [f"Bot rule {i}: sign answers about cake" for i in range(MAX_RULES + 1)],
            agent_id="bot",
            memory_type="procedural",
        )
        memory.add("Cake orders close at noon", agent_id="bot")

    async def scenario(s: Any) -> dict[str, Any]:
        ask = {"question": "what about cake", "agent_id": "bot"}
        out: dict[str, Any] = payload(await s.call_tool("assemble_window", ask))
        return out

    window = anyio.run(stdio_call, db, key, scenario)
    text = json.dumps(window)
    assert "Cake orders close at noon" in text
    assert "Klingon" not in text
    assert "4111" not in text
