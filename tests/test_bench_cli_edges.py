"""The benchmark commands as users stop and misuse them: SIGTERM (``kill``, ``timeout``,
a cancelled CI job), a report path that cannot be written, ``CONTEXTOS_DB`` set for
everyday use, damaged data files, bad arguments (a review, session 33)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_support import cli_env, reaped, run_cli
from conftest import tiny_locomo
from contextos.bench.report_file import check_report_path
from contextos.cli.main import main

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _big_locomo(tmp_path: Path, sessions: int = 100, turns: int = 100) -> Path:
    """A LoCoMo-shaped file (our own text) large enough that a run is still going when
    the test stops it."""
    conv: dict[str, Any] = {"speaker_a": "Ann", "speaker_b": "Bob"}
    qa = []
    for s in range(1, sessions + 1):
        conv[f"session_{s}_date_time"] = f"1:56 pm on {s % 28 + 1} May, 2023"
        conv[f"session_{s}"] = [
            {
                "speaker": "Ann" if t % 2 else "Bob",
                "dia_id": f"D{s}:{t}",
                "text": f"turn {t} of session {s}: tea, hiking and the number {s * t}",
            }
            for t in range(1, turns + 1)
        ]
        qa.append(
            {
                "question": f"What of session {s}?",
                "answer": "tea",
                "evidence": [f"D{s}:1"],
                "category": 1,
            }
        )
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"sample_id": "conv-big", "conversation": conv, "qa": qa}]))
    return path


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _bench_temp(tmp: Path) -> list[str]:
    """What a benchmark left in its TMPDIR (tiktoken's own cache folder aside)."""
    return sorted(p.name for p in tmp.iterdir() if p.name != "data-gym-cache")


@contextlib.contextmanager
def _bench(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``contextos bench ARGS`` started as a process with its own TMPDIR and HOME; the
    process and its TMPDIR. Any process it leaves is killed afterwards."""
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    env = {**cli_env(), "TMPDIR": str(tmp), **_home(home)}
    proc = subprocess.Popen(
        [*CLI, "bench", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with reaped(proc):
            yield proc, tmp
    finally:
        for pid in _orphans(tmp):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _home(home: Path) -> dict[str, str]:
    """Environment of a HOME of its own (the user data folder under it)."""
    return {"HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}


def _orphans(tmp: Path) -> list[int]:
    """Every ``contextos serve`` whose store lies under ``tmp`` (a test's own TMPDIR)."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(tmp) in cmdline.read_bytes().decode(errors="replace") and _alive(
                int(cmdline.parent.name)
            ):
                out.append(int(cmdline.parent.name))
    return out


def _wait_for(check: Any, what: str, proc: subprocess.Popen[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


def _serving_child(proc: subprocess.Popen[str]) -> int:
    """The benchmark's ``contextos serve`` child, once it answers."""

    def answering() -> int | None:
        for pid in _children(proc.pid):
            with contextlib.suppress(OSError, ValueError, httpx.HTTPError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                port = argv[argv.index("--port") + 1]
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return pid
        return None

    pid: int = _wait_for(answering, "server answering", proc)
    return pid


# --- 1. SIGTERM cleans up as Ctrl-C does --------------------------------------------

SERVER_BENCHES = {
    "serve": ("serve", "--clients", "1", "--seconds", "60", "--embedder", "hash"),
    "online": ("online", "--conversations", "1", "--limit", "300", "--rate", "5")
    + ("--embedder", "hash"),
}


@linux_only
@pytest.mark.parametrize("kind", sorted(SERVER_BENCHES))
def test_sigterm_stops_the_benchmarks_server_and_removes_its_store(
    tmp_path: Path, kind: str
) -> None:
    """SIGTERM's default action skipped every ``finally``: the ``contextos serve`` child
    ran on under PID 1, listening, and the temporary store stayed in /tmp. Now it
    unwinds as Ctrl-C does and exits 143."""
    args = SERVER_BENCHES[kind]
    if kind == "online":
        args = (*args, "--data", str(_big_locomo(tmp_path, sessions=2, turns=300)))
    report = tmp_path / "report.json"
    with _bench(tmp_path, *args, "--json", str(report)) as (proc, tmp):
        child = _serving_child(proc)
        time.sleep(1.0)  # into the run: the load or the stream
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=90)
        orphans = _orphans(tmp)
        assert proc.returncode == 143, err
        # Promptly, not at the run's end: a client whose request ended as SIGTERM
        # cancelled it (asyncio.wait_for) ran on to the 60 s deadline.
        assert time.monotonic() - sent < 30, err
        assert err.strip().splitlines()[-1] == "terminated", err
        assert "Traceback" not in err
        assert not _alive(child) and not orphans
        assert _bench_temp(tmp) == []
        assert not report.exists()  # no half report
        # The server's Memory objects no longer make the default database's folder.
        assert not (tmp_path / "home" / ".local" / "share" / "contextos").exists()


@linux_only
def test_the_server_dies_with_a_benchmark_killed_outright(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, ``timeout -s KILL``) runs no cleanup at all: the server
    child still ends, by the kernel's parent-death signal, instead of listening on."""
    with _bench(tmp_path, *SERVER_BENCHES["serve"]) as (proc, _tmp):
        child = _serving_child(proc)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)


@linux_only
def test_sigterm_on_bench_locomo_removes_its_temporary_store(tmp_path: Path) -> None:
    data = _big_locomo(tmp_path)
    with _bench(tmp_path, "locomo", "--data", str(data), "--embedder", "hash") as (proc, tmp):
        _wait_for(lambda: list(tmp.glob("*/locomo-bench.db")), "temporary store", proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 143, err
        assert "Traceback" not in err and "terminated" in err
        assert _bench_temp(tmp) == []


#: Benchmarks with a temporary folder of their own (``bench replay``'s stores, ``bench
#: wrap``'s session memory) and ``bench extract``, which has none: each is stopped once
#: its run is under way.
LOCAL_BENCHES = {
    "replay": ("replay", "--limit", "1", "--budget", "4000", "--no-plots"),
    "wrap": ("wrap", "--provider", "openai", "--mode", "session", "--calls", "100000"),
    "extract": ("extract", "--repeat", "1000"),
}
#: A store in the benchmark's temporary folder: its run is under way, and stopping it
#: must remove a folder that holds something. ``bench replay`` opens one for its first
#: memory strategy (offload, after three strategies without), ``bench wrap`` its
#: session memory right before the calls.
STORE_IN_FOLDER = {"replay": "ctxos-replay-*/*.db", "wrap": "*/bench.db"}


@linux_only
@pytest.mark.parametrize("kind", sorted(LOCAL_BENCHES))
def test_sigterm_on_a_local_benchmark_removes_its_temporary_folder(
    tmp_path: Path, kind: str
) -> None:
    """``bench replay`` and ``bench wrap`` left their temporary folder (stores, logs) in
    /tmp when stopped by SIGTERM, and every benchmark died by the signal with no word;
    now each unwinds, says "terminated" and exits 143, with no report written."""
    args: tuple[str, ...] = LOCAL_BENCHES[kind]
    if kind != "wrap":
        # replay embeds every user turn before its run starts (~1.5 s per 500 turns on
        # a loaded machine); 500 turns still leave it ~10 s of run after its first store.
        sessions = 5 if kind == "replay" else 20
        args = (*args, "--data", str(_big_locomo(tmp_path, sessions=sessions, turns=100)))
    if kind == "replay":
        args = (*args, "--out", str(tmp_path / "report.json"))
    with _bench(tmp_path, *args) as (proc, tmp):
        if kind == "extract":  # which has no folder to wait for
            time.sleep(2.0)  # into the run
        else:
            pattern = STORE_IN_FOLDER[kind]
            _wait_for(lambda: list(tmp.glob(pattern)), "a store in the temporary folder", proc)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 143, err
        assert err.strip().splitlines()[-1].endswith("terminated"), err
        assert "Traceback" not in err
        assert _bench_temp(tmp) == []
        assert not (tmp_path / "report.json").exists()


# --- 2. --json OUT is checked before the run, and a failed write loses nothing shown --


def test_check_report_path_leaves_nothing_behind(tmp_path: Path) -> None:
    check_report_path(str(tmp_path / "a" / "b" / "out.json"))  # folders it would make
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    check_report_path(str(kept))
    assert kept.read_text() == "old"
    with pytest.raises(ValueError, match="is a directory"):
        check_report_path(str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot write .*kept\.json/out\.json: Not a directory"):
        check_report_path(str(kept / "out.json"))


@pytest.mark.parametrize("kind", ["locomo", "scale", "online", "serve", "replay", "litm"])
def test_an_unwritable_json_path_is_refused_before_the_run(tmp_path: Path, kind: str) -> None:
    """A typo'd or impossible report path failed only after the run (a 60 s serve, a
    100k scale, a replay of every LoCoMo chat), and the results were lost. Now: a usage
    error before anything runs."""
    data = str(tiny_locomo(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = {
        "locomo": ("locomo", "--data", data, "--embedder", "hash"),
        "scale": ("scale", "--n", "100000", "--embedder", "hash"),
        "online": ("online", "--data", data, "--embedder", "hash"),
        "serve": ("serve", "--seconds", "600", "--embedder", "hash"),
        "replay": ("replay", "--data", data),
        "litm": ("litm", "--data", str(tmp_path)),
    }[kind]
    option = "--out" if kind in ("replay", "litm") else "--json"
    start = time.monotonic()
    proc = run_cli("bench", *args, option, str(blocker / "out.json"))
    assert time.monotonic() - start < 60  # the run was not started
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: Invalid value for '{option}'"), proc.stderr
    assert f"cannot write {blocker / 'out.json'}: Not a directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_the_results_are_printed_before_a_final_write_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The path passed the check, but the write at the end still fails (the disk filled
    up meanwhile): the table was already printed, and the error says so."""
    import contextos.bench.report_file as report_file

    def full(path: str, text: str) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_file, "write_report", full)
    out = tmp_path / "out.json"
    data = str(tiny_locomo(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "locomo", "--data", data, "--embedder", "hash", "--json", str(out)])
    captured = capsys.readouterr()
    assert exit_.value.code == 1
    assert "LoCoMo turn-level evidence recall" in captured.out
    assert "search p50" in captured.out
    assert f"could not write the report to {out}: No space left on device" in captured.err
    assert "results are printed above" in captured.err


# --- 3. bench serve runs on a temporary store unless its own --db names one ----------


def test_bench_serve_does_not_load_test_the_contextos_db_store(tmp_path: Path) -> None:
    """``CONTEXTOS_DB``, set for everyday use, was the store the load went into: tens of
    thousands of bench rows and a live API key left in the user's database."""
    home = tmp_path / "home"
    env = _home(home)
    real = tmp_path / "real.db"
    run = ("bench", "serve", "--clients", "1", "--seconds", "1", "--embedder", "hash")
    # The two runs at once (each on its own temporary store and port): ~3 s each, mostly
    # starting Python; run one after the other they took twice that.
    with ThreadPoolExecutor(2) as pool:
        by_env = pool.submit(run_cli, *run, db=real, env=env)
        by_flag = pool.submit(run_cli, "--db", str(real), *run, env=env)
        proc = by_env.result()
        assert proc.returncode == 0, proc.stderr
        assert "store: a temporary SQLite file" in proc.stderr
        assert "CONTEXTOS_DB is not used by bench serve" in proc.stderr
        proc = by_flag.result()
    assert not real.exists()
    assert proc.returncode == 0, proc.stderr
    assert "--db before 'bench' is not used by bench serve" in proc.stderr
    assert not real.exists()
    # No request made the default database's folder either.
    assert not (home / ".local" / "share" / "contextos").exists()


def test_a_password_given_as_a_url_parameter_is_hidden_too(tmp_path: Path) -> None:
    """``postgresql://u@host/db?password=...`` (a libpq form) was printed whole on the
    "store:" line and written to the report, where ``u:password@host`` was hidden (a
    review). A real PostgreSQL when the suite has one (the report's ``db``; the run in a
    schema of its own, dropped after: its rows stay in the store it is given), else a
    closed port (the line printed before the connection fails)."""
    from pg_support import fresh_schema

    report = tmp_path / "report.json"
    args = ("bench", "serve", "--clients", "1", "--seconds", "1", "--embedder", "hash")
    secret = "hunter2-secret"
    with contextlib.ExitStack() as stack:
        try:
            base, _schema = stack.enter_context(fresh_schema("bench_pw"))
        except pytest.skip.Exception:
            url = f"postgresql://bob@127.0.0.1:1/db?password={secret}"
        else:
            scheme, rest = base.split("://", 1)
            user, host = rest.split("@", 1)
            name, secret = user.split(":", 1)
            url = f"{scheme}://{name}@{host}&password={secret}&application_name=visible"
        proc = run_cli(*args, "--db", url, "--json", str(report))
    assert secret not in proc.stdout + proc.stderr
    assert "password=***" in proc.stderr, proc.stderr
    if report.exists():
        assert proc.returncode == 0, proc.stderr
        assert secret not in report.read_text()
        assert "application_name=visible" in json.loads(report.read_text())["config"]["db"]


def test_bench_serve_on_a_given_store_revokes_its_key(tmp_path: Path) -> None:
    """On a store that outlives the run (``--db`` after ``bench serve``), the bench's
    rows stay, but its tenant's API key no longer works."""
    from contextos.server.keys import KeyStore

    given = tmp_path / "given.db"
    proc = run_cli(
        *("bench", "serve", "--clients", "1", "--seconds", "1", "--embedder", "hash"),
        *("--db", str(given)),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"store: {given}" in proc.stderr
    keystore = KeyStore(str(given))
    try:
        keys = keystore.list()
    finally:
        keystore.close()
    assert len(keys) == 1 and keys[0].tenant.startswith("bench-")
    assert keys[0].revoked_at is not None


# --- 5. damaged LoCoMo data: one line naming the file ---------------------------------

DAMAGED = {
    "not-json": ("{not json", "is not a LoCoMo file: not JSON"),
    "object": ('{"a": 1}', "is not a LoCoMo file: expected a JSON list of conversations"),
    "wrong-shape": ('[{"a": 1}]', "is not a LoCoMo file: item 0 has no 'conversation'"),
    "no-speaker": (
        json.dumps([{"sample_id": "c1", "conversation": {}, "qa": []}]),
        "is not a LoCoMo file: conversation 0 (c1) has no 'speaker_a'",
    ),
    "empty": ("[]", "no conversations in"),
}
DATA_BENCHES = {
    "locomo": ("locomo", "--embedder", "hash"),
    "online": ("online", "--embedder", "hash"),
    "replay": ("replay", "--no-plots"),
    "extract": ("extract",),
}


def _bench_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    """``contextos ARGV`` in this process: its exit status and stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("damage", sorted(DAMAGED))
@pytest.mark.parametrize("kind", sorted(DATA_BENCHES))
def test_damaged_locomo_data_is_one_line_naming_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    damage: str,
) -> None:
    """Was: a ``KeyError`` traceback, a JSON error naming no file, or (an empty list) a
    report of zeros with "None records/s"."""
    monkeypatch.chdir(tmp_path)
    text, expected = DAMAGED[damage]
    path = tmp_path / f"{damage}.json"
    path.write_text(text)
    command, *rest = DATA_BENCHES[kind]
    code, err = _bench_error(["bench", command, "--data", str(path), *rest], capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0] and str(path) in lines[0], err
    assert not (tmp_path / "bench-out").exists()


# --- 6. a truncated .jsonl.gz in bench litm -------------------------------------------


def test_a_truncated_litm_file_is_an_error_naming_it_not_an_abort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A download cut short ended in ``EOFError``, which click takes for Ctrl-D: the
    command said "aborted" and exited 130, as for Ctrl-C."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "litm"
    folder.mkdir()
    row = {"key": "k0", "ordered_kv_records": [[f"k{i}", f"v{i}"] for i in range(75)]}
    whole = gzip.compress(b"".join(json.dumps(row).encode() + b"\n" for _ in range(50)))
    cut = folder / "kv-retrieval-75_keys.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    code, err = _bench_error(["bench", "litm", "--data", str(folder), "--no-plots"], capsys)
    assert code == 1, err
    assert err.strip() == (
        f"error: {cut} is truncated or not gzip: Compressed file ended before the "
        "end-of-stream marker was reached"
    )


# --- 7. python -m contextos.agent.bench: bad arguments are usage errors ---------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--turns", "0", "--edits", "0"], "argument --turns: 0 is below 1"),
        (["--edits", "-1"], "argument --edits: -1 is below 0"),
        (["--turns", "3", "--edits", "5"], "argument --edits: 5 is more than --turns (3)"),
        (["--turns", "x"], "argument --turns: 'x' is not an integer"),
        (["--model", "nope"], "argument --model: unknown model 'nope'"),
    ],
)
def test_agent_bench_refuses_bad_arguments_with_its_usage(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from contextos.agent import bench

    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: ") and says in err, err
