"""``contextos window`` reports what it left out as the server's windows do: bounded.

Why (review s41 bigstore, finding 5): the CLI listed every item left out, one line (and
one JSON object, each with its long reason) per turn: 4,849 lines, 1.37 MB of JSON, for
a 5,200-turn session, and growing with the log. The HTTP, MCP and inspector windows
list of each segment its last ``MAX_LEFT_OUT`` items and count the rest
(``left_out_dict``); the CLI now gives that same report, in the table and in ``--json``,
and says how many more it left out. The session is logged in the real SQLite file and
read by the real command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from cli_support import cli_env, run_cli
from contextos.engine.session import Session
from contextos.engine.window import MAX_LEFT_OUT
from contextos.store import open_store
from contextos.types import Message

#: Turns logged: far more than a 300-token window holds, and than MAX_LEFT_OUT.
TURNS = 260
ASK = ("window", "--session", "long", "-q", "what did we decide?", "--budget", "300")


def _long_session(db: Path) -> None:
    store = open_store(str(db))
    try:
        s = Session(store, "long", tenant="default")
        for i in range(TURNS):
            role = "user" if i % 2 == 0 else "assistant"
            s.add(Message(role, f"turn {i} about the lake house and its roof repairs"))
    finally:
        store.close()


def _seq(key: str) -> int:
    assert key.startswith("turn:"), key
    return int(key.removeprefix("turn:"))


def test_window_json_lists_the_newest_left_out_and_counts_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "long.db"
    _long_session(db)
    out = run_cli("--json", *ASK, db=db)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "overflow" not in report  # the unbounded list is gone, not cut short silently
    turns_usage = next(s for s in report["segments"] if s["name"] == "turns")
    dropped = turns_usage["dropped"]
    assert dropped > MAX_LEFT_OUT + 50, turns_usage

    listed = [_seq(o["key"]) for o in report["left_out"] if o["segment"] == "turns"]
    # The newest turns left out, in order: those just before the ones placed.
    placed_first = TURNS - turns_usage["items"]
    assert listed == list(range(placed_first - MAX_LEFT_OUT, placed_first))
    assert report["left_out_count"] == sum(s["dropped"] for s in report["segments"])
    log = json.loads(run_cli("--json", "session", "show", "long", db=db).stdout)["turns"]
    older = [t["tokens"] for t in log if t["seq"] < listed[0]]
    assert report["left_out_not_listed"] == [
        {"segment": "turns", "count": dropped - MAX_LEFT_OUT, "tokens": sum(older)}
    ]
    assert len(older) == dropped - MAX_LEFT_OUT and sum(older) > 0


def test_window_table_prints_the_same_bounded_list_and_says_how_many_more(
    tmp_path: Path,
) -> None:
    db = tmp_path / "long.db"
    _long_session(db)
    report = json.loads(run_cli("--json", *ASK, db=db).stdout)
    out = run_cli(*ASK, db=db)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    listed = [line for line in lines if line.startswith("dropped turn:")]
    assert len(listed) == MAX_LEFT_OUT
    assert [line.split()[1] for line in listed] == [
        o["key"] for o in report["left_out"] if o["segment"] == "turns"
    ]
    rest = report["left_out_not_listed"][0]
    more = [i for i, line in enumerate(lines) if line.startswith("... ")]
    assert len(more) == 1
    said = re.fullmatch(
        r"\.\.\. ([\d,]+) more dropped from turns before these \(([\d,]+) tokens\), not listed",
        lines[more[0]],
    )
    assert said is not None, lines[more[0]]
    assert int(said.group(1).replace(",", "")) == rest["count"]
    assert int(said.group(2).replace(",", "")) == rest["tokens"]
    assert lines[more[0] + 1] == listed[0]  # it stands for the older ones, before them


def test_window_needs_no_server_extra(tmp_path: Path) -> None:
    """The report's helper lives with the window, not in ``contextos.server``: the
    command runs where the server's packages are not installed."""
    db = tmp_path / "long.db"
    _long_session(db)
    blocked = ["fastapi", "starlette", "pydantic", "pydantic_core", "uvicorn", "mcp"]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "from contextos.cli.main import main\n"
        f"main(['--json', *{list(ASK)!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=cli_env(db)
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["left_out"]) == MAX_LEFT_OUT
