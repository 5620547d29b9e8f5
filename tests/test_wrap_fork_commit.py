"""A child forked while the parent's wrapped client has a background commit in flight
(review s42, diff42B finding 1).

The commits are waited for on a condition their threads notify as they end. A fork's
child has none of the parent's threads, so nothing ever notified it: the child hung for
good in ``Memory.close()`` (a ``sys.exit()`` inside ``with Memory(...)``) and in its next
wrapped call (instead of the store's clear "opened before the fork" error), and its exit
waited ``EXIT_WAIT_S`` (10 s). A gunicorn ``--preload`` worker or a ``multiprocessing``
fork child that touched the client never answered. Now the child forgets the parent's
commits in flight; the parent still finishes its own.

The commit is held in flight through the store the Memory writes to (its append of the
reply waits for the test), the real ``anthropic`` SDK client talks to the loopback fake,
and the children are real forks: ``os.fork()`` in a subprocess (for the interpreter's
exit) and a ``multiprocessing`` fork child of the test process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4-6"
FORK = multiprocessing.get_context("fork")
#: How long a child may take to end: well under the exit hook's ``EXIT_WAIT_S`` (10 s).
PROMPT_S = 5.0

#: The parent makes one wrapped call whose commit waits at the store's append of the
#: reply, forks, gives the child 15 s (then kills it), lets its commit finish and prints
#: how long the child took and what it said (a ``call`` child: its call's error).
_FORKING = """
import atexit, json, os, sys, threading, time
import anthropic
from contextos.engine.session import Session
from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder

url, db, how, said = sys.argv[1:5]


class Held:  # the store as the Memory sees it: the append of the reply waits for release
    def __init__(self, store):
        self.store, self.entered, self.release = store, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.store, name)

    def append_turns(self, scope, messages, tokens, **kwargs):
        if messages and messages[-1].role == "assistant":
            self.entered.set()
            assert self.release.wait(60), "never released"
        return self.store.append_turns(scope, messages, tokens, **kwargs)


def ask(client, text):
    client.messages.create(model="claude-sonnet-4-6", max_tokens=32,
                           messages=[{"role": "user", "content": text}])


def child(client):
    if how == "call":
        try:
            ask(client, "again")
            out = "the call returned"
        except StoreError as exc:
            out = str(exc)
        with open(said, "w") as f:
            f.write(out)
        os._exit(0)
    if how == "exit":  # the interpreter's exit hooks, the with block left open
        atexit._run_exitfuncs()
        os._exit(0)
    sys.exit(0)  # "close": unwinds the with block, which closes the Memory


store = Held(SQLiteStore(db))
sdk = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
    client = wrap(sdk, memory=memory, session="s", user_id="ana")
    ask(client, "hi")
    assert store.entered.wait(60)  # the commit of the reply is in flight now
    pid = os.fork()
    if pid == 0:
        child(client)
    start = time.monotonic()
    while time.monotonic() - start < 15:
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    took = time.monotonic() - start
    store.release.set()
    client.flush()
    log = [(t.message.role, t.message.content) for t in Session(memory, "s", user_id="ana").turns()]
    remembered = sorted(r.text for r in memory.get_all(user_id="ana"))
print(json.dumps({"took": took, "log": log, "remembered": remembered}))
"""


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(reply=lambda body: "hello there") as server:
        yield server


@pytest.mark.parametrize("how", ["close", "exit", "call"])
def test_a_child_forked_during_a_commit_ends_at_once_and_the_parent_commits(
    fake: FakeAnthropic, tmp_path: Path, how: str
) -> None:
    """``close``: ``sys.exit()`` inside ``with Memory(...)`` (it hung for good); ``exit``:
    the interpreter's exit hooks (10 s); ``call``: the child's next wrapped call fails at
    once with the store's fork error (it hung for good)."""
    said = tmp_path / "said.txt"
    run = subprocess.run(
        [sys.executable, "-c", _FORKING, fake.base_url, str(tmp_path / "m.db"), how, str(said)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["took"] < PROMPT_S, run.stderr
    if how == "call":
        assert "before this process was forked" in said.read_text()
    # The parent's commit was the parent's to finish, and it did.
    assert result["log"] == [["user", "hi"], ["assistant", "hello there"]]
    assert result["remembered"] == ["hello there", "hi"]


class Held:
    """The store as the Memory sees it: its append of a reply (the commit) waits for
    ``release``; ``entered`` is set once it waits."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.entered, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_turns(self, scope: Any, messages: Any, tokens: Any, **kwargs: Any) -> Any:
        if messages and messages[-1].role == "assistant":
            self.entered.set()
            assert self.release.wait(60), "never released"
        return self.store.append_turns(scope, messages, tokens, **kwargs)


def _call_then_close(queue: Any, client: Any, memory: Memory) -> None:
    try:
        client.messages.create(
            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "again"}]
        )
        queue.put("the call returned")
    except Exception as exc:  # noqa: BLE001 - what the child saw goes back to the test
        queue.put(f"{type(exc).__name__}: {exc}")
    memory.close()
    queue.put("closed")


def test_a_multiprocessing_fork_child_fails_its_call_and_closes(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    """A ``multiprocessing`` fork child of a process whose wrapped client was committing:
    its call fails with the store's fork error and its ``Memory.close()`` returns (both
    hung for good); the parent's commit lands."""
    store = Held(SQLiteStore(tmp_path / "m.db"))
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    client = wrap(sdk, memory=memory, session="s", user_id="ana")
    try:
        client.messages.create(
            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        )
        assert store.entered.wait(60)  # the commit of the reply is in flight now
        queue = FORK.Queue()
        child = FORK.Process(target=_call_then_close, args=(queue, client, memory))
        child.start()
        child.join(15)
        if child.is_alive():
            child.kill()
            child.join()
            pytest.fail("the forked child did not end in 15 s")
        said = [queue.get(timeout=5) for _ in range(2)]
        assert child.exitcode == 0, said
        assert "StoreError" in said[0] and "before this process was forked" in said[0], said
        assert said[1] == "closed"
    finally:
        store.release.set()
    client.flush()
    turns = Session(memory, "s", user_id="ana").turns()
    assert [(t.message.role, t.message.content) for t in turns] == [
        ("user", "hi"),
        ("assistant", "hello there"),
    ]
    memory.close()
    sdk.close()
