"""API keys: a tenant-bound secret, stored only as a hash.

A key looks like ``ctx_<id>_<secret>``. The ``id`` is public (it names the key
in ``contextos keys list`` and in revocation); the whole string is hashed with
SHA-256 and only the hash is stored, so a leaked database does not leak usable
keys. Verification looks the row up by id and compares hashes in constant time.

Keys live in an ``api_keys`` table in the same database as the memories: the
SQLite file (through a connection of its own) or the PostgreSQL database, so
server replicas sharing one PostgreSQL share their keys too.

The server keeps keys it verified for ``cache_ttl`` seconds (:meth:`KeyStore.cached`):
under load, reading the key table on a thread for every request cost a thread hop
and a query each. A revocation through the same KeyStore (the server's own
``DELETE /v1/keys/{id}``) takes effect on the next request; one made elsewhere (the
CLI, another replica) within ``cache_ttl``. A revoked key whose secret matches is
kept too (:meth:`KeyStore.checked`), so a client still sending it after a rotation is
refused without a table read.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingExtraError, NotFound, StoreError
from ..store import _URL, forks
from ..store.sqlite import create_private
from ..types import validate_tenant

KEY_PREFIX = "ctx_"
_KEY_RE = re.compile(r"^ctx_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
#: Hash compared against when a key id is unknown, so a miss costs the same as a hit.
_DUMMY_HASH = hashlib.sha256(b"contextos-no-such-key").hexdigest()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant)"
#: The tenant (and name) of an offboarded tenant's key, kept as a tombstone
#: (:meth:`KeyStore.delete_tenant`): no tenant is named "" (``validate_tenant``).
_TOMBSTONE = ""


@dataclass(frozen=True)
class ApiKey:
    """A key's public facts (never its secret)."""

    id: str
    tenant: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def offboarded(self) -> bool:
        """A tombstone: the key of a tenant deleted from this server
        (:meth:`KeyStore.delete_tenant`), revoked and naming no tenant."""
        return self.tenant == _TOMBSTONE


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: the only moment its secret is known."""

    key: ApiKey
    secret: str


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a key's full text (what the table stores)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secrets_match(secret: str, expected_hash: str) -> bool:
    """Constant-time check that ``secret`` hashes to ``expected_hash``."""
    return hmac.compare_digest(hash_secret(secret), expected_hash)


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


#: Names the advisory lock under which a process creates the PostgreSQL key table (an
#: arbitrary constant, "keys"): ``CREATE TABLE IF NOT EXISTS`` is not race-free, and of
#: processes creating the table at once (replicas starting together) the later ones
#: failed on pg_type's unique index.
_PG_SETUP_LOCK = 0x6B657973

#: Connections of a PostgreSQL key table, at most (one is kept open): verifications
#: run on a server's worker threads, and most are answered by the key cache.
_PG_CONNECTIONS = 4

#: Seconds to wait for PostgreSQL: to connect, and for a connection of the pool.
_PG_TIMEOUT = 10.0


class _Sql:
    """The few statements KeyStore needs, on sqlite3 or psycopg.

    On PostgreSQL through a small connection pool whose connections are checked before
    use, as the store's are (``store.postgres.pool``): one the server closed while it was
    idle (a restart, ``pg_terminate_backend``, ``idle_session_timeout``, a proxy's idle
    limit) is replaced before a statement is sent on it. With one connection reconnected
    only after a statement failed on it, the first request after every such loss was a
    503."""

    def __init__(self, db: str) -> None:
        self._lock = threading.Lock()  # the SQLite connection's
        self.postgres = db.startswith(("postgresql://", "postgres://"))
        if not self.postgres and (url := _URL.match(db)) is not None:
            # As open_store refuses it: read as a path, `keys list --db mysql://x`
            # created a folder "mysql:" and an empty key table in it, and exited 0.
            raise ConfigError(
                f"unsupported database URL scheme {url.group(1)!r}: give a SQLite file path "
                "or a postgresql:// URL"
            )
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        try:
            if self.postgres:
                self._pool: Any = self._open_pg(db)
            else:
                self._conn: Any = self._connect_sqlite(db)
                self.run(_SCHEMA)
                self.run(_INDEX)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the API key table: {exc}") from exc

    @staticmethod
    def _connect_sqlite(db: str) -> sqlite3.Connection:
        path = Path(db).expanduser()
        forks.check_not_inherited(path)  # its lock table would be the parent's
        # Owner-only, as the store's file (create_private): the key rows name tenants.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if db != ":memory:":
            create_private(path)
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _open_pg(self, url: str) -> Any:
        """Create the table if missing (on a plain connection, so a refused connection
        reports the server's own reason), then open the pool."""
        try:
            import psycopg
            import psycopg_pool  # noqa: F401 - open_pool's, imported when the pool opens
        except ImportError as exc:
            raise MissingExtraError("postgres", exc.name or "psycopg") from exc
        from ..store.postgres import _conninfo
        from ..store.postgres.pool import open_pool, with_liveness

        # The URL is read first, by the store's own reader: psycopg's complaint about a
        # URL it cannot read quotes the part, and a password holding a raw "%" was
        # printed in clear by `keys create`, `keys list` and `mcp`. The store's words
        # leave it out, and its ValueError gives the same exit code as `list`'s.
        _conninfo(url)
        self._errors = (psycopg.Error,)
        kwargs = with_liveness(url, {"autocommit": True, "connect_timeout": int(_PG_TIMEOUT)})
        try:
            with psycopg.connect(url, **kwargs) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SETUP_LOCK,))
                conn.execute(_SCHEMA)
                conn.execute(_INDEX)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the API key table: {exc}") from exc
        try:
            return open_pool(
                url, kwargs, max_size=_PG_CONNECTIONS, timeout=_PG_TIMEOUT, name="contextos-keys"
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Execute one statement (autocommit) and return its rows."""
        if self.postgres:
            from ..store.postgres.pool import checked_connection

            try:
                with checked_connection(self._pool, _PG_CONNECTIONS + 1) as conn:
                    cur = conn.execute(sql.replace("?", "%s"), tuple(params))
                    return list(cur.fetchall()) if cur.description else []
            except self._errors as exc:  # driver errors become StoreError at the seam
                raise StoreError(f"key table: {exc}") from exc
        with self._lock:
            try:
                cur = self._conn.execute(sql, tuple(params))
                return list(cur.fetchall()) if cur.description else []
            except self._errors as exc:
                raise StoreError(f"key table: {exc}") from exc

    def close(self) -> None:
        if self.postgres:
            self._pool.close()
            return
        with self._lock:
            self._conn.close()


#: The most characters a key's name may hold (the HTTP API's ``CreateKeyRequest.name``
#: and ``contextos keys create --name`` alike).
MAX_KEY_NAME = 200

#: The server's ``cache_ttl`` (seconds): a revocation made elsewhere reaches it this late.
KEY_CACHE_TTL = 1.0
#: Verified keys the server keeps at most (a full cache is emptied, then refills).
MAX_CACHED_KEYS = 4096


class KeyStore:
    """Create, verify, list and revoke API keys in the ``api_keys`` table."""

    def __init__(
        self,
        db: str,
        *,
        cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``cache_ttl``: seconds a key that :meth:`verify` accepted is answered by
        :meth:`cached` without reading the table (0: never; the CLI's default)."""
        if not math.isfinite(cache_ttl) or cache_ttl < 0:  # inf: revocations never seen
            raise ValueError("cache_ttl must be a finite number >= 0")
        self._sql = _Sql(str(db))
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, tuple[ApiKey, float]] = {}  # secret's hash -> key, expiry
        self._cache_lock = threading.Lock()
        self._revocations = 0  # a verify that read its row before a revoke caches nothing

    def create(self, tenant: str, name: str = "") -> IssuedKey:
        """Issue a new key for ``tenant``; the returned secret is never stored. A
        ``name`` over :data:`MAX_KEY_NAME` characters is a ValueError."""
        validate_tenant(tenant)
        if len(name) > MAX_KEY_NAME:
            raise ValueError(f"String should have at most {MAX_KEY_NAME} characters")
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = datetime.now(UTC)
        self._sql.run(
            "INSERT INTO api_keys (id, tenant, name, hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, tenant, name, hash_secret(secret), now.isoformat()),
        )
        return IssuedKey(ApiKey(key_id, tenant, name, now), secret)

    def verify(self, secret: str) -> ApiKey | None:
        """The active key ``secret`` belongs to, or None (unknown, malformed or revoked)."""
        key = self.check(secret)
        return key if key is not None and key.active else None

    def check(self, secret: str) -> ApiKey | None:
        """The key ``secret`` belongs to, active or revoked, or None (unknown id, wrong
        secret, malformed).

        Why revoked keys too: a revoked key whose secret matches proves its holder had
        it; it is a client that missed a rotation, not a guess, and the server answers
        it without charging the failed-authentication throttle (a stale worker of one
        tenant locked every client on its host out with 429s: a review). The work done
        for a miss and a hit is the same as before (one row read by the public id, one
        constant-time comparison, against a dummy hash when the id is unknown); only a
        caller holding the whole secret can reach the revoked answer."""
        match = _KEY_RE.match(secret) if isinstance(secret, str) else None
        revocations = self._revocations
        row = self._row(match.group(1)) if match else None
        ok = secrets_match(secret if match else "", row[3] if row else _DUMMY_HASH)
        if not (match and row and ok):
            return None
        key = self._to_key(row)
        if self.cache_ttl > 0:
            self._remember(row[3], key, revocations)
        return key

    def _remember(self, digest: str, key: ApiKey, revocations: int) -> None:
        """Cache ``key`` under its secret's hash for ``cache_ttl`` seconds, unless it is
        active and a revocation ran since its row was read (``revocations``): a revoked
        key never becomes active again, so caching one is never stale."""
        with self._cache_lock:
            if key.active and revocations != self._revocations:
                return
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.clear()
            self._cache[digest] = (key, self._clock() + self.cache_ttl)

    def cached(self, secret: str) -> ApiKey | None:
        """The active key ``secret`` belongs to if :meth:`check` matched it less than
        ``cache_ttl`` seconds ago, else None (then ask :meth:`verify`). Reads no table,
        so the server calls it on its event loop; a key revoked through this KeyStore
        is never answered from here."""
        key = self.checked(secret)
        return key if key is not None and key.active else None

    def checked(self, secret: str) -> ApiKey | None:
        """:meth:`cached`, revoked keys included: what :meth:`check` answered for
        ``secret`` less than ``cache_ttl`` seconds ago, else None. Why: a client that
        keeps sending its revoked key is answered from memory on the event loop, not by
        a table read on a thread per request."""
        entry = self._cache.get(hash_secret(secret)) if self._cache else None
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            return None
        return entry[0]

    def get(self, key_id: str) -> ApiKey:
        """A key by id (revoked ones included); NotFound otherwise, and for the tombstone
        of an offboarded tenant's key (:meth:`delete_tenant`): it is no tenant's key."""
        row = self._row(key_id)
        if row is None or row[1] == _TOMBSTONE:
            raise NotFound(f"no API key with id {key_id!r}")
        return self._to_key(row)

    def list(self, tenant: str | None = None, *, include_revoked: bool = True) -> list[ApiKey]:
        """Keys, oldest first, optionally of one tenant only."""
        sql = "SELECT id, tenant, name, hash, created_at, revoked_at FROM api_keys"
        sql += " WHERE tenant <> ?"  # tombstones are no tenant's keys
        params: tuple[str, ...] = (_TOMBSTONE,)
        if tenant is not None:
            sql, params = sql + " AND tenant = ?", (*params, tenant)
        keys = [self._to_key(r) for r in self._sql.run(sql + " ORDER BY created_at, id", params)]
        return [k for k in keys if include_revoked or k.active]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent). It stops verifying at once through this KeyStore,
        and on other replicas once their cached copy expires (``cache_ttl``)."""
        key = self.get(key_id)
        self._forget(key_id)
        if key.active:
            now = datetime.now(UTC).isoformat()
            self._sql.run("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
        self._forget(key_id)  # a verify that raced the update
        return self.get(key_id)

    def delete_tenant(self, tenant: str) -> int:
        """Erase every key row of ``tenant`` (active and revoked) down to a tombstone;
        how many there were.

        A tombstone is a revoked key that names nobody: its id, its hash and its
        revocation time, with tenant and name blanked (:data:`_TOMBSTONE`) and its
        creation time replaced by that revocation time. Why not keep the rows revoked:
        a revoked row keeps the tenant's name, the key's label (often a customer's or a
        host's name) and its creation time, listed for good; an offboarded tenant must
        leave none of it (:meth:`list` and :meth:`get` never show a tombstone). Why not
        delete them (as before): the tenant's integration that keeps running then sends
        a secret that matches no row, a guess to the server, and each request used one
        of its address's failed attempts, until every tenant on that host got 429 (a
        review). As a tombstone, the key is answered as any revoked key is (:meth:`check`,
        a 401 that charges no attempt); the hash of a random secret is none of the
        tenant's data. On SQLite the rows are rewritten with ``secure_delete``, so the
        old bytes are zeroed in the file (an erasure of the store truncates the WAL they
        passed through: ``forget --whole-tenant`` runs it after this)."""
        validate_tenant(tenant)
        with self._cache_lock:  # they stop verifying here at once, as a revoked key does
            self._revocations += 1
            self._cache = {d: e for d, e in self._cache.items() if e[0].tenant != tenant}
        if not self._sql.postgres:
            self._sql.run("PRAGMA secure_delete = ON")
        now = datetime.now(UTC).isoformat()
        gone = self._sql.run(
            "UPDATE api_keys SET tenant = ?, name = ?, created_at = COALESCE(revoked_at, ?), "
            "revoked_at = COALESCE(revoked_at, ?) WHERE tenant = ? RETURNING id",
            (_TOMBSTONE, _TOMBSTONE, now, now, tenant),
        )
        return len(gone)

    def close(self) -> None:
        """Close the connection."""
        self._sql.close()

    def _forget(self, key_id: str) -> None:
        """Drop ``key_id`` from the cache (it is being revoked); verifications already
        under way do not put it back."""
        with self._cache_lock:
            self._revocations += 1
            for digest, (key, _) in list(self._cache.items()):
                if key.id == key_id:
                    del self._cache[digest]

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _row(self, key_id: str) -> tuple[Any, ...] | None:
        rows = self._sql.run(
            "SELECT id, tenant, name, hash, created_at, revoked_at FROM api_keys WHERE id = ?",
            (key_id,),
        )
        return rows[0] if rows else None

    @staticmethod
    def _to_key(row: Sequence[Any]) -> ApiKey:
        created = _parse_time(row[4])
        assert created is not None
        return ApiKey(str(row[0]), str(row[1]), str(row[2]), created, _parse_time(row[5]))
