"""A user whose cache folder cannot be written still embeds, and is told where.

Why: the embedder's ONNX graph is built from the weights and kept in the user cache
folder (``~/.cache/contextos/models``). For a service user whose home does not exist
or is read-only (systemd's ``nobody``, a container's user with ``HOME=/``), writing it
failed with ``[Errno 13] Permission denied: '/nonexistent'``, naming no cache: every
search failed (exit 2 in the CLI, a 500 over HTTP), ``add`` exited 0 with a memory that
never got a vector (the worker retried the build as an outage for good) and ``contextos
demo`` never ended (a review, s34). A build takes about a second, so it is now built in
memory there, with one warning naming the folder and ``CONTEXTOS_CACHE_DIR``.

Each test runs what a user runs in processes of their own, with a HOME of their own
whose ``.cache`` is a file: a cache folder that no user, root included, can create
(the tests may run as root, for whom a read-only folder is writable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_support import keyed_client

#: Longer than any of these commands takes (a few seconds); the unfixed demo never ended.
PATIENCE_S = 90


def user_env(tmp_path: Path, *, writable: bool) -> dict[str, str]:
    """A user's environment: their own HOME (whose cache folder cannot be made unless
    ``writable``) and TMPDIR, no contextos or XDG settings."""
    home, tmp = tmp_path / ("home" if writable else "home-ro"), tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    if not writable:
        (home / ".cache").write_text("not a folder\n", encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXTOS_", "XDG_"))
        and k not in ("PYTHONPATH", "COLUMNS", "FORCE_COLOR", "NO_COLOR")
    }
    env.update(HOME=str(home), TMPDIR=str(tmp))
    return env


def cache_of(env: dict[str, str]) -> str:
    return f"{env['HOME']}/.cache/contextos/models"


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=PATIENCE_S,
    )


def said_where_the_cache_failed(stderr: str, env: dict[str, str]) -> None:
    lines = [line for line in stderr.splitlines() if "CONTEXTOS_CACHE_DIR" in line]
    assert len(lines) == 1, stderr  # once per process
    assert f"the embedding graph cache {cache_of(env)} cannot be written" in lines[0]
    assert "Errno" not in stderr and "Traceback" not in stderr


def test_cli_add_and_search_by_meaning_without_a_writable_cache(tmp_path: Path) -> None:
    env = user_env(tmp_path, writable=False)
    db = str(tmp_path / "m.db")
    added = run(env, tmp_path, "-m", "contextos", "--db", db, "add", "I like green tea", "-u", "bo")
    assert added.returncode == 0, added.stderr
    said_where_the_cache_failed(added.stderr, env)
    memory_id = added.stdout.split()[1]

    found = run(
        env, tmp_path, "-m", "contextos", "--db", db, "search", "what does bo drink", "-u", "bo",
        "--json",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [h["id"] for h in hits] == [memory_id]
    assert hits[0]["dense_rank"] == 1 and hits[0]["lexical_rank"] is None  # by meaning
    said_where_the_cache_failed(found.stderr, env)

    status = run(env, tmp_path, "-m", "contextos", "--db", db, "status")
    assert "waiting for a vector: 0" in status.stdout, status.stdout + status.stderr
    assert not Path(cache_of(env)).exists()


VECTOR_SCRIPT = """
import json
from contextos.embed import default_embedder
print(json.dumps(default_embedder().embed(["green tea", "a short note"]).tolist()))
"""


def test_the_graph_built_in_memory_embeds_as_the_cached_one(tmp_path: Path) -> None:
    unwritable = user_env(tmp_path, writable=False)
    in_memory = run(unwritable, tmp_path, "-c", VECTOR_SCRIPT)
    assert in_memory.returncode == 0, in_memory.stderr
    said_where_the_cache_failed(in_memory.stderr, unwritable)

    writable = user_env(tmp_path, writable=True)
    cached = run(writable, tmp_path, "-c", VECTOR_SCRIPT)
    assert cached.returncode == 0, cached.stderr
    assert "CONTEXTOS_CACHE_DIR" not in cached.stderr
    assert list(Path(cache_of(writable)).glob("*.onnx"))  # kept where it can be
    assert json.loads(in_memory.stdout) == json.loads(cached.stdout)  # the same graph


def test_demo_without_a_writable_cache_runs_through(tmp_path: Path) -> None:
    env = user_env(tmp_path, writable=False)
    demo = run(env, tmp_path, "-m", "contextos", "demo")
    assert demo.returncode == 0, demo.stderr
    assert "4 · the window and its cost" in demo.stdout
    assert "retrying" not in demo.stderr
    said_where_the_cache_failed(demo.stderr, env)


def test_server_searches_without_a_writable_cache(tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    db = str(tmp_path / "srv.db")
    env = user_env(tmp_path, writable=False)
    with keyed_client(db, "--embedder", "minilm-int8", env=env) as http:
        add = http.post(
            "/v1/memories",
            json={"messages": "I moved to Lisbon in May", "user_id": "ana"},
        )
        assert add.status_code == 201, add.text
        # Found by meaning once the background worker has written its vector (an add
        # answers before that): every search on the way is a 200, never an error.
        deadline = time.monotonic() + 30
        while True:
            search = http.post(
                "/v1/memories/search",
                json={"query": "which city is ana's home", "user_id": "ana"},
            )
            assert search.status_code == 200, search.text
            hits = search.json()["results"]
            if hits or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [h["memory"]["text"] for h in hits] == ["I moved to Lisbon in May"]
        assert hits[0]["dense_rank"] == 1 and hits[0]["lexical_rank"] is None  # by meaning
