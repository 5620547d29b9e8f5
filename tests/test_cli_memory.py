"""The CLI mirrors the Memory API: same results, --json everywhere, one-line errors."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

from cli_support import reaped, run_cli, stacks_of_hung
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder


def run(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, db=db, stdin=stdin, env={"COLUMNS": "200"})


def test_add_search_get_list_update_history_delete(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    added = json.loads(run(db, "add", "I am allergic to peanuts", "-u", "ana", "--json").stdout)
    mid = added[0]["id"]
    run(db, "add", "my kid loves blue", "-u", "ana")
    hits = json.loads(run(db, "--json", "search", "peanuts", "-u", "ana").stdout)
    assert hits[0]["id"] == mid and hits[0]["tokens"] > 0
    # the CLI gives what the Python API gives
    with Memory(db, embedder=HashEmbedder()) as m:
        api = [h.record.id for h in m.search("peanuts", user_id="ana")]
    assert [h["id"] for h in hits] == api
    assert json.loads(run(db, "get", mid, "--json").stdout)["text"] == "I am allergic to peanuts"
    assert len(json.loads(run(db, "list", "-u", "ana", "--json").stdout)) == 2
    run(db, "update", mid, "--text", "allergic to peanuts and cashews")
    events = json.loads(run(db, "history", mid, "--json").stdout)
    assert [e["event"] for e in events] == ["ADD", "UPDATE"]
    assert run(db, "delete", mid).returncode == 0
    missing = run(db, "get", mid)
    assert missing.returncode == 1 and "no memory" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_forget_and_human_output(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run(db, "add", "bob's secret", "-u", "bob")
    out = run(db, "search", "secret", "-u", "bob")
    assert out.returncode == 0 and "bob's secret" in out.stdout
    forgot = json.loads(run(db, "forget", "-u", "bob", "--json", "--yes").stdout)
    assert forgot == {"user_id": "bob", "forgotten": 1} | _NO_LOGS


#: ``forget --json``'s counts of session logs, of a user who logged none.
_NO_LOGS = {"sessions_forgotten": 0, "turns_forgotten": 0}


def test_forget_without_yes_asks_a_terminal_and_refuses_a_script(tmp_path: Path) -> None:
    """``forget -u zed --json`` erased a user unasked (JSON output skipped the question),
    and a declined question exited 130, the code of an interrupt."""
    db = tmp_path / "cli.db"
    run(db, "add", "zed's secret", "-u", "zed")
    for argv in (("forget", "-u", "zed", "--json"), ("--json", "forget", "-u", "zed")):
        piped = run(db, *argv, stdin="y\n")
        assert piped.returncode == 2 and "--yes" in piped.stderr, piped.stderr
    declined = _on_a_terminal(db, "n\n", "forget", "-u", "zed", "--json")
    assert declined.returncode == 1 and "nothing erased" in declined.stderr
    assert json.loads(run(db, "list", "-u", "zed", "--json").stdout)  # still there
    agreed = _on_a_terminal(db, "y\n", "forget", "-u", "zed", "--json")
    assert agreed.returncode == 0, agreed.stderr
    reported = json.loads(agreed.stdout)  # the question on stderr
    assert reported == {"user_id": "zed", "forgotten": 1} | _NO_LOGS
    assert "Erase every memory of 'zed'?" in agreed.stderr


def _on_a_terminal(db: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``contextos ARGS`` with a pseudo-terminal as stdin, ``answer`` typed on it."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "contextos.cli", *args],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(db)},
        )
        os.write(leader, answer.encode())
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


def test_every_scope_flag_reaches_add_search_and_list(tmp_path: Path) -> None:
    """-u, -a and -s each reach the Memory call of add, search and list."""
    db = tmp_path / "cli.db"
    run(db, "add", "the deploy key lives in the vault", "-u", "ana", "-a", "ops", "-s", "s1")
    run(db, "add", "the lunch menu is soup", "-u", "bob", "-a", "chef", "-s", "s2")
    for flag, field, value in (
        ("-u", "user_id", "ana"),
        ("-a", "agent_id", "ops"),
        ("-s", "session_id", "s1"),
    ):
        listed = json.loads(run(db, "list", flag, value, "--json").stdout)
        found = json.loads(run(db, "search", "the", flag, value, "--json").stdout)
        for records in (listed, found):
            assert [r["text"] for r in records] == ["the deploy key lives in the vault"], flag
            assert records[0][field] == value


@pytest.mark.parametrize(
    "args, needle",
    [
        (("search", "x"), "search needs a scope: --user-id/-u"),
        (("add", "", "-u", "a"), "nothing to add"),
        (("add", "x", "-u", "a", "--metadata", "{oops"), "not valid JSON"),
        (("add", "x", "-u", "a", "--metadata", "[1]"), "JSON object"),
        (("add", "x", "-u", "a", "--event-time", "yesterday-ish"), "ISO-8601"),
        (("search", "x", "-u", "a", "--limit", "0"), "0"),
        (("count", "/no/such/file"), "no such file"),
        (("count", "-", "--model", "gpt-99"), "unknown model"),
        (("add", "x", "-u", "a", "--metadata", '{"a": NaN}'), "NaN is not valid JSON"),
        (("add", "x", "-u", "a", "--metadata", '{"a": Infinity}'), "Infinity is not valid"),
        (("list",), "list needs a scope: --user-id/-u"),
        (("history", "nosuch"), "no memory 'nosuch'"),
        (("--tenant", "bad tenant!", "list", "-u", "a"), "tenant must be"),
        (("--db", "", "list", "-u", "a"), "database path is empty"),
        (("--db", "/nonexistent_dir/sub/x.db", "list", "-u", "a"), "no directory"),
        (("--db", "mysql://x", "list", "-u", "a"), "unsupported database URL scheme 'mysql'"),
        (("compact", "--session", "s", "--budget", "-5"), "--budget"),
        (("compact", "--session", "s", "--budget", "0"), "--budget"),
        (("window", "--session", "s", "-q", ""), "must not be empty"),
        (("window", "--session", "s", "-q", " "), "must not be empty"),
        (("window", "--session", "s", "-q", "x", "--budget", "-5"), "--budget"),
        (("session", "add", "s", ""), "must not be empty"),
        (("session", "show", "nosuch"), "no session 'nosuch'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    out = run(tmp_path / "cli.db", *args, stdin="")
    assert out.returncode != 0
    assert needle in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [("add", "x"), ("search", "x"), ("list",)])
def test_a_missing_scope_is_the_same_usage_error_in_every_command(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """``add`` and ``search`` without a scope exited 1 with the library's ScopeError
    (``add needs a user_id, agent_id or session_id``: Python's names), where ``list``
    exited 2 naming the flags."""
    out = run(tmp_path / "cli.db", *command)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(
        f"error: {command[0]} needs a scope: --user-id/-u, --agent-id/-a or --session-id/-s ("
    ), out.stderr
    assert out.stderr.rstrip().endswith(f"(see 'contextos {command[0]} --help')"), out.stderr
    assert out.stderr.count("\n") == 1 and "user_id" not in out.stderr, out.stderr


@pytest.mark.parametrize("group", [(), ("session",), ("keys",)])
def test_a_command_group_alone_prints_its_help_as_written(
    tmp_path: Path, group: tuple[str, ...]
) -> None:
    """``contextos`` alone, the first thing a newcomer types, printed its whole help
    squashed into one ``error: Usage: ...; Options: ...`` line (a review)."""
    out = run(tmp_path / "cli.db", *group)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"Usage: {' '.join(['contextos', *group])} [OPTIONS] COMMAND")
    assert "\nCommands:\n" in out.stderr and "error" not in out.stderr.lower(), out.stderr


def test_a_bad_db_path_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent_dir" / "sub" / "x.db"
    out = run(missing, "add", "x", "-u", "a")
    assert out.returncode == 1 and "no directory" in out.stderr
    assert not (tmp_path / "nonexistent_dir").exists()
    folder = run(tmp_path, "list", "-u", "a")  # a directory is no database file
    assert folder.returncode == 1 and "is a directory" in folder.stderr


def test_add_from_stdin_must_be_utf8(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    env = {**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(db)}
    proc = subprocess.run(
        [sys.executable, "-m", "contextos.cli", "add", "-", "-u", "ana"],
        input="café au lait".encode("latin-1"),
        capture_output=True,
        env=env,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "stdin is not UTF-8 text (byte 0xe9" in err
    assert "codec" not in err and err.count("\n") == 1
    ok = run(db, "add", "-", "-u", "ana", "--json", stdin="café au lait")
    assert json.loads(ok.stdout)[0]["text"] == "café au lait"


def test_a_byte_order_mark_is_not_read_as_text(tmp_path: Path) -> None:
    """Windows editors and PowerShell start UTF-8 files with a byte-order mark: kept, a
    JSON file of messages was read as plain text, and a memory from stdin held an
    invisible U+FEFF that no repeat of its text matched (a review)."""
    db = tmp_path / "cli.db"
    env = {**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(db)}
    proc = subprocess.run(
        [sys.executable, "-m", "contextos.cli", "add", "-", "-u", "ana", "--json"],
        input=b"\xef\xbb\xbfremember the milk",
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["text"] == "remember the milk"
    again = run(db, "add", "remember the milk", "-u", "ana", "--json")
    assert json.loads(again.stdout)[0]["id"] == json.loads(proc.stdout)[0]["id"]  # a repeat
    chat = tmp_path / "chat.json"
    messages = [{"role": "user", "content": "I moved to Lisbon in May"}]
    chat.write_bytes(b"\xef\xbb\xbf" + json.dumps(messages).encode())
    counted = run(db, "count", str(chat), "--json")
    assert counted.returncode == 0 and json.loads(counted.stdout)["kind"] == "messages"


def test_count_and_extract_refuse_latin1_and_binary_files(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait".encode("latin-1"))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)))
    for command in ("count", "extract"):
        out = run(tmp_path / "cli.db", command, str(latin1))
        assert out.returncode == 2 and "is not UTF-8 text (byte 0xe9 at offset 3)" in out.stderr
        out = run(tmp_path / "cli.db", command, str(binary))
        assert out.returncode == 2 and "is a binary file, not text" in out.stderr
        assert out.stderr.count("\n") == 1


def test_metadata_round_trips_through_get_json(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    meta = '{"a": 1.5, "b": [true, null], "c": "x"}'
    mid = json.loads(run(db, "add", "x", "-u", "a", "--metadata", meta, "--json").stdout)[0]["id"]
    stored = json.loads(run(db, "get", mid, "--json").stdout)["metadata"]
    assert stored == {**json.loads(meta), "role": "user"}


def test_the_same_fact_twice_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    first = run(db, "add", "I'm allergic to peanuts", "-u", "ana")
    again = run(db, "add", "I'm allergic to peanuts", "-u", "ana")
    mid = first.stdout.split()[-1]
    assert first.stdout.startswith("added ") and again.stdout.strip() == f"already stored {mid}"
    other_user = run(db, "add", "I'm allergic to peanuts", "-u", "bob", "--json")
    assert json.loads(other_user.stdout)[0]["id"] != mid  # scopes never merge
    copy = run(db, "add", "I'm allergic to peanuts", "-u", "ana", "--no-dedupe", "--json")
    assert json.loads(copy.stdout)[0]["id"] != mid
    assert len(json.loads(run(db, "list", "-u", "ana", "--json").stdout)) == 2


def test_api_dedupe_keeps_session_turns_and_scopes_apart(store: Store) -> None:
    """Memory.add under the CLI, on both stores: exact repeats outside a session come back
    as the stored record; turns of a conversation, other types and other scopes are never
    merged."""
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        a = m.add("I'm allergic to peanuts", user_id="ana")
        assert m.add("I'm allergic to peanuts", user_id="ana") == a
        twice = m.add(["ok", "ok"], user_id="ana")  # a repeat inside one call, too
        assert twice[0].id == twice[1].id
        assert m.add("I'm allergic to peanuts", user_id="ana", memory_type="semantic") != a
        assert m.add("I'm allergic to peanuts", user_id="ana", agent_id="x") != a
        turns = [m.add("ok", user_id="ana", session_id="s1")[0] for _ in range(2)]
        assert turns[0].id != turns[1].id
        assert m.add("I'm allergic to peanuts", user_id="ana", dedupe=False) != a
        in_session = m.add("walks the dog", user_id="ana", session_id="s9")
        for_agent = m.add("walks the dog", user_id="ana", agent_id="x")
        plain = m.add("walks the dog", user_id="ana")  # the same text, a wider scope
        assert plain[0].id not in {in_session[0].id, for_agent[0].id}
        texts = [r.text for r in m.get_all(user_id="ana")]
        assert texts.count("I'm allergic to peanuts") == 4 and texts.count("ok") == 3
        assert texts.count("walks the dog") == 3


def test_the_same_text_at_another_time_or_with_other_metadata_is_a_memory_of_its_own(
    store: Store,
) -> None:
    """Two visits to the gym are two events: the second add handed back the first
    record (its date, its metadata) and a search of the second date found nothing."""
    may = [datetime(2024, 5, day, tzinfo=UTC) for day in (1, 8)]
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        first = m.add("I went to the gym", user_id="ana", event_time=may[0])
        again = m.add("I went to the gym", user_id="ana", event_time=may[0])
        later = m.add("I went to the gym", user_id="ana", event_time=may[1])
        tired = m.add(
            "I went to the gym", user_id="ana", event_time=may[1], metadata={"mood": "tired"}
        )
        assert again == first and later[0].id != first[0].id
        as_text = m.add("I went to the gym", user_id="ana", event_time="2024-05-01T00:00:00Z")
        assert as_text == first  # an ISO-8601 string, as reads take one
        with pytest.raises(ValueError, match="ISO-8601"):
            m.add("x", user_id="ana", event_time="last Tuesday")
        with pytest.raises(TypeError, match="event_time"):
            m.add("x", user_id="ana", event_time=20240501)
        assert later[0].event_time == may[1] and tired[0].metadata["mood"] == "tired"
        assert tired[0].id != later[0].id
        listed = m.add("I went to the gym", user_id="ana", metadata={"with": ("bo", "cy")})
        repeat = m.add("I went to the gym", user_id="ana", metadata={"with": ("bo", "cy")})
        assert [r.id for r in repeat] == [r.id for r in listed]  # a tuple reads back a list
        week = (may[1] - timedelta(hours=1), may[1] + timedelta(hours=1))
        found = m.search("gym", user_id="ana", time_range=week)
        assert {h.record.id for h in found} == {later[0].id, tired[0].id}


def test_add_infer_stores_the_facts(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    said = ("My daughter Lily turns 7 on Saturday", "-u", "ana", "--event-time", "2024-05-08")
    out = run(db, "add", *said, "--infer", "--json")
    facts = json.loads(out.stdout)
    assert out.returncode == 0 and [f["text"] for f in facts] == [
        "User's daughter Lily turns 7 on 11 May 2024"
    ]
    question = run(db, "add", "what does Lily like?", "-u", "ana", "--infer")
    assert question.returncode == 0 and "nothing new to remember" in question.stdout
    assert len(json.loads(run(db, "list", "-u", "ana", "--json").stdout)) == 1


def test_one_default_database_for_the_api_and_the_cli(tmp_path: Path) -> None:
    """Memory() and a bare `contextos list` open the same file and the CLI says which."""
    home = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}
    code = (
        "from contextos import Memory\n"
        "with Memory() as m:\n"
        "    m.add('I live in Lisbon', user_id='ana')\n"
        "    print(m.settings.db)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CONTEXTOS_DB"}
    env.update(home, CONTEXTOS_EMBEDDER="hash")
    api = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert api.returncode == 0, api.stderr
    default = Path(api.stdout.strip())
    assert default == tmp_path / "data" / "contextos" / "memory.db" and default.exists()
    out = subprocess.run(
        [sys.executable, "-m", "contextos.cli", "list", "-u", "ana"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0 and "I live in Lisbon" in out.stdout
    assert f"database: {default} (the default" in out.stderr
    explicit = run(tmp_path / "other.db", "list", "-u", "ana")
    assert "database:" not in explicit.stderr  # named by the user: no note


def test_corrupt_database_is_one_clear_line(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"garbage" * 1000)
    out = run(db, "list", "-u", "a")
    assert out.returncode == 1 and "cannot open database" in out.stderr
    assert "Traceback" not in out.stderr


def test_count_reports_tokens_share_and_cost(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("hello world")
    data = json.loads(
        run(tmp_path / "x.db", "count", str(f), "--model", "gpt-4.1", "--json").stdout
    )
    assert data["tokens"] == 2 and data["context_window"] == 1_047_576
    assert data["input_cost_usd"] == pytest.approx(2 * 2.0 / 1e6)
    msgs = tmp_path / "m.json"
    msgs.write_text(json.dumps([{"role": "user", "content": "hello world"}]))
    assert (
        json.loads(run(tmp_path / "x.db", "count", str(msgs), "--json").stdout)["kind"]
        == "messages"
    )


def test_each_command_is_added_by_the_module_named_for_it_and_only_that_one_loads() -> None:
    """``COMMANDS``/``BENCH_COMMANDS`` name the module that adds each command: a command
    left out of them would be missing from ``contextos`` (a module loads only when one
    of its commands is asked for), and one named wrongly would load the wrong module.
    Each module's ``register`` is run on fresh groups and compared; then, in a fresh
    process, asking for ``list`` imports the memory commands and no other module."""
    import contextos.cli
    from contextos.cli import main as cli_main

    modules = [m.name for m in pkgutil.iter_modules(contextos.cli.__path__)]
    assert sorted(m for m in modules if m.endswith("_cmds")) == cli_main.COMMAND_MODULES
    for module in cli_main.COMMAND_MODULES:
        top, bench = click.Group("contextos"), click.Group("bench")
        importlib.import_module(f"contextos.cli.{module}").register(top, bench)
        assert {n for n, m in cli_main.COMMANDS.items() if m == module} == set(top.commands)
        assert {n for n, m in cli_main.BENCH_COMMANDS.items() if m == module} == set(bench.commands)
    code = (
        "import sys, click\n"
        "from contextos.cli.main import cli\n"
        "assert cli.get_command(click.Context(cli), 'list') is not None\n"
        "print(sorted(m for m in sys.modules if m.endswith('_cmds')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['contextos.cli.memory_cmds']"]


def test_every_command_has_help() -> None:
    from contextos.cli.main import load_all_commands

    cli = load_all_commands()

    def walk(
        group: click.Group, prefix: tuple[str, ...] = ()
    ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        for name, cmd in group.commands.items():
            yield (*prefix, name), cmd
            if isinstance(cmd, click.Group):
                yield from walk(cmd, (*prefix, name))

    for path, cmd in walk(cli):
        assert cmd.help or cmd.short_help, f"contextos {' '.join(path)} has no help"


def _nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def test_json_nested_past_the_stack_is_one_clear_line(tmp_path: Path) -> None:
    """JSON nested past Python's stack (about 900 levels, or 5,000 for the parser) made
    ``extract`` and ``add --metadata`` print a RecursionError traceback; a metadata of
    900 levels passed the parser and failed deep in the store."""
    db = tmp_path / "cli.db"
    deep_file = tmp_path / "deep.json"
    deep_file.write_text("[" * 100_000, encoding="utf-8")
    for args, needle in (
        (("extract", str(deep_file)), "the JSON is nested too deeply"),
        (("add", "x", "-u", "a", "--metadata", _nested(5_000)), "nested too deeply"),
        (("add", "x", "-u", "a", "--metadata", _nested(900)), "nest at most 32 levels"),
    ):
        out = run(db, *args)
        assert out.returncode == 2, (args[:2], out.returncode, out.stderr[-300:])
        assert needle in out.stderr and "Traceback" not in out.stderr
        assert out.stderr.count("\n") == 1, out.stderr[-300:]
    counted = run(db, "count", str(deep_file), "--json")  # JSON too deep to read: text
    assert counted.returncode == 0, counted.stderr[-300:]
    assert json.loads(counted.stdout)["kind"] == "text"
    assert run(db, "list", "-u", "a", "--json").stdout.strip() == "[]"


def test_metadata_nested_deeper_than_the_limit_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    from contextos.memory.ingest import MAX_METADATA_DEPTH

    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        ok = json.loads(_nested(MAX_METADATA_DEPTH - 1))
        [kept] = m.add("shallow enough", user_id="u", metadata=ok)
        deep = json.loads(_nested(900))
        for call in (
            lambda: m.add("too deep", user_id="u", metadata=deep),
            lambda: m.add({"role": "user", "content": "too deep", "metadata": deep}, user_id="u"),
            lambda: m.add("too deep", user_id="u", metadata=deep, infer=True),
            lambda: m.update(kept.id, metadata=deep),
        ):
            with pytest.raises(ValueError, match="nest at most 32 levels"):
                call()
        cycle: dict[str, object] = {}
        cycle["self"] = cycle
        with pytest.raises(ValueError, match="nest at most"):
            m.add("a cycle", user_id="u", metadata=cycle)
        assert [r.text for r in m.get_all(user_id="u")] == ["shallow enough"]
        assert m.get(kept.id).metadata["a"] == ok["a"]


def test_an_integer_past_64_bits_in_metadata_is_refused_as_over_http(tmp_path: Path) -> None:
    """``Memory.add`` and ``contextos add --metadata`` stored ``{"order_id": 2**70}``,
    which HTTP and MCP refuse: an update sending the metadata back as read was then
    refused there, and no filter could ever match the value (a review). One rule now."""
    big = 2**70
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        [kept] = m.add("fits", user_id="u", metadata={"order_id": 2**63 - 1, "low": -(2**63)})
        for call in (
            lambda: m.add("too wide", user_id="u", metadata={"order_id": big}),
            lambda: m.add(
                {"role": "user", "content": "x", "metadata": {"n": [1, big]}}, user_id="u"
            ),
            lambda: m.update(kept.id, metadata={"deep": {"id": -big}}),
        ):
            with pytest.raises(ValueError, match="integers must fit in 64 bits"):
                call()
    out = run(tmp_path / "m.db", "add", "x", "-u", "u", "--metadata", f'{{"order_id": {big}}}')
    assert out.returncode != 0 and "integers must fit in 64 bits" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    listed = json.loads(run(tmp_path / "m.db", "list", "-u", "u", "--json").stdout)
    assert [r["text"] for r in listed] == ["fits"]


def test_search_and_list_take_the_apis_filters(tmp_path: Path) -> None:
    """The CLI had none of the API's filters (metadata, event-time range, type on list)
    though the README says it mirrors the API. Each flag against the same call in
    Python on the same file."""
    db = tmp_path / "cli.db"
    run(
        db,
        "add",
        "gym day",
        "-u",
        "ana",
        "--event-time",
        "2024-05-01",
        "--metadata",
        '{"mood": "tired", "n": 2}',
    )
    run(
        db,
        "add",
        "gym day again",
        "-u",
        "ana",
        "--event-time",
        "2024-05-08",
        "--metadata",
        '{"mood": "happy"}',
    )
    run(db, "add", "stretch before the gym", "-u", "ana", "--type", "procedural")

    def texts(*args: str) -> list[str]:
        out = run(db, "--json", *args)
        assert out.returncode == 0, out.stderr
        return [r.get("memory", r)["text"] for r in json.loads(out.stdout)]

    assert texts("search", "gym", "-u", "ana", "--where", "mood=tired") == ["gym day"]
    assert texts("search", "gym", "-u", "ana", "--where", "n=2", "--where", "mood=tired") == [
        "gym day"
    ]
    assert texts("search", "gym", "-u", "ana", "--where", "n=3") == []
    may = ("--after", "2024-05-05", "--before", "2024-05-09")
    assert texts("search", "gym", "-u", "ana", *may) == ["gym day again"]
    assert texts("list", "-u", "ana", "--type", "procedural") == ["stretch before the gym"]
    assert texts("list", "-u", "ana", "--where", "mood=happy") == ["gym day again"]
    with Memory(db, embedder=HashEmbedder()) as m:
        week = (datetime(2024, 5, 5, tzinfo=UTC), datetime(2024, 5, 9, tzinfo=UTC))
        api = m.search("gym", user_id="ana", time_range=week)
        assert [h.record.text for h in api] == ["gym day again"]
    bad = run(db, "list", "-u", "ana", "--where", "a..b=1")
    assert bad.returncode == 2 and "--where" in bad.stderr
    assert run(db, "list", "-u", "ana", "--where", "novalue").returncode == 2
    twice = run(db, "list", "-u", "ana", "--where", "n=2", "--where", "n=3")
    assert twice.returncode == 2 and "given twice" in twice.stderr


def test_a_read_on_a_missing_database_creates_none_and_says_so(tmp_path: Path) -> None:
    """A read on a mistyped --db created an empty database and answered "0 memories";
    the user concluded their memories were gone."""
    db = tmp_path / "mistyped.db"
    for args in (("list", "-u", "ana"), ("search", "tea", "-u", "ana"), ("status",)):
        out = run(db, *args)
        assert out.returncode == 0, out.stderr
        assert f"no database at {db}" in out.stderr and "none was created" in out.stderr
        assert not db.exists() and not list(tmp_path.iterdir()), args
    # The session commands say in their own words that there is no such session.
    window = run(db, "window", "-q", "hi?", "--session", "s")
    assert window.returncode == 0 and "no turns" in window.stderr, window.stderr
    # An error names the missing database in its one line: "no memory 'ID'" alone read
    # as if the memory had gone (a review).
    note = f"; no database at {db} (check --db or CONTEXTOS_DB)\n"
    for args, error in (
        (("session", "show", "s"), "error: no session 's' (or it has no turns yet)"),
        (("compact", "--session", "s", "--budget", "100"), "error: no session 's'"),
        (("get", "m1"), "error: no memory 'm1'"),
        (("delete", "m1"), "error: no memory 'm1'"),
        (("history", "m1"), "error: no memory 'm1'"),
    ):
        out = run(db, *args)
        assert out.returncode == 1 and out.stderr.startswith(error), (args, out.stderr)
        assert out.stderr.endswith(note) and out.stderr.count("\n") == 1, (args, out.stderr)
        assert not db.exists(), args
    assert not db.exists() and not list(tmp_path.iterdir())
    assert run(db, "add", "tea", "-u", "ana").returncode == 0 and db.exists()
    assert "no database" not in run(db, "list", "-u", "ana").stderr


def test_keys_read_a_missing_database_without_creating_it(tmp_path: Path) -> None:
    """`keys list` on a mistyped --db made an empty file and listed nothing; the
    commands that make a database (`keys create`, `serve`, `mcp`) say they do."""
    db = tmp_path / "mistyped.db"
    listed = run(db, "keys", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert f"no database at {db}" in listed.stderr and "none was created" in listed.stderr
    revoked = run(db, "keys", "revoke", "abc123")
    assert revoked.returncode == 1
    # The error line itself names it, as `get`'s does (the note above it did already).
    assert f"error: no API key with id 'abc123'; no database at {db}" in revoked.stderr
    assert not list(tmp_path.iterdir())
    created = run(db, "keys", "create", "--tenant", "acme", "--json")
    assert created.returncode == 0 and db.exists()
    assert f"note: no database at {db}: a new one was created there" in created.stderr
    again = run(db, "keys", "list", "--json")
    assert again.stderr == "" and [k["tenant"] for k in json.loads(again.stdout)] == ["acme"]
    assert "a new one" not in run(db, "keys", "create", "--tenant", "acme").stderr


def test_history_of_an_unknown_id_is_not_found_in_python_as_in_the_cli(store: Store) -> None:
    from contextos.errors import NotFound

    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        [kept] = m.add("I like tea", user_id="ana")
        with pytest.raises(NotFound, match="nosuch"):
            m.history("nosuch")
        m.delete(kept.id)
        assert [e.event for e in m.history(kept.id)] == ["ADD", "DELETE"]  # kept after it
        m.forget("ana")
        with pytest.raises(NotFound):
            m.history(kept.id)  # erased with the user


def test_an_id_that_is_not_a_string_is_a_type_error(tmp_path: Path) -> None:
    """``get(5)`` answered NotFound "no memory 5", hiding the caller's mistake."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        for verb in (m.get, m.delete, m.history, lambda i: m.update(i, "x")):
            with pytest.raises(TypeError, match="memory_id must be a string, not int"):
                verb(5)


def test_the_path_given_wins_over_the_settings_db(tmp_path: Path) -> None:
    """``Memory("b.db", settings=s)`` opened ``s.db`` and wrote there, silently."""
    from contextos.config import load_settings

    settings = load_settings(db=str(tmp_path / "a.db"))
    with Memory(
        tmp_path / "b.db", settings=settings, embedder=HashEmbedder(), background_embedding=False
    ) as m:
        m.add("tea", user_id="ana")
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["b.db"]


def test_a_memory_on_a_given_store_leaves_the_default_data_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server builds ``Memory(store=...)`` per tenant; that created an empty
    ``~/.local/share/contextos`` on every server host, a folder nothing used. ``Memory()``
    with no store still makes it: the default database lives there."""
    from contextos.store.sqlite import SQLiteStore

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("CONTEXTOS_DB", raising=False)
    default_folder = tmp_path / "data" / "contextos"
    store = SQLiteStore(tmp_path / "server.db")
    try:
        m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        m.add("tea", user_id="ana")
        assert [h.record.text for h in m.search("tea", user_id="ana")] == ["tea"]
    finally:
        store.close()
    assert not default_folder.exists()
    with Memory(embedder=HashEmbedder(), background_embedding=False) as m:
        assert Path(m.settings.db) == default_folder / "memory.db"
    assert default_folder.is_dir()


def _stored(db: Path) -> dict[str, str]:
    """The memories in ``db`` (id -> text) as another process reads them (none while
    the file is made)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return dict(con.execute("SELECT id, text FROM memories").fetchall())
    except sqlite3.Error:
        return {}


@pytest.mark.parametrize("command", ["add", "update"])
def test_ctrl_c_while_a_write_waits_for_its_vector_reports_the_write(
    tmp_path: Path, command: str
) -> None:
    """After the write is durable, ``add`` and ``update`` wait about a second for its
    vector while the model loads. A Ctrl-C there said "aborted" (exit 130) with no id,
    though the memory was stored; run again, the add stored a copy, the update was made
    twice (a review). The command says what it wrote, and that the vector comes later.
    A real SIGINT, sent once the write is seen in the file, with the real default
    embedder (whose load is the wait)."""
    db = tmp_path / "c.db"
    assert run_cli("add", "the first note", "-u", "ana", db=db).returncode == 0
    [first] = _stored(db)
    args = ["add", "kept", "-u", "ana"] if command == "add" else ["update", first, "--text", "v2"]
    env = {k: v for k, v in os.environ.items() if k not in ("CONTEXTOS_EMBEDDER", "COLUMNS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "contextos.cli", "--db", str(db), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    with reaped(proc):
        report = proc.stdout.readline()  # printed, and flushed, once the write is stored
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert "aborted" not in err and "Traceback" not in err, err
    assert "interrupted while computing vectors: what was written is stored" in err, err
    [wrote] = [i for i, text in _stored(db).items() if text in ("kept", "v2")]
    assert report == f"{'added' if command == 'add' else 'updated'} {wrote}\n", (report, err)
    assert out == ""


@pytest.mark.postgres
@pytest.mark.serial
def test_ctrl_c_while_a_write_waits_on_a_lock_stops_it(tmp_path: Path) -> None:
    """Ctrl-C still stops a write that has not returned. Held over the write, it could
    not stop an update waiting on PostgreSQL's row lock (``lock_timeout`` 0, which the
    store keeps), and once the lock was let go the update the user had cancelled went
    through (a review). Stopped, nothing is written.

    Serial: it assumes the command reaches the lock within 3 s. If the command does not
    end, the failure shows its signal masks and thread stacks (that is how a run started
    as a background job, with SIGINT ignored and inherited, was told apart: conftest)."""
    import psycopg

    from server_support import database

    with database("postgres", tmp_path, pg_options="-c lock_timeout=0") as url:
        env = {"CONTEXTOS_DB": url}
        added = run_cli("--json", "add", "the first note", "-u", "ana", env=env)
        assert added.returncode == 0, added.stderr
        first = json.loads(added.stdout)[0]["id"]
        with psycopg.connect(url) as holder:
            holder.execute("SELECT 1 FROM memories WHERE id = %s FOR UPDATE", (first,))
            command = ["-X", "faulthandler", "-m", "contextos.cli", "update", first]
            proc = subprocess.Popen(
                [sys.executable, *command, "--text", "v2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "CONTEXTOS_EMBEDDER": "hash", **env},
            )
            with reaped(proc):
                time.sleep(3)  # started, and waiting on the row lock
                assert proc.poll() is None, proc.communicate()
                proc.send_signal(signal.SIGINT)
                try:
                    out, err = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    # Once (a loaded CI-like run), it neither ended nor said "aborted":
                    # fail with where each of its threads was, to find out why.
                    pytest.fail(f"Ctrl-C did not end the update:\n{stacks_of_hung(proc)}")
                finally:
                    holder.rollback()
        assert proc.returncode == 130 and out == "", (proc.returncode, out, err)
        got = run_cli("--json", "get", first, env=env)
        assert json.loads(got.stdout)["text"] == "the first note"


def test_a_missing_database_is_noted_for_its_own_command_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``main`` may run more than once in a process (an app embedding the CLI): the
    missing database a command found is not named in a later command's error."""
    from contextos.cli.main import main

    monkeypatch.setenv("CONTEXTOS_EMBEDDER", "hash")
    missing, real = tmp_path / "missing.db", tmp_path / "real.db"
    for argv in (
        ["--db", str(missing), "get", "nosuch"],
        ["--db", str(real), "add", "x", "-u", "ana"],
        ["--db", str(real), "get", "nosuch"],
    ):
        with contextlib.suppress(SystemExit):
            main(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [
        f"error: no memory 'nosuch'; no database at {missing} (check --db or CONTEXTOS_DB)",
        "error: no memory 'nosuch'",
    ]


LATE_CTRL_C = """
import os, signal, sys, threading, time
sys.argv = ["contextos", "add", "late ctrl-c", "-u", "ana"]

def late():
    while threading.main_thread().is_alive():  # the command has ended: shutdown begins
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)  # the shutdown joins this thread: the signal lands meanwhile

threading.Thread(target=late).start()
from contextos.cli.entry import run

run()
"""


def test_a_ctrl_c_after_the_command_ended_changes_nothing(tmp_path: Path) -> None:
    """The interpreter's shutdown after a command takes about a tenth of a second; a
    Ctrl-C in it printed a KeyboardInterrupt traceback, or killed the process by the
    signal after ``add`` had printed what it stored (a review: 9 of 24 late Ctrl-Cs)."""
    env = {**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(tmp_path / "m.db")}
    proc = subprocess.run(
        [sys.executable, "-c", LATE_CTRL_C], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.stdout.startswith("added ")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_list_cuts_long_memories_and_says_more_pages_follow(tmp_path: Path) -> None:
    """``contextos list`` printed every memory whole (a page of 100 memories of 100,000
    characters: 193,705 lines) and said nothing of the pages after it (a review)."""
    db = tmp_path / "m.db"
    long = "word " * 2_000
    for i in range(5):
        assert run(db, "add", f"memory {i} {long}", "-u", "a").returncode == 0
    first = run(db, "list", "-u", "a", "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("more characters: get ID") == 2
    assert len(first.stdout) < 8_000
    assert "more follow: --offset 2 shows the next page" in first.stderr
    last = run(db, "list", "-u", "a", "--limit", "2", "--offset", "4")
    assert "more follow" not in last.stderr and "1 memory from #5" in last.stdout
    whole = json.loads(run(db, "list", "-u", "a", "--limit", "2", "--json").stdout)
    assert all(len(r["text"]) > 10_000 for r in whole)


def _days_found(db: Path, tz: str, *bounds: str) -> list[str]:
    """The texts ``search`` finds for ana between ``bounds`` (``--after X --before Y``)
    in a CLI running in zone ``tz``."""
    env = {"COLUMNS": "200", "TZ": tz}
    out = run_cli("--json", "search", "kayak", "-u", "ana", *bounds, db=db, env=env)
    assert out.returncode == 0, out.stderr
    return [h["text"] for h in json.loads(out.stdout)]


def test_a_date_without_a_zone_is_the_local_day_the_tables_show(tmp_path: Path) -> None:
    """At +14 a memory of 18:26 UTC on 7 December is shown on 8 December, but ``search
    --after 2026-12-08 --before 2026-12-09`` read those dates as UTC and missed it (a
    review). A time without a zone is the process's local time, in ``--event-time``
    too: at -07 a memory added on a bare date is found by a search of that day."""
    east, west = "KIR-14", "XXX+7"  # POSIX zones: no tz database needed
    db = tmp_path / "m.db"
    kayak = ["add", "I bought a kayak", "-u", "ana", "--event-time", "2026-12-08T08:26+14:00"]
    assert run_cli(*kayak, db=db, env={"TZ": east}).returncode == 0
    shown = run_cli("list", "-u", "ana", db=db, env={"COLUMNS": "200", "TZ": east})
    assert "2026-12-08" in shown.stdout, shown.stdout
    day = ("--after", "2026-12-08", "--before", "2026-12-09")
    assert _days_found(db, east, *day) == ["I bought a kayak"]
    assert _days_found(db, east, "--before", "2026-12-08") == []
    other = tmp_path / "w.db"
    paddle = ["add", "kayak paddle day", "-u", "ana", "--event-time", "2024-05-02"]
    assert run_cli(*paddle, db=other, env={"TZ": west}).returncode == 0
    day = ("--after", "2024-05-02", "--before", "2024-05-03")
    assert _days_found(other, west, *day) == ["kayak paddle day"]
    assert _days_found(other, west, "--after", "2024-05-03") == []


def test_a_date_whose_midnight_the_zone_skips_is_that_day(tmp_path: Path) -> None:
    """Where a clock change skips midnight (Santiago, 11 September 2022), a bare date
    read with the offset before the jump became 23:00 of the day before: stored, shown
    and searched a day early (review s57). It is the first instant after the jump."""
    santiago = "XXX4YYY3,M9.2.0/0,M4.1.0/0"  # -04, -03 from the 2nd Sunday of September
    db = tmp_path / "m.db"
    said = ["add", "the kayak club opened", "-u", "ana", "--event-time", "2022-09-11"]
    assert run_cli(*said, db=db, env={"TZ": santiago}).returncode == 0
    shown = run_cli("list", "-u", "ana", db=db, env={"COLUMNS": "200", "TZ": santiago})
    assert "2022-09-11" in shown.stdout and "2022-09-10" not in shown.stdout, shown.stdout
    day = ("--after", "2022-09-11", "--before", "2022-09-12")
    assert _days_found(db, santiago, *day) == ["the kayak club opened"]
    assert _days_found(db, santiago, "--before", "2022-09-11") == []


def test_search_and_history_cut_long_memories_as_list_does(tmp_path: Path) -> None:
    """``search`` and ``history`` printed a memory whole where ``list`` cut it: one of
    ~100,000 characters made 3,773 lines of ``search`` and 12,687 of ``history`` on a
    terminal (a review). Each text is cut at ``list``'s 500 characters, saying how many
    more there are and what shows them (``get ID``; for an old version, ``--json``)."""
    db = tmp_path / "m.db"
    long = "kayak paddle " * 5_000
    added = run(db, "add", f"first {long}", "-u", "a", "--json")
    assert added.returncode == 0, added.stderr
    mid = json.loads(added.stdout)[0]["id"]
    assert run(db, "update", mid, "--text", f"second {long}").returncode == 0
    found = run(db, "search", "kayak", "-u", "a")
    assert found.returncode == 0, found.stderr
    assert found.stdout.count("(64,507 more characters: get ID)") == 1, found.stdout[-500:]
    assert len(found.stdout) < 5_000
    history = run(db, "history", mid)
    assert history.returncode == 0, history.stderr
    assert history.stdout.count("more characters: --json)") == 3, history.stdout[-500:]
    assert len(history.stdout) < 10_000
    whole = json.loads(run(db, "history", mid, "--json").stdout)
    assert [len(e["new_text"]) for e in whole] == [65_005, 65_007]
