"""Run the real ``contextos`` command in a subprocess, as a user's shell would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Flags that reach the command only through the environment in these tests.
_CLEARED = ("CONTEXTOS_DB", "CONTEXTOS_TENANT", "COLUMNS", "FORCE_COLOR", "NO_COLOR")


def cli_env(db: Path | None = None) -> dict[str, str]:
    """The environment of a test's ``contextos`` process: the hash embedder, ``db`` in
    ``CONTEXTOS_DB``, none of the variables that would pass flags unseen."""
    base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    base["CONTEXTOS_EMBEDDER"] = "hash"
    if db is not None:
        base["CONTEXTOS_DB"] = str(db)
    return base


def run_cli(
    *args: str,
    db: Path | None = None,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``contextos ARGS`` with the hash embedder; stdout is a pipe (not a terminal).

    ``db`` goes in ``CONTEXTOS_DB``; ``env`` adds or overrides variables (HOME
    and XDG_DATA_HOME there move the default database into a temp folder).
    """
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", "contextos", *args],
        input=data,
        capture_output=True,
        env={**cli_env(db=db), **(env or {})},
        timeout=180,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", errors="replace"),
        proc.stderr.decode("utf-8", errors="replace"),
    )


def exit_when_reader_stops(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with its stdout a pipe whose reader takes 10 bytes and closes it (as
    ``| head -c 10`` does): its exit status and what it wrote on stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=120), err


def bench_report(*args: str, report: Path) -> tuple[str, Any]:
    """``contextos ARGS`` run in this process (a benchmark that writes its JSON report to
    ``report``): its output and the report read back. A failed run fails the test with
    the command's output."""
    from click.testing import CliRunner

    from contextos.cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output, json.loads(report.read_text(encoding="utf-8"))


@contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``proc`` (a server started as a process), killed on the way out if it is still
    running, so a failing test never leaves a server behind holding its port or file.
    Its pipes are closed too: left to the garbage collector, they were reported as
    unclosed files in whichever later test collected them (that test then failed)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def stacks_of_hung(proc: subprocess.Popen[str]) -> str:
    """The thread stacks of ``proc``, started with ``-X faulthandler`` and still
    running: SIGABRT makes it print them to stderr, returned here (for the failure
    message of a test whose process did not end)."""
    import signal

    try:  # which signals it blocks, ignores and catches (hex masks, Linux)
        status = Path(f"/proc/{proc.pid}/status").read_text(encoding="utf-8")
        masks = " ".join(line for line in status.splitlines() if line.startswith("Sig"))
    except OSError:
        masks = "(no /proc status)"
    proc.send_signal(signal.SIGABRT)
    try:
        return f"{masks}\n{proc.communicate(timeout=10)[1]}"
    except subprocess.TimeoutExpired:
        return f"{masks}\n(no stacks: the process did not end on SIGABRT either)"


@contextmanager
def logged_server(db: str, log: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[Any]]]:
    """``contextos serve --db DB EXTRA...`` (hash embedder) on a free loopback port, its
    output in ``log``: its URL once it answers, and the process (killed on the way out
    if still running, :func:`reaped`)."""
    from contextos.bench.serve import free_port, serve_command, wait_healthy

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            serve_command(db, port, "--embedder", "hash", *extra),
            env=cli_env(None if "://" in db else Path(db)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    with reaped(proc):
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, 60)
        yield url, proc


@contextmanager
def keyed_server(
    db: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 30
) -> Iterator[tuple[Any, str]]:
    """``contextos serve --db DB EXTRA...`` with a new key of tenant ``acme``: an httpx
    client of it that sends that key, and the key (for ``contextos mcp`` on the same
    file); both closed on the way out."""
    import httpx

    from contextos.bench.serve import running_server
    from contextos.server.keys import KeyStore

    with KeyStore(db) as keys:
        key = keys.create("acme").secret
    with (
        running_server(db, *extra, env=env) as (url, _proc),
        httpx.Client(
            base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {key}"}
        ) as c,
    ):
        yield c, key


@contextmanager
def keyed_client(db: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """:func:`keyed_server`'s client alone."""
    with keyed_server(db, *extra, env=env) as (client, _key):
        yield client
