"""A question whose commit was lost with its process is remembered by the session's next call.

A wrapped call logs its question before the model is called; its commit (on a background
thread) logs the reply and remembers the exchange. A process killed right after the call
returned (``kill -9``, an out-of-memory kill, ``docker stop`` to an app with no SIGTERM
handler) lost the commit, and no later call remembered the question (a kill review: 27
of 90 questions never reached memory). Now each owed turn carries its call's hold, the
commit settles it, and a later call of the session (the restarted app's) does what a
dead holder owed, once.

A real child process makes a wrapped call with the real ``anthropic`` SDK client against
the loopback fake, and its commit is stopped at the memory seam (a MemoryLike passed to
``wrap`` whose ``add`` kills the process, or waits for the test); the next call is the
test process's own, on the same SQLite file or PostgreSQL schema. Also: a live holder's
commit is not done twice, a memory the user deleted after its commit does not come back,
a question an edit cut is not recovered, and nothing is owed with ``remember=False``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.holders import holder_claim  # noqa: E402
from contextos.engine.owed import COMMITS_KEY, OWED_KEY, Commits  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from memory_support import OPEN_MEMORY_IN_CHILD, child_storage  # noqa: E402

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
CLAUDE = "claude-sonnet-4-6"
Q1 = "I am allergic to peanuts and my sister is called Rita."
Q2 = "What should I cook tonight?"
REPLY = "Noted, no peanuts."

#: A restarted app's first call, in a process of its own: one wrapped call of session
#: "chat" (user "ana") with ``messages`` (JSON), then by ``mode``: ``kill`` -- its commit
#: kills the process (SIGKILL) at its first memory write, once the call has returned;
#: ``hold`` -- the commit says COMMITTING and waits for a line on stdin first; ``plain``
#: -- the commit runs, and the process exits cleanly; ``forget`` -- ``remember=False``,
#: and the process is killed as soon as the call returned.
CHILD = (
    """
import json, os, signal, sys, threading
import anthropic
from contextos.providers import wrap

kind, where, schema, base_url, mode, messages, user = sys.argv[1:8]
"""
    + OPEN_MEMORY_IN_CHILD
    + """


class Stopped:
    '''The memory, whose first add stops the commit (kills it, or holds it).'''

    def __init__(self, memory):
        self.memory, self.first = memory, True

    def __getattr__(self, name):
        return getattr(self.memory, name)

    def add(self, *args, **kwargs):
        if self.first:
            self.first = False
            returned.wait(30)  # the call has returned to the app
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hold":
                print("COMMITTING", flush=True)
                sys.stdin.readline()
        return self.memory.add(*args, **kwargs)


returned = threading.Event()
sdk = anthropic.Anthropic(base_url=base_url, api_key="t", max_retries=0)
options = {"remember": False} if mode == "forget" else {}
client = wrap(sdk, memory=Stopped(memory), session="chat", user_id=user, **options)
out = client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                             messages=json.loads(messages))
print("RETURNED", flush=True)
returned.set()
if mode == "forget":
    os.kill(os.getpid(), signal.SIGKILL)
client.flush()
memory.close()
print("DONE", flush=True)
"""
)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(reply=lambda _body: REPLY) as server:
        yield server


def _child(
    where: list[str], fake: FakeAnthropic, mode: str, messages: Any, user: str = "ana"
) -> list[str]:
    import json

    args = [*where, fake.base_url, mode, json.dumps(messages), user]
    return [sys.executable, "-c", CHILD, *args]


def _run_child(
    where: list[str], fake: FakeAnthropic, mode: str, messages: Any, user: str = "ana"
) -> str:
    """Run :data:`CHILD` to its end (or its kill); its stdout."""
    done = subprocess.run(
        _child(where, fake, mode, messages, user), capture_output=True, text=True, timeout=120
    )
    assert "RETURNED" in done.stdout, done.stderr
    if mode in ("kill", "forget"):
        assert done.returncode == -9, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    return done.stdout


def _ask(
    memory: Memory, fake: FakeAnthropic, question: str, user: str = "ana", **options: Any
) -> None:
    """The next call of the session, in this process, and its commit."""
    with anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk:
        client = wrap(sdk, memory=memory, session="chat", user_id=user, **options)
        client.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": question}]
        )
        client.flush()


def _times_remembered(memory: Memory, text: str, user: str = "ana") -> int:
    records = memory.get_all(session_id="chat", user_id=user, limit=1000)
    return sum(1 for r in records if r.text == text)


def _logged(memory: Memory) -> list[str]:
    session = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
    return [t.message.content for t in session.store.turns(session.scope)]


@BOTH
def test_a_question_whose_commit_was_killed_is_remembered_by_the_next_call(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "kill", [{"role": "user", "content": Q1}])
        assert _logged(memory) == [Q1, REPLY]  # the reply was logged, then the kill
        assert _times_remembered(memory, Q1) == 0

        _ask(memory, fake, Q2)
        assert _times_remembered(memory, Q1) == 1
        assert _times_remembered(memory, REPLY) == 2  # the lost commit's and this call's
        assert _times_remembered(memory, Q2) == 1
        _ask(memory, fake, "And tomorrow?")  # settled: never again
        assert _times_remembered(memory, Q1) == 1
        assert _times_remembered(memory, REPLY) == 3


@BOTH
def test_a_live_holders_commit_is_not_done_twice(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        proc = subprocess.Popen(
            _child(where, fake, "hold", [{"role": "user", "content": Q1}]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "RETURNED"
            assert proc.stdout.readline().strip() == "COMMITTING"
            _ask(memory, fake, Q2)  # the holder runs: its question is its own to remember
            assert _times_remembered(memory, Q1) == 0
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and "DONE" in out, err
        finally:
            proc.kill()
            proc.wait()
        assert _times_remembered(memory, Q1) == 1
        _ask(memory, fake, "And tomorrow?")
        assert _times_remembered(memory, Q1) == 1


@BOTH
def test_a_memory_deleted_after_its_commit_does_not_come_back(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "plain", [{"role": "user", "content": Q1}])
        [record] = [r for r in memory.get_all(session_id="chat", user_id="ana") if r.text == Q1]
        memory.delete(record.id)  # the user's: hard-deleted, nothing left to tell it by
        _ask(memory, fake, Q2)
        assert _times_remembered(memory, Q1) == 0
        meta = memory.store.session_meta(Session(memory.store, "chat", user_id="ana").scope)
        assert len(meta[COMMITS_KEY]["settled"]) == 2  # the child's call, and this one's


@BOTH
@pytest.mark.parametrize("edit_remembers", [True, False])
def test_a_question_an_edit_cut_is_not_recovered(
    kind: str, edit_remembers: bool, tmp_path: Path, fake: FakeAnthropic
) -> None:
    """The edit's own call (which deletes what the turns it cut had remembered), or with
    ``remember=False`` a later call, finds the killed commit's question cut: gone from
    the conversation, it is owed nothing."""
    with child_storage(kind, tmp_path) as (memory, where):
        q0, tom, felix = "Hello there.", "My cat is called Tom.", "My cat is called Felix."
        history = [{"role": "user", "content": q0}, {"role": "assistant", "content": REPLY}]
        _run_child(where, fake, "plain", history[:1])
        _run_child(where, fake, "kill", [*history, {"role": "user", "content": tom}])
        assert _times_remembered(memory, tom) == 0
        # The restarted app sends the conversation with the last message edited: a branch.
        with anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk:
            client = wrap(
                sdk, memory=memory, session="chat", user_id="ana", remember=edit_remembers
            )
            edited = [*history, {"role": "user", "content": felix}]
            client.messages.create(model=CLAUDE, max_tokens=64, messages=edited)
            client.flush()
        assert _logged(memory) == [q0, REPLY, tom, REPLY, felix, REPLY]
        _ask(memory, fake, Q2)
        assert _times_remembered(memory, tom) == 0
        assert _times_remembered(memory, felix) == int(edit_remembers)
        # Q0's, Felix's when remembered, Q2's; not the cut one's
        assert _times_remembered(memory, REPLY) == 2 + int(edit_remembers)


@BOTH
def test_nothing_is_owed_by_a_call_that_remembers_nothing(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "forget", [{"role": "user", "content": Q1}])
        session = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
        [asked, *_] = session.store.turns(session.scope)
        assert OWED_KEY not in asked.message.metadata
        _ask(memory, fake, Q2)
        assert _times_remembered(memory, Q1) == 0
        assert _times_remembered(memory, Q2) == 1


@BOTH
def test_two_processes_recovering_at_once_remember_it_once(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "kill", [{"role": "user", "content": Q1}])
        procs = [
            subprocess.Popen(
                _child(where, fake, "plain", [{"role": "user", "content": f"Question {n}?"}]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(3)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0 and "DONE" in out, err
        assert _times_remembered(memory, Q1) == 1
        assert all(_times_remembered(memory, f"Question {n}?") == 1 for n in range(3))


@contextmanager
def _second_handle(where: list[str]) -> Iterator[Any]:
    """Another store on the same storage, as a second process holds it."""
    kind, path, schema = where
    if kind == "sqlite":
        from contextos.store.sqlite import SQLiteStore

        store: Any = SQLiteStore(path)
    else:
        from contextos.store.postgres import PostgresStore

        store = PostgresStore(path, schema=schema)
    try:
        yield store
    finally:
        store.close()


@BOTH
def test_of_two_that_find_a_dead_calls_turns_owed_one_takes_them(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    """Both found the hold owed before either took it (the race the compare-and-set
    decides, which the processes above rarely hit): one takes it, and the other's
    take finds it held by a live taker."""
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "kill", [{"role": "user", "content": Q1}])
        with _second_handle(where) as other:
            takers = [
                Commits(Session(store, "chat", tenant=memory.tenant, user_id="ana"))
                for store in (memory.store, other)
            ]
            found = [
                c.find(c.session.conversation(), "a call of ours", ("ana", None)) for c in takers
            ]
            assert [[t.message.content for t in o.turns] for [o] in found] == [[Q1, REPLY]] * 2
            taken = [c.take(o, holder_claim()) for c, [o] in zip(takers, found, strict=True)]
            assert taken.count(True) == 1


@BOTH
def test_in_a_shared_session_a_dead_call_is_recovered_in_its_own_users_scope(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    """Ana's call took over Bob's killed commit and stored his question as Ana's memory,
    which Bob's scope (and his ``forget``) never found (a review). Bob's next call does it."""
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "kill", [{"role": "user", "content": Q1}], user="bob")
        _ask(memory, fake, Q2)  # Ana's
        assert _times_remembered(memory, Q1, user="ana") == 0
        assert _times_remembered(memory, Q1, user="bob") == 0
        _ask(memory, fake, "And tomorrow?", user="bob")
        assert _times_remembered(memory, Q1, user="bob") == 1
        assert _times_remembered(memory, Q1, user="ana") == 0


@BOTH
def test_a_forget_of_the_other_user_brings_back_no_deleted_memory(
    kind: str, tmp_path: Path, fake: FakeAnthropic
) -> None:
    """``forget`` of Ana resets the shared session's meta, and with it the list of the
    commits that ended: Bob's next call, in a fresh process, took his settled call for a
    dead one and remembered the question whose memory he had deleted (a review)."""
    with child_storage(kind, tmp_path) as (memory, where):
        _run_child(where, fake, "plain", [{"role": "user", "content": Q1}], user="bob")
        _run_child(where, fake, "plain", [{"role": "user", "content": Q2}], user="ana")
        [said] = [r for r in memory.get_all(session_id="chat", user_id="bob") if r.text == Q1]
        memory.delete(said.id)
        memory.forget("ana")
        _run_child(where, fake, "plain", [{"role": "user", "content": "And now?"}], user="bob")
        assert _times_remembered(memory, Q1, user="bob") == 0
