"""The server's cache of verified API keys: what it saves, and how late a revocation
made elsewhere (the CLI, another replica) reaches a running server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contextos.server.keys import KeyStore
from server_support import ADMIN_KEY, app_client, assert_error, auth, issue_key


def listing(c: TestClient, key: str) -> Any:
    """A request any valid key of the tenant may make."""
    return c.get("/v1/memories", params={"user_id": "a"}, headers=auth(key))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_key_is_answered_from_the_cache_until_it_expires(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    clock = Clock()
    with KeyStore(db, cache_ttl=1.0, clock=clock) as server, KeyStore(db) as cli:
        issued = cli.create("acme")
        assert server.cached(issued.secret) is None  # never verified yet
        assert server.verify(issued.secret) == issued.key
        assert server.cached(issued.secret) == issued.key
        assert server.cached(issued.secret + "x") is None

        cli.revoke(issued.key.id)  # elsewhere: the server's table read is skipped...
        clock.now += 0.9
        assert server.cached(issued.secret) == issued.key
        clock.now += 0.1  # ...for at most cache_ttl
        assert server.cached(issued.secret) is None
        assert server.verify(issued.secret) is None
        assert server.cached(issued.secret) is None  # a refused key is never cached


def test_a_revocation_through_the_same_store_takes_effect_at_once(tmp_path: Path) -> None:
    with KeyStore(str(tmp_path / "k.db"), cache_ttl=60.0) as keys:
        first, second = keys.create("acme"), keys.create("acme")
        assert keys.verify(first.secret) and keys.verify(second.secret)
        keys.revoke(first.key.id)
        assert keys.cached(first.secret) is None
        assert keys.verify(first.secret) is None
        assert keys.cached(second.secret) == second.key  # the other key stays cached


def test_without_a_ttl_nothing_is_cached(tmp_path: Path) -> None:
    with KeyStore(str(tmp_path / "k.db")) as keys:
        issued = keys.create("acme")
        assert keys.verify(issued.secret) == issued.key
        assert keys.cached(issued.secret) is None
    for ttl in (-1.0, float("nan"), float("inf")):  # inf: a revocation never seen
        with pytest.raises(ValueError, match="cache_ttl"):
            KeyStore(str(tmp_path / "k.db"), cache_ttl=ttl)


def test_a_server_refuses_a_key_revoked_by_the_cli_within_the_ttl(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with app_client(db, key_cache_ttl=0.3) as c:
        key = issue_key(c, "acme")
        assert listing(c, key).status_code == 200
        with KeyStore(str(db)) as cli:  # what `contextos keys revoke` does
            cli.revoke(key.split("_")[1])
        time.sleep(0.35)
        assert_error(listing(c, key), 401, "Unauthenticated")


def test_the_gate_answers_a_verified_key_without_reading_the_table(tmp_path: Path) -> None:
    # The trade the cache makes, shown from outside: a key revoked elsewhere still
    # works until its cached copy expires (here 60 s), so the table was not read.
    db = tmp_path / "s.db"
    with app_client(db, key_cache_ttl=60.0) as c:
        key = issue_key(c, "acme")
        assert listing(c, key).status_code == 200
        with KeyStore(str(db)) as cli:
            cli.revoke(key.split("_")[1])
        assert listing(c, key).status_code == 200
        # The server's own revocation reaches its cache at once.
        key2 = issue_key(c, "acme")
        assert listing(c, key2).status_code == 200
        c.delete(f"/v1/keys/{key2.split('_')[1]}", headers=auth(ADMIN_KEY))
        assert_error(listing(c, key2), 401)
