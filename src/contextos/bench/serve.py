"""``contextos bench serve``: load-test the HTTP server as it is deployed.

Starts ``contextos serve`` as a subprocess on loopback (uvicorn, the real
embedder unless told otherwise), creates a fresh tenant key (revoked at the
end when the store outlives the run), and runs N
concurrent clients (asyncio + httpx) for a fixed time, each mixing ``add``
and ``search`` for a handful of users. Reports throughput, p50/p95/p99 per
operation, errors (any non-2xx or transport failure), and the durability
check that matters: every acknowledged write's id is read back from the
server afterwards, so ``acknowledged == stored`` is measured, not assumed.

The clients run on the same machine as the server, so on a small machine the
numbers are a floor: the load generator takes CPU from the server. So the report
also gives CPU milliseconds per request, of the server's processes and of the
load generator (Linux, from /proc): latency under a loaded machine says little,
CPU per request changes far less with what else runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from ..embed import DEFAULT_EMBEDDER
from ..errors import ContextosError
from ..os_threads import BACKGROUND_EMBEDDING, QUERY_EMBEDDING
from .sigterm import sigterm_cancels
from .stats import percentile

_VOCABULARY = (
    "coffee tea hiking paris berlin tokyo guitar piano dog cat allergy peanuts "
    "birthday march project deadline python rust garden tomatoes marathon bike "
    "sister brother meeting doctor dentist vacation beach mountain novel movie"
)
_WORDS = tuple(_VOCABULARY.split(" "))
USERS_PER_RUN = 10


@dataclass
class OpStats:
    """Latencies (seconds) and outcome counts of one operation kind."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        """Count an error and keep the first few descriptions for the report."""
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = self.latencies
        return {
            "ok": len(lat),
            "errors": self.errors,
            "per_s": len(lat) / seconds,
            "p50_ms": percentile(lat, 50) * 1000,
            "p95_ms": percentile(lat, 95) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "error_samples": list(self.samples),
        }


@dataclass(frozen=True)
class ServeBenchConfig:
    db: str | None = None
    clients: int = 50
    seconds: float = 60.0
    embedder: str = DEFAULT_EMBEDDER
    add_fraction: float = 0.5
    seed: int = 0
    startup_timeout: float = 180.0
    workers: int = 1


def free_port() -> int:
    """An unused loopback port (the server binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The program of the server subprocess: on Linux it first asks the kernel for a
#: SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and ends at once if the parent
#: is gone already. Why: a benchmark killed outright (SIGKILL, the OOM killer) or one
#: whose cleanup was cut short left ``contextos serve`` running under PID 1, still
#: listening, with the benchmark's store open; each such run left one more.
_SERVE_PROGRAM = """\
import os, signal, sys
if sys.platform == "linux":
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != {parent}:
        sys.exit(0)
from contextos.cli.main import main
main()
"""


def serve_command(db: str, port: int, *extra: str) -> list[str]:
    """The argv of ``contextos serve`` for this interpreter, as a child of this process
    that ends with it (:data:`_SERVE_PROGRAM`)."""
    return [
        sys.executable,
        "-c",
        _SERVE_PROGRAM.format(parent=os.getpid()),
        "serve",
        "--db",
        db,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


class ServerFailed(ContextosError, RuntimeError):
    """The server under test would not start, stopped answering or died: one line (exit
    1, no traceback), quoting the last lines it wrote to stderr, its own reason
    ("unknown embedder 'bogus'", a traceback's last line). A ``RuntimeError`` too, as
    the error it replaces was."""


#: How much of the server's stderr an error quotes: its last lines, at most this many
#: characters.
_STDERR_QUOTED = 600


def stderr_tail(log: IO[bytes] | None, lines: int = 3) -> str:
    """The last ``lines`` non-blank lines the server wrote to ``log`` (its stderr, a
    file), on one line; empty when there are none."""
    if log is None:
        return ""
    size = log.seek(0, os.SEEK_END)
    log.seek(max(0, size - 8 * _STDERR_QUOTED))
    text = log.read().decode("utf-8", errors="replace")
    last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return "; ".join(last)[-_STDERR_QUOTED:]


def _quoting_stderr(what: str, log: IO[bytes] | None) -> str:
    """``what`` happened to the server, with the last lines of its stderr when any."""
    tail = stderr_tail(log)
    return f"{what}; its stderr ends: {tail}" if tail else what


def _ended(returncode: int) -> str:
    """How a process ended, in words: "exited with code 1", "was killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], timeout: float, log: IO[bytes] | None = None
) -> None:
    """Poll ``/healthz`` until the server answers; fail early if it died (a
    :class:`ServerFailed` quoting ``log``, the file its stderr goes to, when given).

    No proxy: the server is on loopback, and an ``HTTP_PROXY`` without ``127.0.0.1`` in
    ``NO_PROXY`` sent every poll to the proxy, so a healthy server "did not answer"."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(
                _quoting_stderr(f"server {_ended(proc.returncode)} before answering", log)
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    what = f"server did not answer on {url} within {timeout:.0f}s"
    raise ServerFailed(_quoting_stderr(what, log))


@contextmanager
def running_server(
    db: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``contextos serve`` in a subprocess on a free loopback port; stopped on exit, and
    when this process dies without stopping it (:func:`serve_command`).

    ``CONTEXTOS_DB`` is the server's own store in its environment: the server's
    ``Memory`` objects resolve settings, which with no database named made the default
    one's folder (an empty ``~/.local/share/contextos/`` after a benchmark that used
    only a temporary store).

    The server's stderr goes to a temporary file, never an unread pipe (which, once
    full, blocked the server): a server that does not start, or an error of the block
    raised after the server died, becomes one :class:`ServerFailed` line saying how it
    ended and quoting the last lines it wrote."""
    port = free_port()
    with tempfile.TemporaryFile(prefix="ctx-serve-stderr-") as log:
        proc = subprocess.Popen(
            serve_command(db, port, *extra),
            env={**os.environ, "CONTEXTOS_DB": db, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, timeout, log)
            try:
                yield url, proc
            except Exception as exc:
                if not _has_ended(proc):
                    raise
                what = f"server {_ended(proc.returncode)} during the run ({_one_line(exc)})"
                raise ServerFailed(_quoting_stderr(what, log)) from exc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _has_ended(proc: subprocess.Popen[bytes], grace: float = 1.0) -> bool:
    """Whether ``proc`` has ended, allowing it ``grace`` seconds: a server that crashed
    refuses connections while it is still on its way out."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    """An exception as one short line: its message, or its type when it has none."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14)))


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just what this benchmark sends:
    a JSON POST, and a response with a Content-Length body.

    Why not httpx here: its AsyncClient cost the load generator 3-4 ms of CPU per
    request, as much as the server itself spent, and the two share the machine's
    cores; this costs a fraction of that, so the run measures the server. (httpx
    still does everything else: warm-up, read-back.)"""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self._head = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST ``body`` as JSON; (status, response body). Reconnects when the server
        closed the connection; a transport failure is raised."""
        data = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        try:
            status_line = await self._reader.readuntil(b"\r\n")
            length, close = 0, False
            while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            payload = await self._reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return int(status_line.split(b" ", 2)[1]), payload

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def _client(
    n: int,
    conn: _Connection,
    deadline: float,
    cfg: ServeBenchConfig,
    stats: dict[str, OpStats],
    acked: set[str],
    alive: Callable[[], bool],
) -> None:
    rng = random.Random(cfg.seed * 1000 + n)
    user = f"user{n % USERS_PER_RUN}"
    try:
        while time.monotonic() < deadline:
            op = "add" if rng.random() < cfg.add_fraction else "search"
            body: dict[str, Any] = (
                {"messages": _sentence(rng), "user_id": user}
                if op == "add"
                else {"query": _sentence(rng)[:60], "user_id": user, "limit": 10}
            )
            path = "/v1/memories" if op == "add" else "/v1/memories/search"
            start = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result
                # of a request that ends as the task is cancelled, and the cancellation of
                # a SIGTERM is lost: that client ran on to the deadline (61 s in a test).
                async with asyncio.timeout(60):
                    status, payload = await conn.post(path, body)
            except Exception as exc:  # transport failures are counted as errors, not raised
                stats[op].fail(f"{type(exc).__name__}: {exc}")
                if not alive():  # a dead server: no use refusing connections till the end
                    break
                continue
            elapsed = time.perf_counter() - start
            if status >= 300:
                stats[op].fail(f"HTTP {status}: {payload.decode(errors='replace')}")
                continue
            stats[op].latencies.append(elapsed)
            if op == "add":
                acked.update(r["id"] for r in json.loads(payload)["results"])
    finally:
        conn.close()


async def _load(
    url: str, key: str, cfg: ServeBenchConfig, alive: Callable[[], bool] = lambda: True
) -> tuple[dict[str, OpStats], set[str], float]:
    """Run the clients until ``cfg.seconds`` are over, or until a transport error finds
    the server no longer ``alive``."""
    stats = {"add": OpStats(), "search": OpStats()}
    acked: set[str] = set()
    parsed = urlsplit(url)
    assert parsed.hostname is not None and parsed.port is not None
    # One connection per client, kept alive: the server's keep-alive (65 s) outlasts
    # any run, and a connection the server closed anyway is reopened.
    conns = [_Connection(parsed.hostname, parsed.port, key) for _ in range(cfg.clients)]
    start = time.monotonic()
    deadline = start + cfg.seconds
    await asyncio.gather(
        *(_client(n, conns[n], deadline, cfg, stats, acked, alive) for n in range(cfg.clients))
    )
    elapsed = time.monotonic() - start
    return stats, acked, elapsed


def _stored_ids(url: str, key: str) -> set[str]:
    """Every memory id of the run's users, paged through the list route; a failed read
    is a :class:`ServerFailed` line. No proxy: the server is on loopback."""
    import httpx

    ids: set[str] = set()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, trust_env=False
    ) as client:
        for u in range(USERS_PER_RUN):
            offset = 0
            while True:
                try:
                    resp = client.get(
                        "/v1/memories",
                        params={"user_id": f"user{u}", "limit": 1000, "offset": offset},
                    )
                    resp.raise_for_status()
                except httpx.HTTPError as exc:
                    raise ServerFailed(
                        f"reading back the stored ids failed: {type(exc).__name__}: "
                        f"{_one_line(exc)}"
                    ) from exc
                page = resp.json()["results"]
                ids.update(r["id"] for r in page)
                offset += len(page)
                if len(page) < 1000:
                    break
    return ids


def _cpu_of(stat: str, tick: int) -> tuple[int, float]:
    """(parent pid, CPU seconds) from a /proc ``stat`` line. The command name (field 2)
    may hold spaces and parentheses: split after it."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick


def _process_tree(pid: int) -> tuple[list[int], dict[int, float]] | None:
    """``pid`` and its live descendants (``serve --workers`` forks its worker
    processes), and each one's CPU seconds so far; None where /proc is missing."""
    proc = Path("/proc")
    if not (proc / str(pid)).is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent, seconds = _cpu_of((entry / "stat").read_text(), tick)
        except OSError:  # the process ended meanwhile
            continue
        child = int(entry.name)
        parents.setdefault(parent, []).append(child)
        cpu[child] = seconds
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree, cpu


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants;
    None where /proc is missing."""
    found = _process_tree(pid)
    if found is None:
        return None
    tree, cpu = found
    return sum(cpu.get(p, 0.0) for p in tree)


#: The report's groups of the server's threads: those the library names in the OS
#: (``contextos.os_threads``), each process's main thread (uvicorn's event loop: HTTP,
#: middleware, routing, validation, JSON), and every other live thread (the threadpool
#: that runs the request handlers: retrieval, the store's SQL, writes).
THREAD_GROUPS = {
    QUERY_EMBEDDING: "query_embedding",
    BACKGROUND_EMBEDDING: "background_embedding",
}


def thread_cpu(pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds so far of every live thread of ``pid``'s process tree, keyed by
    (thread id, group); empty where /proc is missing."""
    found = _process_tree(pid)
    if found is None:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, str], float] = {}
    for process in found[0]:
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                _, seconds = _cpu_of((task / "stat").read_text(), tick)
            except OSError:  # the thread ended meanwhile
                continue
            tid = int(task.name)
            group = THREAD_GROUPS.get(name, "main" if tid == process else "request_threads")
            out[(tid, group)] = seconds
    return out


def cpu_by_thread_group(
    before: dict[tuple[int, str], float], after: dict[tuple[int, str], float], total: float
) -> dict[str, float]:
    """CPU seconds each thread group used between two :func:`thread_cpu` snapshots;
    ``ended_threads`` is what threads that ended meanwhile used (the rest of ``total``,
    the process tree's CPU over the same time)."""
    groups = {name: 0.0 for name in ("main", "request_threads", *THREAD_GROUPS.values())}
    for (tid, group), seconds in after.items():
        groups[group] += seconds - before.get((tid, group), 0.0)
    groups["ended_threads"] = max(0.0, total - sum(groups.values()))
    return groups


def _warm_up(url: str, key: str, workers: int) -> None:
    """Load the embedding model before the clock starts (first search embeds), in
    every worker process as far as connection spreading allows; a failed search is a
    :class:`ServerFailed` line. No proxy: the server is on loopback."""
    import httpx

    async def one(client: Any) -> None:
        try:
            resp = await client.post(
                "/v1/memories/search", json={"query": "warm up", "user_id": "user0"}
            )
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise ServerFailed(
                f"the warm-up search failed: {type(exc).__name__}: {_one_line(exc)}"
            ) from exc

    async def all_workers() -> None:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300, trust_env=False
        ) as client:
            await asyncio.gather(*(one(client) for _ in range(4 * workers)))

    asyncio.run(sigterm_cancels(all_workers()))


def run_serve_bench(cfg: ServeBenchConfig) -> dict[str, Any]:
    """Run the benchmark and return its report (see the module docstring)."""
    from ..server.keys import KeyStore

    with tempfile.TemporaryDirectory(prefix="ctx-bench-serve-") as tmp:
        db = cfg.db or str(Path(tmp) / "bench.db")
        tenant = f"bench-{secrets.token_hex(4)}"
        keystore = KeyStore(db)
        try:
            issued = keystore.create(tenant, "bench serve")
        finally:
            keystore.close()
        key = issued.secret
        extra = (
            "--embedder",
            cfg.embedder,
            "--rate",
            "0",
            "--log-level",
            "error",
            "--workers",
            str(cfg.workers),
        )
        try:
            with running_server(db, *extra, timeout=cfg.startup_timeout) as (url, proc):
                _warm_up(url, key, cfg.workers)
                threads_before = thread_cpu(proc.pid)
                server_cpu, client_cpu = process_tree_cpu(proc.pid), time.process_time()
                stats, acked, elapsed = asyncio.run(
                    sigterm_cancels(_load(url, key, cfg, alive=lambda: proc.poll() is None))
                )
                if proc.poll() is not None:  # died under load: no read-back from a dead server
                    sent = sum(len(s.latencies) + s.errors for s in stats.values())
                    failed = sum(s.errors for s in stats.values())
                    raise ServerFailed(f"after {sent} requests, {failed} of them failed")
                server_end = process_tree_cpu(proc.pid)
                threads_after = thread_cpu(proc.pid)
                client_cpu = time.process_time() - client_cpu
                pending_at_end, drain_s = drain_time(db, tenant)
                stored = _stored_ids(url, key)
        finally:
            if cfg.db is not None:  # a store that outlives the run keeps no live bench key
                _revoke(db, issued.key.id)
    total_ok = sum(len(s.latencies) for s in stats.values())
    requests = max(1, total_ok + sum(s.errors for s in stats.values()))
    server_ms = (
        None if server_cpu is None or server_end is None else (server_end - server_cpu) * 1000
    )
    by_thread = (
        None
        if server_ms is None or not threads_after
        else {
            group: seconds * 1000 / requests
            for group, seconds in cpu_by_thread_group(
                threads_before, threads_after, server_ms / 1000
            ).items()
        }
    )
    return {
        "config": {
            **asdict(cfg),
            "db": "sqlite (temporary file)" if cfg.db is None else _redact(cfg.db),
            "cpu_count": os.cpu_count(),
            # Other work on the machine competes with server and clients: say how much.
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "elapsed_s": elapsed,
        "throughput_per_s": total_ok / elapsed,
        # CPU per request (ms) of the server's processes (background embedding of the
        # added memories included) and of this load generator.
        "server_cpu_ms_per_request": None if server_ms is None else server_ms / requests,
        # The same, split by the server's threads (see THREAD_GROUPS): where it goes.
        "server_cpu_ms_per_request_by_thread": by_thread,
        "client_cpu_ms_per_request": client_cpu * 1000 / requests,
        "add": stats["add"].summary(elapsed),
        "search": stats["search"].summary(elapsed),
        "errors": sum(s.errors for s in stats.values()),
        "acknowledged_writes": len(acked),
        "stored_writes": len(stored & acked),
        "stored_total": len(stored),
        "missing_writes": len(acked - stored),
        # Adds answer before their vectors exist: how many were still waiting for one
        # when the load stopped, and how long the server then took to embed them all
        # (None: not within DRAIN_LIMIT_S).
        "pending_vectors_at_end": pending_at_end,
        "drain_s": drain_s,
    }


#: Seconds the report waits for the pending vectors to drain after the load.
DRAIN_LIMIT_S = 300.0


def _revoke(db: str, key_id: str) -> None:
    from ..server.keys import KeyStore

    keystore = KeyStore(db)
    try:
        keystore.revoke(key_id)
    finally:
        keystore.close()


def drain_time(db: str, tenant: str, limit: float = DRAIN_LIMIT_S) -> tuple[int, float | None]:
    """The tenant's pending vectors now, and the seconds until none is left (None: not
    within ``limit``), read from the store as ``contextos status`` does."""
    from ..store import open_store

    store = open_store(db)
    try:
        start = time.monotonic()
        pending = first = store.embedding_status(tenant).pending
        while pending:
            if time.monotonic() - start > limit:
                return first, None
            time.sleep(0.1)
            pending = store.embedding_status(tenant).pending
        return first, time.monotonic() - start
    finally:
        store.close()


def _redact(db: str) -> str:
    """The store as a report or stderr may show it: "sqlite", or the URL without its
    secrets (:func:`~contextos.config.redacted_db`)."""
    from contextos.config import redacted_db

    return "sqlite" if "://" not in db else redacted_db(db)
