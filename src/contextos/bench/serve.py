"""``contextos bench serve``: load-test the HTTP server as it is deployed.

Starts ``contextos serve`` as a subprocess on loopback (uvicorn, the real
embedder unless told otherwise), creates a fresh tenant key, and runs N
concurrent clients (asyncio + httpx) for a fixed time, each mixing ``add``
and ``search`` for a handful of users. Reports throughput, p50/p95/p99 per
operation, errors (any non-2xx or transport failure), and the durability
check that matters: every acknowledged write's id is read back from the
server afterwards, so ``acknowledged == stored`` is measured, not assumed.

The clients run on the same machine as the server, so on a small machine the
numbers are a floor: the load generator takes CPU from the server.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    embedder: str = "minilm"
    add_fraction: float = 0.5
    seed: int = 0
    startup_timeout: float = 180.0
    workers: int = 1


def free_port() -> int:
    """An unused loopback port (the server binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(db: str, port: int, *extra: str) -> list[str]:
    """The argv of ``contextos serve`` for this interpreter."""
    return [
        sys.executable,
        "-c",
        "from contextos.cli.main import main; main()",
        "serve",
        "--db",
        db,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll ``/healthz`` until the server answers; fail early if it died."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer on {url} within {timeout:.0f}s")


@contextmanager
def running_server(
    db: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``contextos serve`` in a subprocess on a free loopback port; stopped on exit."""
    port = free_port()
    proc = subprocess.Popen(
        serve_command(db, port, *extra),
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14)))


async def _client(
    n: int,
    client: Any,
    deadline: float,
    cfg: ServeBenchConfig,
    stats: dict[str, OpStats],
    acked: set[str],
) -> None:
    rng = random.Random(cfg.seed * 1000 + n)
    user = f"user{n % USERS_PER_RUN}"
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
            resp = await client.post(path, json=body)
        except Exception as exc:  # transport failures are counted as errors, not raised
            stats[op].fail(f"{type(exc).__name__}: {exc}")
            continue
        elapsed = time.perf_counter() - start
        if resp.status_code >= 300:
            stats[op].fail(f"HTTP {resp.status_code}: {resp.text}")
            continue
        stats[op].latencies.append(elapsed)
        if op == "add":
            acked.update(r["id"] for r in resp.json()["results"])


async def _load(
    url: str, key: str, cfg: ServeBenchConfig
) -> tuple[dict[str, OpStats], set[str], float]:
    import httpx

    stats = {"add": OpStats(), "search": OpStats()}
    acked: set[str] = set()
    # Idle connections expire on the client first (server keep-alive is 65 s), so a
    # request never races the server closing its connection.
    limits = httpx.Limits(
        max_connections=cfg.clients, max_keepalive_connections=cfg.clients, keepalive_expiry=5
    )
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    ) as client:
        start = time.monotonic()
        deadline = start + cfg.seconds
        await asyncio.gather(
            *(_client(n, client, deadline, cfg, stats, acked) for n in range(cfg.clients))
        )
        elapsed = time.monotonic() - start
    return stats, acked, elapsed


def _stored_ids(url: str, key: str) -> set[str]:
    """Every memory id of the run's users, paged through the list route."""
    import httpx

    ids: set[str] = set()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for u in range(USERS_PER_RUN):
            offset = 0
            while True:
                page = client.get(
                    "/v1/memories", params={"user_id": f"user{u}", "limit": 1000, "offset": offset}
                ).json()["results"]
                ids.update(r["id"] for r in page)
                offset += len(page)
                if len(page) < 1000:
                    break
    return ids


def _warm_up(url: str, key: str, workers: int) -> None:
    """Load the embedding model before the clock starts (first search embeds), in
    every worker process as far as connection spreading allows."""
    import httpx

    async def one(client: Any) -> None:
        resp = await client.post(
            "/v1/memories/search", json={"query": "warm up", "user_id": "user0"}
        )
        resp.raise_for_status()

    async def all_workers() -> None:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300
        ) as client:
            await asyncio.gather(*(one(client) for _ in range(4 * workers)))

    asyncio.run(all_workers())


def run_serve_bench(cfg: ServeBenchConfig) -> dict[str, Any]:
    """Run the benchmark and return its report (see the module docstring)."""
    from ..server.keys import KeyStore

    with tempfile.TemporaryDirectory(prefix="ctx-bench-serve-") as tmp:
        db = cfg.db or str(Path(tmp) / "bench.db")
        tenant = f"bench-{secrets.token_hex(4)}"
        keystore = KeyStore(db)
        key = keystore.create(tenant, "bench serve").secret
        keystore.close()
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
        with running_server(db, *extra, timeout=cfg.startup_timeout) as (url, _proc):
            _warm_up(url, key, cfg.workers)
            stats, acked, elapsed = asyncio.run(_load(url, key, cfg))
            stored = _stored_ids(url, key)
    total_ok = sum(len(s.latencies) for s in stats.values())
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
        "add": stats["add"].summary(elapsed),
        "search": stats["search"].summary(elapsed),
        "errors": sum(s.errors for s in stats.values()),
        "acknowledged_writes": len(acked),
        "stored_writes": len(stored & acked),
        "stored_total": len(stored),
        "missing_writes": len(acked - stored),
    }


def _redact(db: str) -> str:
    """Hide a password in a postgresql:// URL before it lands in a report."""
    if "://" in db and "@" in db:
        scheme, rest = db.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return db if "://" in db else "sqlite"
