"""An offload that dies half way loses no turn and stores none twice.

A compaction saves its rotation first and stores the rotated turns in long-term memory
after; the state lists them as unarchived until that is confirmed. These tests kill a
real process inside the archive (before and after its records are written) and check
that the next offload stores each rotated turn exactly once; and that a turn longer
than a memory may be is stored in pieces instead of failing every offload.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.memory.ingest import MAX_TEXT_CHARS
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

LOREM = "we talked about the trip to Lisbon, the flights and the hotel near the river"

#: A child process that offloads through a memory (the ``MemoryLike`` seam) whose
#: ``add`` kills the process, after writing the records or before.
DIE_IN_ADD = """
import os, signal, sys
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


class DiesInAdd:
    def __init__(self, memory, after):
        self.memory, self.after = memory, after

    def search(self, query, **kwargs):
        return self.memory.search(query, **kwargs)

    def get_all(self, **kwargs):
        return self.memory.get_all(**kwargs)

    def delete_many(self, memory_ids, *, purge=False):
        return self.memory.delete_many(memory_ids, purge=purge)

    def add(self, messages, **scope):
        if self.after:
            self.memory.add(messages, **scope)
        os.kill(os.getpid(), signal.SIGKILL)


db, after = sys.argv[1], sys.argv[2] == "after"
memory = Memory(db, embedder=HashEmbedder(), background_embedding=False)
session = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
session.compact(300, "offload", memory=DiesInAdd(memory, after), force=True)
"""


def _memory(db: Path) -> Memory:
    return Memory(db, embedder=HashEmbedder(), background_embedding=False)


def _session(memory: Memory) -> Session:
    return Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")


def _archived_seqs(memory: Memory) -> list[int]:
    return sorted(int(r.metadata["turn_seq"]) for r in memory.get_all(user_id="ana", limit=1000))


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_offload_killed_in_its_archive_loses_and_repeats_no_turn(
    tmp_path: Path, when: str
) -> None:
    # The state said "archived" as the rotation was saved: a process killed before
    # its memory.add left those turns out of the window and out of memory for good.
    db = tmp_path / "m.db"
    with _memory(db) as memory:
        _session(memory).add(
            *[Message(("user", "assistant")[i % 2], f"turn {i} {LOREM}") for i in range(30)]
        )
    child = subprocess.run([sys.executable, "-c", DIE_IN_ADD, str(db), when], timeout=120)
    assert child.returncode == -9
    with _memory(db) as memory:
        app = _session(memory)
        owed = app.state().unarchived
        assert owed and app.state().start_seq > max(owed)  # out of the window, listed
        # The dead process's hold does not last its lease (tests/test_offload_dead_holder.py)
        app.compact(300, "offload", memory=memory)
        assert _archived_seqs(memory) == list(owed)  # each once, none lost
        assert app.state().unarchived == ()


def test_a_turn_longer_than_a_memory_is_archived_in_pieces(tmp_path: Path) -> None:
    # memory.add refuses a text over MAX_TEXT_CHARS, so such a turn failed every
    # offload with "split it first".
    with _memory(tmp_path / "m.db") as memory:
        app = _session(memory)
        app.add(Message("user", "word " * (MAX_TEXT_CHARS // 4)))
        app.add(*[Message(("assistant", "user")[i % 2], f"turn {i} {LOREM}") for i in range(10)])
        done = app.compact(300, "offload", memory=memory, force=True)
        assert done.plan is not None and 0 in done.plan.rotate
        pieces = [
            r for r in memory.get_all(user_id="ana", limit=1000) if r.metadata["turn_seq"] == 0
        ]
        assert len(pieces) == 2
        assert sum(len(r.text) for r in pieces) >= MAX_TEXT_CHARS


def test_a_tool_call_turn_is_archived_as_its_calls(tmp_path: Path) -> None:
    # An assistant turn that only called a tool has no text: it was skipped, so the
    # archived result did not say which call made it; and rotated alone in its
    # author's run, memory.add refused the archive ("every message is empty").
    from contextos.types import ToolCall

    with _memory(tmp_path / "m.db") as memory:
        app = _session(memory)
        app.add(Message("user", f"what is the weather in Lisbon? {LOREM}"))
        call = ToolCall("c1", "weather", '{"city": "Lisbon"}')
        app.add(Message("assistant", "", tool_calls=(call,)))
        app.add(Message("tool", f"sunny, 24 degrees {LOREM}", tool_call_id="c1"))
        app.add(*[Message(("user", "assistant")[i % 2], f"turn {i} {LOREM}") for i in range(10)])
        done = app.compact(300, "offload", memory=memory, force=True)
        assert done.plan is not None and 1 in done.plan.rotate
        texts = {
            int(r.metadata["turn_seq"]): r.text for r in memory.get_all(user_id="ana", limit=100)
        }
        assert texts[1] == '[called weather({"city": "Lisbon"})]'
        assert app.state().unarchived == ()
