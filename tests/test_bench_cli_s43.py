"""The benchmark commands as a user checking the published numbers runs them (a review,
session 43): the embedder the help promises, a server under test that will not start or
dies mid-run, a report rewritten when the disk is full, a proxy in the environment, a
Lost-in-the-Middle file of the wrong shape, and the papercuts around them."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_support import cli_env, run_cli
from conftest import tiny_locomo
from contextos.bench.scale import ADD, CALIBRATE, run_scale
from contextos.cli.main import main
from contextos.embed import DEFAULT_EMBEDDER, make_embedder
from contextos.server.keys import KeyStore
from contextos.testing.embedders import HashEmbedder
from test_bench_cli_edges import _bench, _big_locomo, _serving_child, linux_only


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``contextos ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _revoked(db: Path) -> list[bool]:
    """Whether each API key of ``db`` is revoked."""
    with KeyStore(str(db)) as keys:
        return [key.revoked_at is not None for key in keys.list()]


# --- 1. bench locomo runs the embedder its help names, and says which -----------------


def test_bench_locomo_runs_the_documented_default_not_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``CONTEXTOS_EMBEDDER=hash`` set for everyday use made the bare ``bench locomo``
    (the published figures' command, "default: minilm-int8") run the hash embedder, a
    third of the recall, and neither the output nor the report said so."""
    monkeypatch.setenv("CONTEXTOS_EMBEDDER", "hash")
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "locomo.json"
    data = str(tiny_locomo(tmp_path))
    code, stdout, err = _main(["bench", "locomo", "--data", data, "--json", str(out)], capsys)
    assert code == 0, err
    default_id = make_embedder(DEFAULT_EMBEDDER).model_id
    assert json.loads(out.read_text())["embedder"] == default_id
    assert f"embedder {default_id} · search p50" in stdout
    assert f"CONTEXTOS_EMBEDDER (hash) is not used by bench locomo: it runs {DEFAULT_EMBEDDER}" in (
        " ".join(err.split())
    )


def test_the_embedder_given_is_the_one_run_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "locomo.json"
    args = ["bench", "locomo", "--data", str(tiny_locomo(tmp_path)), "--embedder", "hash"]
    code, stdout, err = _main([*args, "--json", str(out)], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["embedder"] == "hash-bow"
    assert "embedder hash-bow · search p50" in stdout
    assert "is not used" not in err


# --- 2. a server under test that does not start, or dies: one line with its reason ------


@pytest.mark.parametrize("kind", ["serve", "online"])
def test_a_server_that_cannot_start_is_one_line_quoting_its_stderr(
    tmp_path: Path, kind: str
) -> None:
    """``bench serve`` ended in a ``RuntimeError`` traceback, ``bench online`` in "server
    exited with code 1 before answering": the server's own reason was in a pipe nobody
    read."""
    args = (
        ("serve", "--clients", "1", "--seconds", "1")
        if kind == "serve"
        else ("online", "--data", str(tiny_locomo(tmp_path)))
    )
    proc = run_cli("bench", *args, "--embedder", "bogus")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: server exited with code 1 before answering; its stderr ends:")
    assert "unknown embedder 'bogus'" in last


@linux_only
def test_bench_serve_whose_server_dies_under_load_stops_with_one_line(tmp_path: Path) -> None:
    """A server killed mid-load (the OOM killer): the clients counted refused
    connections until ``--seconds`` ran out, then reading back the stored ids raised a
    ``ConnectError`` traceback. Now the load stops and one line says how it ended."""
    report = tmp_path / "report.json"
    args = ("serve", "--clients", "2", "--seconds", "120", "--embedder", "hash")
    with _bench(tmp_path, *args, "--json", str(report)) as (proc, _tmp):
        child = _serving_child(proc)
        time.sleep(1.5)  # into the load
        os.kill(child, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert time.monotonic() - killed < 30  # not the rest of the 120 s
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: server was killed by SIGKILL during the run (")
    ), err
    assert not report.exists()


@linux_only
def test_bench_online_whose_server_dies_stops_with_one_line_and_revokes_its_key(
    tmp_path: Path,
) -> None:
    """The same for ``bench online`` (a probe's error also printed "Task exception was
    never retrieved" and a traceback), on a store it was given: the key it made no
    longer works, as ``bench serve --db`` does for its own."""
    store = tmp_path / "given.db"
    data = str(_big_locomo(tmp_path, sessions=2, turns=300))
    args = ("online", "--data", data, "--limit", "300", "--rate", "20", "--lag-every", "1")
    with _bench(tmp_path, *args, "--embedder", "hash", "--store", str(store)) as (proc, _):
        child = _serving_child(proc)
        time.sleep(1.5)  # into the stream
        # Stopped first, so that the adds and the lag probe in flight all wait on it
        # and fail together when it dies (a probe's error was the one left unread).
        os.kill(child, signal.SIGSTOP)
        time.sleep(1.0)
        os.kill(child, signal.SIGKILL)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "never retrieved" not in err, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: server was killed by SIGKILL during the run (")
    ), err
    assert _revoked(store) == [True]


def test_bench_online_on_a_given_store_revokes_its_key(tmp_path: Path) -> None:
    """``bench online --store`` left its API key active after a run that went well."""
    store = tmp_path / "given.db"
    proc = run_cli(
        *("bench", "online", "--data", str(tiny_locomo(tmp_path)), "--rate", "0"),
        *("--embedder", "hash", "--store", str(store)),
    )
    assert proc.returncode == 0, proc.stderr
    assert _revoked(store) == [True]


# --- 3. a report rewritten when the write fails: the previous one stays whole -----------


def _kv_litm(folder: Path, records: int = 3) -> Path:
    """A Lost-in-the-Middle key-value file of our own, ``records`` examples."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in range(records):
        pairs = [[f"key-{r}-{i}", f"value-{r}-{i}"] for i in range(5)]
        lines.append(json.dumps({"key": f"key-{r}-2", "ordered_kv_records": pairs}))
    with gzip.open(folder / "kv-retrieval-75_keys.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return folder


def _small_files() -> None:
    """In the child: files past 200 bytes cannot be written (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))


@linux_only
def test_a_failed_rewrite_leaves_the_previous_report_whole(tmp_path: Path) -> None:
    """The report was truncated, then written: a write that failed (a full disk, a
    SIGTERM) destroyed the previous report at the fixed default path and left a JSON
    cut short. Now it is written beside it and renamed over it."""
    data = _kv_litm(tmp_path / "litm")
    out = tmp_path / "reports" / "litm.json"
    args = ["bench", "litm", "--data", str(data), "--no-plots", "--out", str(out)]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    before = out.read_text()
    assert len(before) > 200 and json.loads(before)["datasets"]
    second = subprocess.run(
        [sys.executable, "-m", "contextos", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        preexec_fn=_small_files,
        timeout=120,
    )
    assert second.returncode == 1, second.stderr
    assert f"could not write the report to {out}: File too large" in second.stderr
    assert "a previous report there is unchanged" in second.stderr
    assert "edge share" in second.stdout  # the results were printed first
    assert out.read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["litm.json"]  # no temp file left


def test_a_rewritten_report_keeps_its_permissions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _kv_litm(tmp_path / "litm")
    out = tmp_path / "litm.json"
    out.write_text("old")
    out.chmod(0o600)
    args = ["bench", "litm", "--data", str(data), "--no-plots", "--out", str(out)]
    code, _, err = _main(args, capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["datasets"]
    assert out.stat().st_mode & 0o777 == 0o600


# --- 4. a proxy in the environment: the loopback servers are reached directly -----------

_PROXIED = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
_PROXIED |= {"NO_PROXY": "", "no_proxy": "", "ALL_PROXY": "", "all_proxy": ""}


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--clients", "1", "--seconds", "1", "--embedder", "hash"),
        ("online", "--rate", "0", "--embedder", "hash"),
        ("wrap", "--calls", "1", "--warmup", "0", "--mode", "passthrough"),
    ],
    ids=["serve", "online", "wrap"],
)
def test_a_proxy_setting_does_not_reach_the_loopback_server(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """``HTTP_PROXY`` without ``127.0.0.1`` in ``NO_PROXY`` (many corporate shells):
    ``bench serve`` waited 180 s for a healthy server to "answer", ``bench wrap`` said
    "Connection error"."""
    if args[0] == "online":
        args = (*args, "--data", str(tiny_locomo(tmp_path)))
    proc = run_cli("bench", *args, env=_PROXIED)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr


# --- 5. Lost-in-the-Middle data of the wrong shape: one line, exit 1 --------------------


def _gz(folder: Path, name: str, line: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / name, "wt", encoding="utf-8") as f:
        f.write(line + "\n")
    return folder


@pytest.mark.parametrize(
    ("name", "line", "said"),
    [
        ("kv-retrieval-75_keys.jsonl.gz", '{"x": 1}', "no 'ordered_kv_records'"),
        ("kv-retrieval-140_keys.jsonl.gz", '{"key": "a", "ordered_kv_records": 3}', "TypeError"),
        ("kv-retrieval-75_keys.jsonl.gz", '{"key": "a", "ordered_kv_records": []}', "StopIt"),
        ("nq-open-oracle.jsonl.gz", '{"question": "q", "ctxs": []}', "IndexError"),
        ("nq-open-oracle.jsonl.gz", '["not", "a", "record"]', "TypeError"),
    ],
)
def test_a_record_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, line: str, said: str
) -> None:
    """A file of the right name whose records lack the keys: a ``KeyError`` traceback."""
    data = _gz(tmp_path / "litm", name, line)
    out = tmp_path / "litm.json"
    code, _, err = _main(["bench", "litm", "--data", str(data), "--out", str(out)], capsys)
    assert code == 1, err
    assert err.strip().startswith(f"error: {data / name} line 1: not a Lost-in-the-Middle record (")
    assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("kind", ["missing", "file", "empty folder"])
def test_litm_data_that_is_not_there_is_exit_1_as_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A path that does not exist exited 1, a file 2 ("not found" though it exists), an
    empty folder 2; every other benchmark's bad data exits 1."""
    data = tmp_path / "litm"
    if kind == "file":
        data.write_text("")
    elif kind == "empty folder":
        data.mkdir()
    said = {
        "missing": "Lost-in-the-Middle data not found at",
        "file": "is not a folder: pass the folder holding the Lost-in-the-Middle files",
        "empty folder": "no Lost-in-the-Middle files under",
    }[kind]
    out = tmp_path / "litm.json"
    code, _, err = _main(["bench", "litm", "--data", str(data), "--out", str(out)], capsys)
    assert code == 1, err
    assert said in err and len(err.strip().splitlines()) == 1, err


# --- 6. papercuts -----------------------------------------------------------------------


def test_an_empty_report_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json ""`` ran the whole benchmark and wrote nothing, silently."""
    code, _, err = _main(["bench", "locomo", "--data", "x", "--json", ""], capsys)
    assert code == 2
    assert "Invalid value for '--json': name a file" in err


def test_an_embedding_cache_that_cannot_be_opened_says_it_is_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``./bench-out`` a file: "error: [Errno 17] File exists: 'bench-out'", exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench-out").write_text("")
    args = ["bench", "locomo", "--data", str(tiny_locomo(tmp_path)), "--embedder", "hash"]
    code, _, err = _main([*args, "--cache-embeddings"], capsys)
    assert code == 1, err
    assert err.strip().startswith(
        "error: cannot open the embedding cache bench-out/embeddings-hash-bow.sqlite: "
        "File exists: bench-out"
    ), err


@pytest.mark.parametrize(("n", "checkpoints"), [(150, (100,)), (100, (10_000,))])
def test_scale_progress_reaches_the_memories_added(
    tmp_path: Path, n: int, checkpoints: tuple[int, ...]
) -> None:
    """The bar moved in steps of 1,000 only: ``--n 1500`` ended at 1000/1500 and
    ``--n 100`` never moved."""
    ticks: list[int] = []
    run_scale(
        n,
        checkpoints=checkpoints,
        queries=2,
        workdir=tmp_path,
        embedder=HashEmbedder(),
        progress=ticks.append,
    )
    assert sum(ticks) == n


def test_scale_bar_names_the_embedder_timing_before_the_adds(tmp_path: Path) -> None:
    """The bar said "add memories 0/N" for the ~12 s the embedder was timed, before any
    add (a review, s57); that phase has its own line now, then the adds'. On a
    terminal (FORCE_COLOR: rich draws the bar on a pipe as on one)."""
    args = ["bench", "scale", "--n", "300", "--queries", "2", "--embedder", "hash"]
    done = run_cli(*args, "--data", str(tmp_path / "none.json"), env={"FORCE_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "time the embedder" in err and "add memories" in err
    assert err.index("time the embedder") < err.index("add memories")
    assert "add memories" not in err[: err.rindex("time the embedder")]


def test_scale_is_told_its_phases_and_moves_every_hundred_adds(tmp_path: Path) -> None:
    """The phases before the adds, then a step every 100 adds, not 1,000 (a review,
    s57): what the bar is told (a frame of it drawn or not is the terminal's refresh)."""
    told: list[object] = []
    run_scale(
        300,
        checkpoints=(300,),
        queries=2,
        workdir=tmp_path,
        embedder=HashEmbedder(),
        progress=told.append,
        stage=told.append,
    )
    assert told == [CALIBRATE, ADD, 100, 100, 100]


def test_the_replay_report_names_its_embedder(tmp_path: Path) -> None:
    """As the locomo and scale reports do: the memory strategies' recall depends on it."""
    from contextos.bench.replay import run_replay

    data = tiny_locomo(tmp_path)
    both = run_replay(data, strategies=("truncate", "offload"), embedder=HashEmbedder())
    assert both["embedder"] == "hash-bow"
    assert run_replay(data, strategies=("truncate",))["embedder"] is None


@pytest.mark.parametrize("bench", ["extract", "locomo"])
def test_a_folder_given_as_locomo_data_is_named_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench: str
) -> None:
    """``bench extract --data FOLDER`` said "LoCoMo data not found" where the others
    say it cannot read a directory."""
    code, _, err = _main(["bench", bench, "--data", str(tmp_path)], capsys)
    assert code == 1, err
    assert f"error: cannot read LoCoMo data at {tmp_path}: Is a directory" in err, err
