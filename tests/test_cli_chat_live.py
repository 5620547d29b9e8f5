"""``contextos chat`` live (a review of session 41): typed at a terminal with its replies
piped on (``chat --json | tee chat.jsonl``), stopped by SIGTERM or SIGHUP in the middle of
a turn, fed a line holding a NUL. The real command in its own process, with a real pty
and real signals; the in-process case uses a real SQLite memory file."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from cli_support import cli_env, reaped, run_cli
from contextos.llm.tokens import Tokenizer
from contextos.memory import Memory
from contextos.providers.chat import Chat
from contextos.testing.embedders import HashEmbedder, Vectors
from contextos.types import Message

CLI = (sys.executable, "-m", "contextos")


def test_chat_json_typed_at_a_terminal_and_piped_on_is_json_lines(tmp_path: Path) -> None:
    """Was: the ``you>`` prompt went to stdout, so with stdin a terminal and stdout a
    pipe every line began with it (and a stray one ended the stream): none parsed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "chat", "--json"],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(tmp_path / "c.db"),
        )
        os.close(slave)
        with reaped(proc):
            os.write(master, b"I live in Porto\nwhere do I live?\n/quit\n")
            out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 2, out
    assert [json.loads(line)["reply"].startswith("From memory") for line in lines] == [
        False,
        True,
    ]
    assert err.decode().count("you>") == 3  # the prompt still shows, on the terminal's side


def _friends(n: int) -> str:
    return "".join(f"My friend number {i} is called Name{i}\n" for i in range(n))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_chat_stopped_by_a_signal_mid_chat_remembers_every_question_it_logged(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Was: SIGTERM (``timeout``, a service stop) or SIGHUP (a closed terminal) ended the
    process on the spot, with no ``finally``: about 1 kill in 6 left the last question
    logged, unanswered and never remembered. Now it unwinds as Ctrl-C does: the commit in
    flight drains, and the log and memory agree; exit 143, "terminated"."""
    db = tmp_path / "c.db"
    proc = subprocess.Popen(
        [*CLI, "chat", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(db),
    )
    with reaped(proc):
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(_friends(300).encode())  # far more than it answers before the kill
        proc.stdin.flush()
        for _ in range(3):  # mid-chat: replies coming
            assert json.loads(proc.stdout.readline())
        proc.send_signal(sig)
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 143, err
    assert err.strip().endswith("terminated") and "Traceback" not in err, err
    turns = json.loads(run_cli("--json", "session", "show", "chat", db=db).stdout)["turns"]
    asked = [t["message"]["content"] for t in turns if t["message"]["role"] == "user"]
    assert len(asked) >= 3
    memories = json.loads(run_cli("--json", "list", "-u", "me", "--limit", "1000", db=db).stdout)
    texts = " | ".join(m["text"] for m in memories)
    for question in asked:
        name = question.split()[-1]
        assert f"{name} " in f"{texts} ", (question, texts)


class _StopWhenCountingTheReply:
    """The deterministic tokenizer, but a Ctrl-C lands as the offline reply is counted:
    between the question logged and the commit that remembers it."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner
        self.name = inner.name
        self.exact = inner.exact

    def count(self, text: str) -> int:
        if text.startswith("I don't have anything on that yet"):
            raise KeyboardInterrupt
        return self.inner.count(text)

    def count_messages(self, messages: Sequence[Message]) -> int:
        return self.inner.count_messages(messages)


def test_an_interrupt_between_logging_a_question_and_its_commit_remembers_it(
    tmp_path: Path,
) -> None:
    """Was: ``Chat`` logged the question (``prepare``) and remembered it only in the
    commit at the end of the turn; an interrupt in between left it in the log, never
    remembered. Now it is remembered as a failed call's question is."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        chat = Chat(memory, provider="offline", session_id="c", user_id="ann")
        chat.context.tokenizer = _StopWhenCountingTheReply(chat.context.tokenizer)
        with pytest.raises(KeyboardInterrupt):
            chat.send("My friend is called Zoltan")
        chat.close()
        logged = [t.message.content for t in chat.context.session.turns()]
        assert logged == ["My friend is called Zoltan"]  # asked, never answered
        assert any("Zoltan" in r.text for r in memory.get_all(user_id="ann"))


class _GatedEmbedder(HashEmbedder):
    """The hash embedder, but a remembered fact (``User's ...``) waits for ``gate``: a
    commit still running when the main thread is interrupted."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def embed(self, texts: Sequence[str]) -> Vectors:
        if any("User's" in t for t in texts):
            assert self.gate.wait(30)
        return super().embed(texts)


def test_close_after_an_interrupted_close_still_waits_for_the_commit(tmp_path: Path) -> None:
    """Was: a Ctrl-C or SIGTERM while the main thread waited for a commit (the next
    turn's ``prepare``, or ``close``) marked the commit thread done while it ran (Python
    3.11's ``Thread.join``), so the next wait returned at once and ``chat`` closed the
    store under it: "Cannot operate on a closed database", the question never remembered
    (2 SIGTERMs in 7)."""
    gate = threading.Event()
    main = threading.main_thread().ident
    assert main is not None
    interrupt = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    release = threading.Timer(1.0, gate.set)
    with Memory(
        tmp_path / "m.db", embedder=_GatedEmbedder(gate), background_embedding=False
    ) as memory:
        chat = Chat(memory, provider="offline", session_id="c", user_id="ann")
        chat.send("My friend is called Zoltan")  # its commit waits at the gate
        interrupt.start()
        release.start()
        with pytest.raises(KeyboardInterrupt):
            chat.close()
        chat.close()  # waits for the commit still running
        assert gate.is_set()
        assert any("Zoltan" in r.text for r in memory.get_all(user_id="ann"))
    interrupt.join()
    release.join()


def test_a_chat_line_holding_nul_is_skipped_with_a_line_that_says_so(tmp_path: Path) -> None:
    """Was: the store refused the line, which ended the chat (exit 2) naming no line, and
    the lines after it were never read."""
    db = tmp_path / "m.db"
    said = b"I live in Porto\nlog line with a \x00 NUL\nwhere do I live?\n"
    out = run_cli("chat", "--json", db=db, stdin=said)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == (
        "stdin line 2 contains a NUL character (\\x00), which no store keeps "
        "(PostgreSQL cannot): skipped"
    )
    assert json.loads(out.stdout.splitlines()[-1])["reply"].endswith("lives in Porto")
    log = json.loads(run_cli("--json", "session", "show", "chat", db=db).stdout)
    assert [t["message"]["content"] for t in log["turns"]][::2] == [
        "I live in Porto",
        "where do I live?",
    ]
