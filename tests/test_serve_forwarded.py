"""``contextos serve`` believes ``X-Forwarded-For`` only from the proxies it is told of.

uvicorn believes the header from 127.0.0.1 unless told otherwise, and the failed-login
throttle counts per client address: a client on the server's host named a new address
per wrong key and was never throttled (300 of 300 checked), or named another client's
address and locked that client out (25 failures named 203.0.113.7; its valid key got
429). Each test runs the real command on loopback: the "other client" connects from
127.0.0.2, a second loopback address, so the server sees two real addresses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_support import run_cli
from contextos.server.keys import KeyStore

httpx = pytest.importorskip("httpx")

from contextos.bench.serve import running_server  # noqa: E402

WRONG = {"Authorization": "Bearer ctx_000000000000_" + "x" * 40}
OTHER = "127.0.0.2"  # another client on the same host, by its real address


@contextmanager
def serving(tmp_path: Path, *extra: str) -> Iterator[tuple[str, str]]:
    """(url, a valid key) of ``contextos serve`` on 127.0.0.1 with the default
    failed-login throttle (20 at once, then one a second per client address)."""
    db = str(tmp_path / "fwd.db")
    with KeyStore(db) as store:
        key = store.create("acme").secret
    with running_server(db, "--embedder", "hash", *extra) as (url, _proc):
        yield url, key


def client(url: str, source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=url, transport=transport, timeout=30)


def wrong_keys(http: httpx.Client, count: int, forwarded: list[str] | str) -> list[int]:
    """Statuses of ``count`` wrong-key reads, each naming ``forwarded`` (one address,
    or one per request) in ``X-Forwarded-For``."""
    names = [forwarded] * count if isinstance(forwarded, str) else forwarded
    return [
        http.get(
            "/v1/memories", params={"user_id": "u"}, headers={**WRONG, "X-Forwarded-For": name}
        ).status_code
        for name in names[:count]
    ]


def read(http: httpx.Client, key: str, forwarded: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return http.get("/v1/memories", params={"user_id": "u"}, headers=headers).status_code


def fresh_addresses(count: int) -> list[str]:
    return [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(count)]


def test_a_local_client_cannot_escape_the_throttle_or_lock_out_another_by_forwarded_for(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (url, key), client(url) as local, client(url, OTHER) as other:
        # Wrong keys naming the other client's real address throttle the sender alone:
        # that client's valid key is served, the sender's is refused with its guesses.
        codes = wrong_keys(local, 25, OTHER)
        assert codes.count(401) <= 22 and codes.count(429) >= 3, codes
        assert read(other, key) == 200
        assert read(local, key, forwarded=OTHER) == 429
        # Wrong keys naming a new address each: still one client, 127.0.0.1, throttled.
        codes = wrong_keys(local, 100, fresh_addresses(100))
        assert codes.count(401) <= 15 and codes.count(429) >= 85, codes


def test_forwarded_for_is_believed_from_the_named_proxy_only(tmp_path: Path) -> None:
    with (
        serving(tmp_path, "--forwarded-allow-ips", "127.0.0.1") as (url, key),
        client(url) as proxy,
        client(url, OTHER) as direct,
    ):
        # Through the proxy each client is its forwarded address: one that guessed 25
        # times is throttled, another behind the same proxy is not.
        assert wrong_keys(proxy, 25, "203.0.113.7").count(429) >= 1
        assert read(proxy, key, forwarded="203.0.113.7") == 429
        assert read(proxy, key, forwarded="198.51.100.9") == 200
        # A client that is not the proxy names addresses in vain.
        codes = wrong_keys(direct, 60, fresh_addresses(60))
        assert codes.count(401) <= 25 and codes.count(429) >= 35, codes
        assert read(direct, key, forwarded="192.0.2.1") == 429
        assert read(proxy, key, forwarded="192.0.2.1") == 200


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", "10.0.0.1,,bogus", ","])
def test_a_forwarded_allow_ips_that_is_not_addresses_is_a_usage_error(
    tmp_path: Path, value: str
) -> None:
    # uvicorn would take a name as a literal no client address matches: no proxy would be
    # believed, without a word. Refused before the port is bound.
    result = run_cli("serve", "--db", str(tmp_path / "x.db"), "--forwarded-allow-ips", value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--forwarded-allow-ips" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_forwarded_allow_ips_is_passed_as_uvicorn_compares_it() -> None:
    # A network with host bits (10.0.0.1/24) would be no network to uvicorn, only a name
    # no address matches; "*" among others means any, which uvicorn reads only alone.
    import click

    from contextos.cli.server_cmds import _proxies

    ctx = click.Context(click.Command("serve"))
    given = " 10.0.0.1/24, ::1 ,10.0.0.5/32,127.0.0.1"
    assert _proxies(ctx, None, given) == ["10.0.0.0/24", "::1", "10.0.0.5/32", "127.0.0.1"]
    assert _proxies(ctx, None, "10.0.0.1,*") == ["*"]
    assert _proxies(ctx, None, None) == []
