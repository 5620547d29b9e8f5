"""Shared fixtures: real stores (SQLite in tmp_path; PostgreSQL when make test started one)."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_http import FakeHTTPServer
from contextos.testing.fake_openai import FakeOpenAI

#: The suite's expectations are written on UTC's calendar: an add without a time keeps
#: the zone of the process (``TZ``), so a developer's shell in another zone changed
#: them (a time-less add kept no zone in UTC only). Every process the tests start
#: inherits it. A test of another zone sets its own (tests/test_local_calendar.py).
os.environ["TZ"] = "UTC"
time.tzset()

#: A hangup ends a process, as in a terminal, in every process the tests start: a suite
#: run under ``nohup`` ignores SIGHUP, every child inherits that, and a CLI honours it
#: (``nohup contextos export`` runs on); the tests that send SIGHUP then saw it ignored.
if hasattr(signal, "SIGHUP"):
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

REPO = Path(__file__).resolve().parent.parent
LOCOMO = REPO.parent / "shared" / "data" / "locomo" / "locomo-dev.json"
LITM_DIR = REPO.parent / "shared" / "data" / "lost-in-the-middle"


#: Modules whose tests measure time (a latency bound, a deadline, a lease, a timeout
#: that must or must not expire): they run alone, after the rest, which runs on every
#: core (scripts/test.sh; pytest-xdist), so another test's load never moves their
#: clock. A new module that asserts on time belongs here; in a module of other tests,
#: mark the test itself ``@pytest.mark.serial``.
SERIAL_MODULES = frozenset(
    {
        "test_append_after",
        "test_bench_serve",
        "test_bench_serve_routes",
        "test_purge_scale",
        "test_infer_reconcile_limits",
        "test_keys_postgres",
        "test_lexical_failing_scope",
        "test_media_tokens",
        "test_memory_dropped",
        "test_owner_turns",
        "test_postgres_lock_timeout",
        "test_postgres_migration_timeouts",
        "test_postgres_online",
        "test_serve_forwarded",
        "test_serve_latency",
        "test_server_live_sessions",
        "test_server_window_load",
        "test_session_hold",
        "test_speed",
        "test_stale_vectors",
        "test_worker_recovered_error",
        "test_worker_store_closed",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)


#: Every socket our code or the tests made in this process (``socket.__new__``'s audit
#: event; not those a server thread of the standard library accepts), weakly held, with
#: where they were made: the check below finds the ones a module left open for the
#: garbage collector, and names where they came from.
#: Under ``_SOCKETS_LOCK``: servers' and pools' threads make sockets while the check
#: below takes its snapshot.
_SOCKETS: weakref.WeakKeyDictionary[socket.socket, str] = weakref.WeakKeyDictionary()
_SOCKETS_LOCK = threading.Lock()


def _track_sockets(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.__new__" and isinstance(args[0], socket.socket):
        frames = traceback.walk_stack(None)  # innermost first; no source lines read
        ours = [
            f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in traceback.StackSummary.extract(frames, limit=40, lookup_lines=False)
            if ("/tests/" in f.filename or "/contextos/" in f.filename)
            and not f.filename.endswith("conftest.py")
        ]
        if ours:
            with _SOCKETS_LOCK:
                _SOCKETS[args[0]] = " < ".join(ours[:4])


sys.addaudithook(_track_sockets)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After each module's last test (its fixtures torn down): fail it if a socket that
    was open then is closed, if at all, only by the garbage collector.

    Why: an SDK client never closed holds its socket in a reference cycle; whichever
    later collection finds it may finalize the socket before the client closes it, and
    that ``ResourceWarning`` (an error here) failed some other module's test, at random
    and on another worker (CI, sessions 58 and 59). Checked here, the module that left it
    fails, whatever order the collector finalizes in, with where the socket was made.
    Once a module, not once a test: a full collection costs tens of milliseconds."""
    if nextitem is not None and nextitem.path == item.path:
        return
    with _SOCKETS_LOCK:
        made = list(_SOCKETS.items())
    open_ones = [(weakref.ref(s), f"{s!r} made at {at}") for s, at in made if s.fileno() != -1]
    del made
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # reported below, by module
        gc.collect()
    leaked = [shown for ref, shown in open_ones if ref() is None]
    assert not leaked, f"{item.path.name} left sockets open for the garbage collector: {leaked}"


def postgres_url() -> str | None:
    """The URL of the PostgreSQL that scripts/postgres.sh started, if any."""
    return os.environ.get("CONTEXTOS_TEST_PG_URL") or None


def postgres_skip_reason() -> str:
    from pg_support import skip_reason

    return "PostgreSQL unavailable: " + skip_reason()


@contextmanager
def _make_sqlite(tmp_path: Path) -> Iterator[Store]:
    s = SQLiteStore(tmp_path / "contract.db")
    try:
        yield s
    finally:
        s.close()


def _make_postgres(tmp_path: Path) -> AbstractContextManager[Store]:
    """A PostgresStore in a fresh schema, dropped after the test (skips with the reason
    when scripts/postgres.sh could not start a server)."""
    from pg_support import postgres_store

    return postgres_store()


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    """A Memory on a fresh SQLite file with the hash embedder, vectors written inline
    (no worker thread), closed after the test; a module that needs another defines its own."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m
        for thread in threading.enumerate():  # a wrapped client's background commit
            if thread.name == "contextos-commit":
                thread.join()


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    "sqlite": _make_sqlite,
    "postgres": _make_postgres,
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every Store backend, fresh for each test."""
    with STORE_FACTORIES[request.param](tmp_path) as s:
        yield s


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """The loopback Messages API fake; a module may override it with other settings."""
    with FakeAnthropic() as server:
        yield server


def _sdk_client(sdk: str, cls: str, fake: FakeHTTPServer) -> Iterator[Any]:
    """The real SDK client class ``sdk.cls`` pointed at ``fake``, no retries; skips the
    test when that SDK (an optional extra) is not installed."""
    module = pytest.importorskip(sdk)
    with getattr(module, cls)(base_url=fake.base_url, api_key="test", max_retries=0) as c:
        yield c


@pytest.fixture
def anthropic_client(fake_anthropic: FakeAnthropic) -> Iterator[Any]:
    yield from _sdk_client("anthropic", "Anthropic", fake_anthropic)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """The loopback Chat Completions fake with OpenAI's own caching rules."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def openai_client(fake_openai: FakeOpenAI) -> Iterator[Any]:
    yield from _sdk_client("openai", "OpenAI", fake_openai)


@pytest.fixture
def locomo_path() -> Path:
    if not LOCOMO.exists():
        pytest.skip(f"LoCoMo data not found at {LOCOMO}")
    return LOCOMO


def _take_ctrl_c_again() -> None:
    """Give this process Python's own SIGINT handler if it was started with SIGINT
    ignored, as a shell's background job (``make test &``, ``nohup``) is. Why: the tests
    that send Ctrl-C to a command they start would otherwise start it with SIGINT
    ignored too (an ignored signal is inherited across exec, and Python keeps it so):
    the command never saw the Ctrl-C and they failed. A handler is not inherited, so
    the commands start with the default, as from a terminal."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_take_ctrl_c_again()


def tiny_locomo(tmp_path: Path) -> Path:
    """One LoCoMo-format conversation of three turns, written in ``tmp_path`` (our own
    text: for a command's plumbing, where the real split's size buys nothing)."""
    turns = [
        {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob!"},
        {
            "speaker": "Bob",
            "dia_id": "D1:2",
            "text": "I ran a marathon yesterday.",
            "blip_caption": "a photo of runners",
        },
        {"speaker": "Ann", "dia_id": "D1:3", "text": "Wow, that's amazing!"},
    ]
    qa = [
        {
            "question": "When did Bob run?",
            "answer": "7 May 2023",
            "evidence": ["D1:2"],
            "category": 2,
        },
        {"question": "Who greets?", "answer": "Ann", "evidence": ["D1:1; D1:3"], "category": 1},
        {
            "question": "Did Ann run?",
            "adversarial_answer": "no",
            "evidence": ["D1:1"],
            "category": 5,
        },
    ]
    conversation = {
        "speaker_a": "Ann",
        "speaker_b": "Bob",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": turns,
    }
    path = tmp_path / "tiny.json"
    path.write_text(
        json.dumps([{"sample_id": "conv-x", "conversation": conversation, "qa": qa}]),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Automatic cyclic garbage collection off: the collector runs only where a test
    runs it (an abandoned stream must not need it to be logged; a test that collects
    inside a commit decides when)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
