"""The context engine from the shell: window retrieves memories, chat keeps facts, demo."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from cli_support import run_cli


def _memories_segment(report: dict[str, object]) -> dict[str, int]:
    segments = report["segments"]
    assert isinstance(segments, list)
    return next(s for s in segments if s["name"] == "memories")


def test_window_retrieves_the_users_memories(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("add", "Maya is allergic to peanuts", "-u", "maya", db=db)
    run_cli("add", "Maya runs every morning by the river", "-u", "maya", db=db)
    run_cli("add", "Bob is allergic to cats", "-u", "bob", db=db)
    run_cli("session", "add", "chat", "Plan dinner for Friday", "--user-id", "maya", db=db)
    ask = ("window", "--session", "chat", "-q", "what is Maya allergic to?")
    with_user = run_cli(*ask, "--user-id", "maya", "--json", db=db)
    assert with_user.returncode == 0, with_user.stderr
    seg = _memories_segment(json.loads(with_user.stdout))
    assert seg["items"] == 2 and seg["tokens"] > 0
    body = json.loads(run_cli(*ask, "--user-id", "maya", "--format", "anthropic", db=db).stdout)
    sent = json.dumps(body)
    assert "Maya is allergic to peanuts" in sent and "Bob is allergic" not in sent
    # no user: only memories filed under this session (none here), never other users'
    alone = json.loads(run_cli(*ask, "--json", db=db).stdout)
    assert _memories_segment(alone)["items"] == 0


def test_window_without_user_uses_the_sessions_memories(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("add", "the deploy key lives in the vault", "-s", "ops", db=db)
    run_cli("session", "add", "ops", "hello", db=db)
    out = run_cli("window", "--session", "ops", "-q", "where is the deploy key?", "--json", db=db)
    assert _memories_segment(json.loads(out.stdout))["items"] == 1


def test_window_prints_where_its_cost_comes_from(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("session", "add", "s", "hi", db=db)
    out = run_cli("window", "--session", "s", "-q", "hello?", db=db)
    assert out.returncode == 0 and "cache simulator" in out.stdout


def test_a_window_of_a_session_with_no_turns_says_so(tmp_path: Path) -> None:
    """A session id typed wrong gave a window of the question alone, exit 0 and no
    word: it looked like any other window."""
    db = tmp_path / "m.db"
    run_cli("session", "add", "chat", "hello", db=db)
    typo = run_cli("window", "--session", "chta", "-q", "hello?", "--json", db=db)
    assert typo.returncode == 0, typo.stderr  # the first question of a new session
    assert "note: session 'chta' has no turns" in typo.stderr
    assert json.loads(typo.stdout)["segments"]
    right = run_cli("window", "--session", "chat", "-q", "hello?", "--json", db=db)
    assert right.returncode == 0 and right.stderr == "", right.stderr
    # Turns left out for the budget are history all the same: no note.
    run_cli("session", "add", "chat", "word " * 400, db=db)
    tight = run_cli("window", "--session", "chat", "-q", "hello?", "--budget", "60", db=db)
    assert tight.returncode == 0 and "no turns" not in tight.stderr, tight.stderr


def test_an_unknown_model_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    run_cli("session", "add", "chat", "hello", db=db)
    (tmp_path / "t.txt").write_text("some text", encoding="utf-8")
    for args in (
        ("window", "--session", "chat", "-q", "hello?", "--model", "gpt-9"),
        ("count", str(tmp_path / "t.txt"), "--model", "gpt-9"),
        ("demo", "--model", "gpt-9"),
    ):
        out = run_cli(*args, db=db)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        assert "'--model'" in out.stderr and "unknown model 'gpt-9'" in out.stderr
        assert "gpt-4o" in out.stderr  # the known names
        assert out.stdout == ""


def test_a_tool_result_no_window_can_hold_is_logged_with_a_warning(tmp_path: Path) -> None:
    """`session add --role tool` logged a result whose call the CLI cannot log, and the
    window left it out without a word (docs/context-engine.md: nothing is dropped
    silently)."""
    from contextos.engine.session import Session
    from contextos.store import open_store
    from contextos.types import Message, ToolCall

    db = tmp_path / "m.db"
    run_cli("session", "add", "s3", "what's the weather in Lisbon?", db=db)
    orphan = run_cli(
        "session", "add", "s3", "sunny, 24C", "--role", "tool", "--tool-call-id", "t9", db=db
    )
    assert orphan.returncode == 0, orphan.stderr
    assert orphan.stderr.startswith("warning: turn #1 will never be in a window: ")
    assert "no assistant tool call with id 't9' is open in session 's3'" in orphan.stderr
    bare = run_cli("session", "add", "s3", "sunny", "--role", "tool", db=db)
    assert bare.returncode == 0 and "without a tool call id answers no call" in bare.stderr
    # Both are in the log (a warning, not a refusal).
    log = json.loads(run_cli("session", "show", "s3", "--json", db=db).stdout)
    assert [t["message"]["role"] for t in log["turns"]] == ["user", "tool", "tool"]
    # The assistant's call logged through the library: its result is sent, no warning.
    store = open_store(db)
    try:
        call = ToolCall(id="t10", name="weather", arguments='{"city": "Lisbon"}')
        Session(store, "s3").add(Message("assistant", "", tool_calls=(call,)))
    finally:
        store.close()
    answered = run_cli(
        "session", "add", "s3", "rain, 17C", "--role", "tool", "--tool-call-id", "t10", db=db
    )
    assert answered.returncode == 0 and answered.stderr == "", answered.stderr
    window = run_cli("window", "--session", "s3", "-q", "umbrella?", "--format", "anthropic", db=db)
    sent = window.stdout
    assert "rain, 17C" in sent and "sunny" not in sent, sent
    # A second result for the answered call is left out too, and said so.
    again = run_cli(
        "session", "add", "s3", "hail", "--role", "tool", "--tool-call-id", "t10", db=db
    )
    assert "no assistant tool call with id 't10' is open" in again.stderr


def test_chat_remembers_facts_not_questions(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    said = "I'm allergic to peanuts\nwhat am I allergic to?\nhi\n"
    # -u, as every other scoped command takes it (chat alone refused it: No such option).
    out = run_cli("chat", "-u", "ana", "--no-show-window", "--json", db=db, stdin=said)
    assert out.returncode == 0, out.stderr
    replies = [json.loads(doc)["reply"] for doc in _json_documents(out.stdout)]
    assert replies[1].startswith("From memory: ")
    assert replies[1].endswith("User is allergic to peanuts")
    stored = json.loads(run_cli("list", "-u", "ana", "--json", db=db).stdout)
    assert [m["text"] for m in stored] == ["User is allergic to peanuts"]
    log = json.loads(run_cli("session", "show", "chat-ana", "--json", db=db).stdout)
    assert [t["message"]["content"] for t in log["turns"]][::2] == [
        "I'm allergic to peanuts",
        "what am I allergic to?",
        "hi",
    ]  # the session log keeps every message


def test_a_chat_line_that_is_not_utf8_is_skipped_with_a_line_that_says_so(
    tmp_path: Path,
) -> None:
    """Python reads a byte that is not UTF-8 as a lone surrogate; sent on, it ended the
    chat (exit 2) with a tokenizer's error, and the lines after it were lost (a review)."""
    db = tmp_path / "m.db"
    said = b"hello\ncaf\xe9 au lait\nstill here?\n"
    out = run_cli("chat", "-u", "ana", "--no-show-window", "--json", db=db, stdin=said)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "stdin line 2 is not UTF-8 text: skipped"
    log = json.loads(run_cli("session", "show", "chat-ana", "--json", db=db).stdout)
    assert [t["message"]["content"] for t in log["turns"]][::2] == ["hello", "still here?"]


def test_two_users_chatting_share_no_log_by_default(tmp_path: Path) -> None:
    """Every user's `contextos chat` continued the one log "chat": ana's window held
    bob's passport number (and a provider would have been sent it in her requests)."""
    db = tmp_path / "m.db"
    bob = run_cli("chat", "-u", "bob", "--json", db=db, stdin="My passport number is PX55120QQ\n")
    assert bob.returncode == 0, bob.stderr
    ana = run_cli("chat", "-u", "ana", "--json", db=db, stdin="hello\n")
    assert ana.returncode == 0, ana.stderr
    [doc] = _json_documents(ana.stdout)
    assert "PX55120QQ" not in doc
    me = run_cli("chat", "--json", db=db, stdin="hi\n")  # the default user: the log "chat"
    assert me.returncode == 0 and "PX55120QQ" not in me.stdout
    shown = {
        sid: json.loads(run_cli("session", "show", sid, "--json", db=db).stdout)["turns"]
        for sid in ("chat", "chat-ana", "chat-bob")
    }
    assert [t["message"]["content"] for t in shown["chat-bob"]][0].startswith("My passport")
    assert [t["message"]["content"] for t in shown["chat-ana"]][0] == "hello"
    assert [t["message"]["content"] for t in shown["chat"]][0] == "hi"


def _json_documents(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON documents (one per chat turn)."""
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, end = decoder.raw_decode(text, i)
        docs.append(json.dumps(obj))
        i = end
    return docs


def test_demo_json(tmp_path: Path) -> None:
    out = run_cli("demo", "--json", "--keep", str(tmp_path / "demo.db"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["turns"] > 0 and report["raw_memories"] == report["turns"]
    assert report["facts"] and report["answers"]
    seg = {s["name"]: s for s in report["window"]["segments"]}
    assert seg["memories"]["tokens"] > 0
    assert "simulator" in report["cost"]["source"]
    assert (tmp_path / "demo.db").exists()


def test_demo_keep_on_a_database_holding_the_demo_refuses(tmp_path: Path) -> None:
    """Run twice on one ``--keep`` PATH (to try another ``--model``), the demo stored
    the sample again: each turn came back twice in retrieval, and it said "0 extracted
    facts" (a review, s57). The second run is refused, the database left as it was."""
    db = tmp_path / "demo.db"
    assert run_cli("demo", "--keep", str(db)).returncode == 0

    def rows() -> tuple[int, int]:
        with closing(sqlite3.connect(db)) as c:
            return (
                c.execute("SELECT count(*) FROM memories").fetchone()[0],
                c.execute("SELECT count(*) FROM turns").fetchone()[0],
            )

    stored = rows()
    again = run_cli("demo", "--keep", str(db), "--model", "claude-haiku-4-5")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("error: the database ")
    assert "holds the demo already" in again.stderr and "new --keep path" in again.stderr
    assert rows() == stored


def test_session_add_keeps_a_tool_results_call_id(tmp_path: Path) -> None:
    """Why: ``session add --role tool`` had no way to say which call a result answers."""
    db = tmp_path / "m.db"
    out = run_cli(
        "session", "add", "s", "22 C", "--role", "tool", "--tool-call-id", "call_1", db=db
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(run_cli("session", "show", "s", "--seq", "0", "--json", db=db).stdout)
    assert json.dumps(shown).count('"call_1"') == 1
    wrong = run_cli("session", "add", "s", "hi", "--tool-call-id", "call_2", db=db)
    assert wrong.returncode == 2 and "--role tool" in wrong.stderr


def test_chat_refuses_a_base_url_without_the_openai_provider(tmp_path: Path) -> None:
    """``chat --base-url URL`` without ``--provider openai`` chatted offline, the URL
    unused, and exited 0: a user who meant their local model got canned answers (a
    review)."""
    out = run_cli("chat", "--base-url", "http://127.0.0.1:9/v1", stdin="hi\n", db=tmp_path / "c.db")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--provider openai" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "c.db").exists()  # refused before anything was opened


def test_session_show_pages_cuts_long_turns_and_shows_tool_calls(tmp_path: Path) -> None:
    """``session show`` printed every turn whole (a 5 MB tool result: 8.8 MB for one
    session) with no way to page, and an assistant turn that only called a tool printed
    as an empty line (a review)."""
    from contextos.engine.session import Session
    from contextos.store import open_store
    from contextos.types import Message, ToolCall

    db = tmp_path / "show.db"
    store = open_store(db)
    try:
        s = Session(store, "s", user_id="ana")
        s.add(Message("user", "look it up"))
        call = ToolCall("call_1", "fetch", '{"url": "https://example.org"}')
        s.add(Message("assistant", "", tool_calls=(call,)))
        s.add(Message("tool", "x" * 5_000, tool_call_id="call_1"))
        for i in range(27):
            s.add(Message("user", f"turn {i + 3}"))
    finally:
        store.close()
    first = run_cli("session", "show", "s", "--limit", "10", db=db)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines if line.startswith("#")] == [
        f"#{i}" for i in range(10)
    ]
    assert '    -> fetch({"url": "https://example.org"}) [call_1]' in lines
    assert "(3,000 more characters: --seq 2 shows it whole)" in first.stdout
    assert len(first.stdout) < 4_000
    assert "20 more turns: --after-seq 9 shows the next" in first.stdout
    rest = run_cli("session", "show", "s", "--after-seq", "9", db=db).stdout
    assert [line.split(" ", 1)[0] for line in rest.splitlines() if line.startswith("#")] == [
        f"#{i}" for i in range(10, 30)
    ]
    whole = run_cli("session", "show", "s", "--seq", "2", db=db).stdout
    assert "x" * 5_000 in whole
    page = json.loads(run_cli("session", "show", "s", "--after-seq", "28", "--json", db=db).stdout)
    assert [t["seq"] for t in page["turns"]] == [29]
