"""A scripted agent (the local fake Anthropic server) keeps notes with the memory tool in
one session and gets them back in a new one, through ``view`` and ``Memory.search``."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from agent_scripts import (
    anthropic_text,
    anthropic_tool_use,
    close_sdk_clients,  # noqa: F401 - autouse: closes the SDK clients
    opened,
    tool_results,
)
from contextos import Memory
from contextos.agent import MemoryTool
from contextos.embed import Embedder
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic

NOTE = "Ana is allergic to peanuts.\nShe prefers a window seat on long flights.\n"


def first_session(fake: FakeAnthropic, db: Path, embedder: Embedder) -> None:
    with Memory(db, embedder=embedder, background_embedding=False) as memory:
        client = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        fake.enqueue(
            anthropic_tool_use(("memory", {"command": "view", "path": "/memories"})),
            anthropic_tool_use(
                ("memory", {"command": "create", "path": "/memories/ana.md", "file_text": NOTE})
            ),
            anthropic_text("Noted: no peanuts, window seat."),
        )
        final = client.beta.messages.tool_runner(
            model="claude-sonnet-4-6",
            max_tokens=512,
            messages=[{"role": "user", "content": "I can't eat peanuts; I like window seats."}],
            tools=[MemoryTool(memory, user_id="ana")],
        ).until_done()
    assert final.content[0].type == "text" and "peanuts" in final.content[0].text
    bodies = [r.json() for r in fake.messages_requests()]
    assert bodies[0]["tools"] == [{"type": "memory_20250818", "name": "memory"}]
    assert tool_results(bodies[1]) == [
        "Here're the files and directories up to 2 levels deep in /memories, "
        "excluding hidden items:\n0B\t/memories"
    ]
    assert tool_results(bodies[2])[-1] == "File created successfully at: /memories/ana.md"


def second_session(fake: FakeAnthropic, db: Path, embedder: Embedder) -> None:
    fake.clear()
    with Memory(db, embedder=embedder, background_embedding=False) as memory:
        client = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        fake.enqueue(
            anthropic_tool_use(("memory", {"command": "view", "path": "/memories"})),
            anthropic_tool_use(("memory", {"command": "view", "path": "/memories/ana.md"})),
            anthropic_text("Peanut-free meal and a window seat, as you noted."),
        )
        client.beta.messages.tool_runner(
            model="claude-sonnet-4-6",
            max_tokens=512,
            messages=[{"role": "user", "content": "Book my flight, please."}],
            tools=[MemoryTool(memory, user_id="ana")],
        ).until_done()
        bodies = [r.json() for r in fake.messages_requests()]
        assert "71B\t/memories/ana.md" in tool_results(bodies[1])[0]
        assert tool_results(bodies[2])[-1] == (
            "Here's the content of /memories/ana.md with line numbers:\n"
            "     1\tAna is allergic to peanuts.\n"
            "     2\tShe prefers a window seat on long flights.\n"
            "     3\t"
        )
        hits = memory.search("Which foods must be avoided for her?", user_id="ana", limit=3)
        assert hits and hits[0].record.metadata["path"] == "/memories/ana.md"
        assert "peanuts" in hits[0].record.text


def test_notes_survive_into_a_new_session_hash_embedder(tmp_path: Path) -> None:
    with FakeAnthropic() as fake:
        first_session(fake, tmp_path / "m.db", HashEmbedder())
        # the hash embedder matches words, not meaning: ask with a shared word
        fake.clear()
        with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as memory:
            memory.flush()
            hits = memory.search("peanuts", user_id="ana")
            assert hits[0].record.metadata["path"] == "/memories/ana.md"
            assert memory.search("peanuts", user_id="bob") == []


@pytest.mark.slow
def test_notes_found_by_meaning_in_a_new_session(tmp_path: Path) -> None:
    from contextos.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    with FakeAnthropic() as fake:
        first_session(fake, tmp_path / "m.db", embedder)
        # decoys, so the search has to rank by meaning
        with Memory(tmp_path / "m.db", embedder=embedder, background_embedding=False) as m:
            tool = MemoryTool(m, user_id="ana")
            tool.call(
                {
                    "command": "create",
                    "path": "/memories/work.md",
                    "file_text": "Quarterly report is due on Friday.\n",
                }
            )
            tool.call(
                {
                    "command": "create",
                    "path": "/memories/music.md",
                    "file_text": "Likes jazz and old vinyl records.\n",
                }
            )
        second_session(fake, tmp_path / "m.db", embedder)


def test_async_memory_tool_with_the_async_tool_runner(tmp_path: Path) -> None:
    import asyncio

    from contextos.agent import AsyncMemoryTool

    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        fake.enqueue(
            anthropic_tool_use(
                ("memory", {"command": "create", "path": "/memories/a.md", "file_text": "hi\n"})
            ),
            anthropic_tool_use(("memory", {"command": "view", "path": "/memories/../a.md"})),
            anthropic_text("done"),
        )

        async def go() -> None:
            async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test") as client:
                await client.beta.messages.tool_runner(
                    model="claude-sonnet-4-6",
                    max_tokens=64,
                    messages=[{"role": "user", "content": "note hi"}],
                    tools=[AsyncMemoryTool(memory, user_id="ana")],
                ).until_done()

        asyncio.run(go())
        bodies = [r.json() for r in fake.messages_requests()]
        assert tool_results(bodies[1]) == ["File created successfully at: /memories/a.md"]
        last = bodies[2]["messages"][-1]["content"][0]
        assert last["is_error"] is True
        assert tool_results(bodies[2])[-1] == (
            "Path '/memories/../a.md' would escape /memories directory"
        )
        assert MemoryTool(memory, user_id="ana").files.read("/memories/a.md") == "hi\n"
