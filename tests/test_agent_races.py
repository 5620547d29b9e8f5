"""Several processes edit one owner's core blocks and memory-tool files on one SQLite file
(the server, the CLI and an agent's own process do): no edit is lost, no file is doubled."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from contextos import Memory
from contextos.agent.core_memory import CoreMemory
from contextos.agent.files import MemoryFiles
from contextos.testing.embedders import HashEmbedder

WORKERS = 4
EDITS = 5

#: One editing process: it opens the file, says "ready", waits for "go" on stdin (so
#: every worker starts at once), then edits; it prints what each create answered.
WORKER = """
import sys
from contextos import Memory
from contextos.agent.core_memory import CoreMemory
from contextos.agent.files import MemoryFiles
from contextos.agent.paths import MemoryFileError
from contextos.agent.tools import AgentTools
from contextos.testing.embedders import HashEmbedder

db, me, edits = sys.argv[1], sys.argv[2], int(sys.argv[3])
memory = Memory(db, embedder=HashEmbedder(), background_embedding=False)
tools = AgentTools(CoreMemory(memory, user_id="ana"))
files = MemoryFiles(memory, user_id="ana")
print("ready", flush=True)
sys.stdin.readline()
try:
    print(files.create("/memories/notes.md", f"written by {me}\\n"), flush=True)
except MemoryFileError as exc:
    print("refused:", exc, flush=True)
for i in range(edits):
    out = tools.execute("core_memory_append", {"label": "human", "content": f"fact-{me}-{i}"})
    assert not out.is_error, out.text
    files.insert("/memories/log.md", 0, f"line-{me}-{i}")
    while True:  # a counter: read it, then replace exactly what was read
        n = int(files.read("/memories/count.md").strip("<>"))
        try:
            files.str_replace("/memories/count.md", f"<{n}>", f"<{n + 1}>")
            break
        except MemoryFileError:
            pass
memory.close()
"""


def _run_workers(db: Path) -> list[str]:
    """Start the workers, let them go together, and return their output lines."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(w), str(EDITS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * WORKERS, outs
        return [line for out in outs for line in out.splitlines()]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_parallel_processes_lose_no_edit_and_make_no_duplicate(tmp_path: Path) -> None:
    """Why: an edit read the block or file, changed it and wrote it back with no lock,
    so of 16 parallel appends 9 were kept, and 6 creates of one path made 5 files."""
    db = tmp_path / "race.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        files = MemoryFiles(memory, user_id="ana")
        files.create("/memories/log.md", "start\n")
        files.create("/memories/count.md", "<0>")
    lines = _run_workers(db)
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        human = CoreMemory(memory, user_id="ana").get("human").value.split("\n")
        expected = {f"fact-{w}-{i}" for w in range(WORKERS) for i in range(EDITS)}
        assert sorted(human) == sorted(expected)
        files = MemoryFiles(memory, user_id="ana")
        log = files.read("/memories/log.md").split("\n")
        assert sorted(x for x in log if x.startswith("line-")) == sorted(
            f"line-{w}-{i}" for w in range(WORKERS) for i in range(EDITS)
        )
        assert files.read("/memories/count.md") == f"<{WORKERS * EDITS}>"
        assert sum(x.startswith("File created successfully") for x in lines) == 1, lines
        tagged = memory.get_all(user_id="ana", limit=1000)
        notes = [r for r in tagged if r.metadata.get("path") == "/memories/notes.md"]
        blocks = [r for r in tagged if r.metadata.get("label") == "human"]
        assert len(notes) == 1 and len(blocks) == 1


_AGENT_APPENDS = """
import sys
from contextos import Memory
from contextos.agent.core_memory import CoreMemory
from contextos.agent.files import MemoryFiles
from contextos.agent.paths import MemoryFileError
from contextos.testing.embedders import HashEmbedder

import os

db, stop = sys.argv[1], sys.argv[2]
with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
    core = CoreMemory(m, user_id="ana", blocks={"human": 100_000, "persona": 100})
    files = MemoryFiles(m, user_id="ana")
    k = 0
    while not os.path.exists(stop):
        k += 1
        core.append("human", f"agent line {k}")
        try:
            files.insert("/memories/ana.md", 0, f"agent line {k}")
        except MemoryFileError:  # changed under it: told to view again, nothing written
            pass
"""


def test_an_operators_edit_is_never_written_over_by_an_agents_edit(tmp_path: Path) -> None:
    """An agent appends to its core block and inserts into its memory file (each edit
    reads, changes and writes under the owner's lock) while an operator edits the same
    records with ``Memory.update`` (the inspector's Save, ``PATCH /v1/memories``, MCP
    ``update_memory``), which the lock does not hold off. The agent's write went over
    whatever was stored by then: 51 of 150 acknowledged operator edits were lost, and a
    redacted passport number came back (a review). Every acknowledged operator line
    must be in the final block and file."""
    db = tmp_path / "race.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        block = CoreMemory(m, user_id="ana", blocks={"human": 100_000, "persona": 100})
        block_id = block.set("human", "Name: Ana").memory_id
        files = MemoryFiles(m, user_id="ana")
        files.create("/memories/ana.md", "Name: Ana\n")
        file_id = files.files()[0].memory_id
        stop = tmp_path / "stop"
        agent = subprocess.Popen([sys.executable, "-c", _AGENT_APPENDS, str(db), str(stop)])
        acknowledged: list[str] = []
        try:
            deadline = time.monotonic() + 60
            while "agent line 3" not in block.get("human").value:  # the agent is at work
                assert agent.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            for j in range(100):
                for record_id in (block_id, file_id):
                    before = m.get(record_id)
                    assert before is not None
                    m.update(record_id, f"{before.text}\noperator line {j}")
                acknowledged.append(f"operator line {j}")
                time.sleep(0.005)
        finally:
            stop.touch()
            assert agent.wait(timeout=120) == 0
        final = [m.get(record_id) for record_id in (block_id, file_id)]
    for record in final:
        assert record is not None
        lost = [line for line in acknowledged if line not in record.text]
        assert not lost, f"{len(lost)} of {len(acknowledged)} operator edits lost"


_ARCHIVE = """
import sys
from contextos import Memory
from contextos.agent.tools import scoped_tools
from contextos.testing.embedders import HashEmbedder

import os, time

with Memory(sys.argv[1], embedder=HashEmbedder(), background_embedding=False) as m:
    tools = scoped_tools(m, user_id="ana")
    while not os.path.exists(sys.argv[2]):  # every agent starts at once
        time.sleep(0.005)
    for k in range(30):
        out = tools.execute("archival_memory_insert", {"content": f"Ana's flight {k} is at B{k}"})
        assert not out.is_error, out.text
"""


def test_agents_storing_one_passage_at_once_store_it_once(tmp_path: Path) -> None:
    """Two agents of one user remembering the same facts at once: the look-up of the
    passage already stored and the add ran without a lock, so both added it (a review:
    four processes, 40 passages, 56 records; a search gave one passage 3 of 5 slots)."""
    db = tmp_path / "archive.db"
    Memory(db, embedder=HashEmbedder(), background_embedding=False).close()
    go = tmp_path / "go"
    agents = [
        subprocess.Popen([sys.executable, "-c", _ARCHIVE, str(db), str(go)]) for _ in range(4)
    ]
    time.sleep(2.0)  # each has opened its Memory and waits
    go.touch()
    assert [a.wait(timeout=120) for a in agents] == [0, 0, 0, 0]
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        texts = [r.text for r in m.get_all(user_id="ana", limit=1000)]
    assert sorted(texts) == sorted(f"Ana's flight {k} is at B{k}" for k in range(30))
