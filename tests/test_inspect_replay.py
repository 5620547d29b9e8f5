"""The inspector's cache replay on long logs and odd session ids: a page's cost is
bounded whatever the log's length (only the newest ``MAX_REPLAY_TURNS`` turns are
read, in one indexed read), and its chart is valid XML whatever the id holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.server.inspect_routes import (
    MAX_REPLAY_TURNS,
    replay_costs,
    replay_turns,
)
from contextos.server.ui.chart import cost_chart_svg
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message, Scope, Turn
from pg_support import postgres_store
from server_support import app_client, auth, issue_key


def append_chat(client: Any, key: str, session_id: str, n_turns: int) -> None:
    """``n_turns`` short turns, user and assistant in turn, through ``/v1``."""
    for start in range(0, n_turns, 1000):
        messages = [
            {"role": ("user", "assistant")[i % 2], "content": f"turn {i} some words here"}
            for i in range(start, min(n_turns, start + 1000))
        ]
        resp = client.post(
            f"/v1/sessions/{quote(session_id, safe='')}/turns",
            json={"messages": messages},
            headers=auth(key),
        )
        assert resp.status_code == 201, resp.text[:300]


def replay_cpu(client: Any, key: str, session_id: str) -> tuple[float, dict[str, Any]]:
    """The least CPU time (this process: the server runs in it) of two cache pages."""
    best = float("inf")
    for _ in range(2):
        started = time.process_time()
        resp = client.get(f"/ui/api/sessions/{session_id}/cache", headers=auth(key))
        best = min(best, time.process_time() - started)
        assert resp.status_code == 200, resp.text
    return best, resp.json()


@pytest.mark.serial
def test_a_10k_turn_log_replays_at_about_the_cost_of_a_1k_turn_log(tmp_path: Path) -> None:
    assert MAX_REPLAY_TURNS == 1000  # the 1k-turn log is replayed whole, the 10k one cut
    db = tmp_path / "long.db"
    with app_client(db) as client:
        key = issue_key(client, "acme")
        append_chat(client, key, "short", 1000)
        append_chat(client, key, "long", 10_000)
        short_cpu, short = replay_cpu(client, key, "short")
        long_cpu, long = replay_cpu(client, key, "long")
    # Reading and replaying the whole 10k-turn log took ~20x the 1k one; now the same
    # number of turns is replayed. A generous margin for a loaded 2-core machine.
    assert long_cpu < 3 * short_cpu + 0.2, (short_cpu, long_cpu)
    # The short log is replayed whole, as before; the long one from its newest turns.
    assert short["from_seq"] == 0 and short["older_turns_left_out"] is False
    assert "left out" not in short["svg"]
    assert long["from_seq"] == 9000 and long["older_turns_left_out"] is True
    assert "windows hold the turns from seq 9000 on, older ones are left out" in long["svg"]
    assert [c["seq"] for c in long["calls"]] == list(range(9800, 10_000, 2))
    # What the page shows of the long log is the replay of its newest turns, as if the
    # session had been compacted at seq 9000.
    store = SQLiteStore(db)
    try:
        scope = Scope(tenant="acme", session_id="long")
        tail = store.turns(scope, after_seq=8999)
        assert len(tail) == 1000
    finally:
        store.close()
    expected = replay_costs(tail, get_model(long["model"]), default_tokenizer())
    assert long["calls"] == [c.__dict__ for c in expected]
    assert sum(c["cache_read_tokens"] for c in long["calls"]) > 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite file, or a fresh schema of the test PostgreSQL."""
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "gaps.db")
        try:
            yield sqlite
        finally:
            sqlite.close()
        return
    with postgres_store() as pg:
        yield pg


def test_the_newest_turns_are_read_at_once_from_a_log_with_gaps(store: Store) -> None:
    # The replay reads a log's tail with ``turns(newest=True)``: the last ``limit``
    # turns that exist, in order, also where an erasure left gaps in the seqs.
    grown = Scope(tenant="t", session_id="grown")
    assert store.turns(grown, limit=5, newest=True) == []
    for n in range(1, 31):
        store.append_turns(grown, [Message("user", f"turn {n}")], [3])
        assert [t.seq for t in store.turns(grown, limit=1, newest=True)] == [n - 1], n
        three = store.turns(grown, limit=3, newest=True)
        assert [t.seq for t in three] == list(range(max(0, n - 3), n))
    scope = Scope(tenant="t", session_id="shared")
    # Two users share the session in blocks of ten turns; erasing one user leaves
    # gaps in the seqs, and the newest seqs ever logged (30..39) gone.
    for block in range(4):
        user = ("ana", "bo")[block % 2]
        store.append_turns(
            Scope(tenant="t", user_id=user, session_id="shared"),
            [Message("user", f"{user} {block}.{i}") for i in range(10)],
            [3] * 10,
        )
    every = store.turns(scope)
    assert [t.seq for t in every] == list(range(40))
    for limit in (1, 7, 39, 40, 41, 1000):
        assert store.turns(scope, limit=limit, newest=True) == every[-limit:], limit
    store.forget(Scope(tenant="t", user_id="bo"))
    left = store.turns(scope)
    assert [t.seq for t in left] == [*range(10), *range(20, 30)]
    for limit in (1, 10, 15, 25, 1000):
        assert store.turns(scope, limit=limit, newest=True) == left[-limit:], limit
    # ``after_seq`` still bounds it from below, and the oldest-first read is unchanged.
    assert [t.seq for t in store.turns(scope, after_seq=24, limit=3, newest=True)] == [27, 28, 29]
    assert [t.seq for t in store.turns(scope, after_seq=24, limit=3)] == [25, 26, 27]


def test_a_cut_log_starts_at_a_user_turn() -> None:
    """Each replayed window starts at a call, never with an orphaned reply."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    turns = [
        Turn("s", i, Message("user" if i % 3 == 0 else "assistant", f"message {i}"), 3, at)
        for i in range(30)
    ]
    assert replay_turns(turns, 30) == turns  # short enough: whole
    cut = replay_turns(turns, 10)  # the newest ten are seqs 20..29; 21 is the first user turn
    assert [t.seq for t in cut] == list(range(21, 30))
    assert replay_turns(turns, 1) == []  # seq 29 is a reply: no call to replay
    with pytest.raises(ValueError):
        replay_turns(turns, 0)


SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: ElementTree.Element) -> list[str]:
    """The text of every <text> element of a parsed SVG, in document order."""
    return [t.text or "" for t in svg.iter(SVG + "text")]


CONTROL = "s\x01\x02\x08\x0b\x0c\x0e\x1b\x1f\x7f\ufffe-end"


def test_a_blank_user_turn_does_not_fail_the_replay(tmp_path: Path) -> None:
    """Why: a window refuses a blank question, and the replay asked each user turn's
    text as one: a session holding a user turn of no text (an image, a blank line)
    failed the whole cache page with HTTP 400."""
    store = SQLiteStore(str(tmp_path / "b.db"))
    try:
        scope = Scope(tenant="t", session_id="b1")
        said = ["hello", "hi", "  ", "ok", "and now?", "fine"]
        roles = ("user", "assistant") * 3
        messages = [Message(r, t) for r, t in zip(roles, said, strict=True)]  # type: ignore[arg-type]
        store.append_turns(scope, messages, [5] * 6)
        model = get_model("claude-sonnet-4-6")
        costs = replay_costs(store.turns(scope), model, default_tokenizer())
        assert [c.seq for c in costs] == [0, 2, 4]
    finally:
        store.close()


def test_a_regenerated_answer_is_replayed_as_the_model_saw_it(tmp_path: Path) -> None:
    """Why: the replay built each call's window from the raw log, so after a
    regenerate (a reply logged with ``redo_of``, as a wrapped client logs it) every
    later call was priced with both the replaced answer and the new one."""
    store = SQLiteStore(str(tmp_path / "r.db"))
    try:
        scope = Scope(tenant="t", session_id="r1")
        tokenizer = default_tokenizer()
        replaced = "a long answer the user threw away " * 60
        messages = [
            Message("user", "tell me about the sea"),
            Message("assistant", replaced),
            Message("assistant", "The sea is wide.", metadata={"redo_of": 1}),
            Message("user", "and the sky?"),
            Message("assistant", "Blue."),
        ]
        store.append_turns(scope, messages, [tokenizer.count(m.content) for m in messages])
        model = get_model("claude-sonnet-4-6")
        costs = replay_costs(store.turns(scope), model, tokenizer)
        assert [c.seq for c in costs] == [0, 3]
        sent = costs[1].input_tokens + costs[1].cache_read_tokens + costs[1].cache_write_tokens
        assert sent < tokenizer.count(replaced)
    finally:
        store.close()


def test_chart_of_a_session_id_with_control_characters_is_valid_xml(tmp_path: Path) -> None:
    class Call:
        seq, read_share, saved_usd = 0, 0.5, 0.001

    svg = ElementTree.fromstring(cost_chart_svg([Call()], title=CONTROL + "\ud800", note=CONTROL))
    assert "s\\x01\\x02\\x08\\x0b\\x0c\\x0e\\x1b\\x1f\x7f\\ufffe-end\\ud800" in texts(svg)
    # Through the real route: a session with such an id, logged through /v1.
    with app_client(tmp_path / "ids.db") as client:
        key = issue_key(client, "acme")
        append_chat(client, key, CONTROL, 4)
        path = f"/ui/api/sessions/{quote(CONTROL, safe='')}"
        resp = client.get(f"{path}/cache.svg", headers=auth(key))
        assert resp.status_code == 200, resp.text
        svg = ElementTree.fromstring(resp.content)
        assert svg.tag == SVG + "svg"
        assert len(svg.findall(f"{SVG}rect[@class='share']")) == 2
        title = texts(svg)[0]
        assert title.startswith("s\\x01\\x02") and "\\x1f\x7f\\ufffe-end · " in title
        page = client.get(path + "/cache", headers=auth(key)).json()
        assert page["svg"] == resp.text


def test_chart_title_shows_a_bidi_override_in_the_session_id_as_an_escape() -> None:
    """Why: the title is "<session id> · <model>" on one line, so a U+202E in the id
    drew the model's name backwards after it."""

    class Call:
        seq, read_share, saved_usd = 0, 0.5, 0.001

    title = "\u202echat\u2067-7\u200f · claude-sonnet-4-6"
    svg = ElementTree.fromstring(cost_chart_svg([Call()], title=title))
    assert texts(svg)[0] == "\\u202echat\\u2067-7\\u200f · claude-sonnet-4-6"


@pytest.mark.serial
def test_one_tenants_concurrent_replays_do_not_stall_another_tenant(tmp_path: Path) -> None:
    """Tenant A asks for its 1,000-turn session's cache replay from 48 connections at
    once, again and again (within the default rate limit). Each replay is about a
    second of CPU on the thread pool every route shares; unbounded, they pushed tenant
    B's trivial reads from ~50 ms to seconds. A may run one replay at a time (the rest
    get 429 + Retry-After at once), and B's reads and B's own replay stay quick."""
    import subprocess
    import sys

    import anyio
    import httpx

    from cli_support import reaped
    from contextos.server.keys import KeyStore

    db = tmp_path / "replay.db"
    with KeyStore(str(db)) as keys:
        key_a, key_b = keys.create("tenant-a").secret, keys.create("tenant-b").secret
    cmd = [sys.executable, "-c", "from contextos.cli.main import main; main()", "serve"]
    cmd += ["--db", str(db), "--embedder", "hash", "--port", "0"]  # default --rate/--burst
    with reaped(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "serving on " in line, line
        base = line.split("serving on ")[1].split()[0]
        words = " ".join(f"word{i}" for i in range(60))
        turns = [
            {"role": ("user", "assistant")[i % 2], "content": f"{i} {words}"} for i in range(1000)
        ]
        for key, sid, body in ((key_a, "long", turns), (key_b, "short", turns[:6])):
            resp = httpx.post(
                f"{base}/v1/sessions/{sid}/turns", json={"messages": body}, headers=auth(key)
            )
            assert resp.status_code == 201, resp.text[:300]

        async def scenario() -> dict[str, Any]:
            a_answers: list[httpx.Response] = []
            b_reads: list[float] = []
            stop = anyio.Event()
            async with (
                httpx.AsyncClient(base_url=base, headers=auth(key_a), timeout=20) as a,
                httpx.AsyncClient(base_url=base, headers=auth(key_b), timeout=20) as b,
            ):

                async def flood() -> None:
                    while not stop.is_set():
                        try:
                            a_answers.append(await a.get("/ui/api/sessions/long/cache"))
                        except httpx.TimeoutException:
                            return  # a stalled server: B's timings below tell
                        await anyio.sleep(0.01)

                async with anyio.create_task_group() as tg:
                    for _ in range(48):
                        tg.start_soon(flood)
                    await anyio.sleep(0.5)
                    for _ in range(10):
                        started = time.monotonic()
                        try:
                            assert (await b.get("/ui/api/whoami")).status_code == 200
                        except httpx.TimeoutException:
                            started = -float("inf")  # stalled past the client's timeout
                        b_reads.append(time.monotonic() - started)
                        await anyio.sleep(0.1)
                    started = time.monotonic()
                    b_replay = await b.get("/ui/api/sessions/short/cache")
                    b_replay_s = time.monotonic() - started
                    stop.set()
            return {"a": a_answers, "b_reads": b_reads, "b_replay": b_replay, "b_s": b_replay_s}

        out = anyio.run(scenario)
        proc.terminate()
        proc.communicate(timeout=60)
    codes = [r.status_code for r in out["a"]]
    assert set(codes) <= {200, 429} and 200 in codes, codes
    refused = [r for r in out["a"] if "already running" in r.text]
    assert refused and all(r.headers.get("Retry-After") for r in refused)
    assert out["b_replay"].status_code == 200 and len(out["b_replay"].json()["calls"]) == 3
    # Unbounded, B's reads took 4.5 s at the median and up to 40 s. Gated they take
    # 0.01-0.9 s: the one replay A may run, and A's 48 connections being refused, still
    # share the server's GIL and this client's event loop with them.
    reads = sorted(out["b_reads"])
    assert reads[len(reads) // 2] < 1.5 and reads[-1] < 5.0, out["b_reads"]
    assert out["b_s"] < 5.0


def test_a_long_session_id_leaves_the_model_in_the_chart_title() -> None:
    """The title is one SVG line: a 254-character session id pushed the model's name
    off the chart's right edge (a review). Its middle is cut to fit."""
    from contextos.server.ui.chart import MAX_TITLE_CHARS

    class Call:
        seq, read_share, saved_usd = 0, 0.5, 0.001

    title = "S" * 254 + " · claude-sonnet-4-6"
    shown = texts(ElementTree.fromstring(cost_chart_svg([Call()], title=title)))[0]
    assert len(shown) == MAX_TITLE_CHARS and "\u2026" in shown
    assert shown.startswith("SSS") and shown.endswith(" · claude-sonnet-4-6")
    short = "chat-7 · claude-sonnet-4-6"
    assert texts(ElementTree.fromstring(cost_chart_svg([Call()], title=short)))[0] == short
