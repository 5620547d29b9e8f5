"""``contextos serve`` answers a keep-alive request without waiting for a delayed ACK.

The listener was made with protocol 0, and asyncio sets ``TCP_NODELAY`` only on
connections accepted from a socket whose protocol is TCP: with Nagle's algorithm on,
the response's second write (the body after the head) waited for the client's delayed
ACK, 44 ms for every request on a kept-alive connection (23 requests a second on one
connection, whatever the route). The real command on loopback, one httpx connection.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from contextos.server.keys import KeyStore

httpx = pytest.importorskip("httpx")

from contextos.bench.serve import running_server  # noqa: E402


def _median_ms(http: httpx.Client, path: str, headers: dict[str, str], n: int = 30) -> float:
    http.get(path, headers=headers)  # the connection opened, the route warm
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assert http.get(path, headers=headers).status_code == 200
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_keep_alive_requests_are_not_held_for_a_delayed_ack(tmp_path: Path, workers: str) -> None:
    db = str(tmp_path / "lat.db")
    with KeyStore(db) as store:
        key = store.create("acme").secret
    with (
        running_server(db, "--embedder", "hash", "--workers", workers) as (url, _proc),
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        auth = {"Authorization": f"Bearer {key}"}
        # 44 ms each before (Nagle + the client's 40 ms delayed ACK); well under 1 ms
        # unloaded after. 20 ms leaves room for a loaded machine.
        assert _median_ms(http, "/healthz", {}) < 20
        assert _median_ms(http, "/v1/memories?user_id=u", auth) < 20
