"""Applied migrations never change, and the shared table definitions are the tables.

A database records only the number of the last migration it ran (SQLite's
``user_version``, PostgreSQL's ``schema_version``), so an edited migration would leave
old databases and new ones with different schemas and nothing to notice it. Part of
the SQL is rendered from :mod:`contextos.store.tables`, so these digests (of the SQL
as it stood when each migration shipped) also catch an edit there that reaches an
applied migration. A new migration adds a digest; an old digest is never updated.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from contextos.store.postgres.schema import MIGRATIONS as POSTGRES_MIGRATIONS
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from contextos.store.tables import SESSION_META, TURNS
from pg_support import connect, pg_url, postgres_store

SQLITE_DIGESTS = (
    "e99b111f9b36bae058078c3ee09490d7050a79c2f7aac0386317dd737fc39128",
    "4dd46b8d4db6de492a14ea1b4b0118d94627f78abacafddc2dbb0a947382a7a4",
    "1823a9b0f958b3e0a2d17918463a37b9df414cc93743987e2b748f6a279c5b5b",
    "178b42c9781f298ccf5d4ca89529c00cb1417eda7b367f41a5d624421603b091",
    "487e53313b403887f4564f8ef1e2256822ad17260692a92067c95656b72c8557",
    "7e04fdee3ac713496bd1e3923f8516b98bea42a46b35263301f2db9df27728cb",
    "46479a93ddc9f6cf998408db69fe10083a31f0af126be6b1034d0883a3496d8b",
    "5a75a83f761a1596e6e956c23b8984252dc41add01c1242d5c829a44835937b2",
    "e2cb20b1e6c3bc74b576bf800f595b39fb49737a05d93a75eb3200449b8c6121",
    "fa6d61e12e787c3b21504ed4414d68325eb2b07eb61e86c22c748b36a0b0b160",
    "b87619775299b00df7385d9799c51659ccfce47ba14e5836138fb3c7a68adfd3",
    "9e0a305f9ee4b1eeb3f87660788f3bc38b679bdaa2abd1a9c09e25d586259896",
    "43c1392022e069480c1b062531de990d4e3efbd45fb7f58370d13e21e5ffe47a",
    "614faf9df994f4c31d82f601fe6a590ee66786dc36a3ad2e40b21fc8a3c60439",
    "ff005042d454fba8aeb6eae5019d328f8130e7489c269412ff09990786301076",
    "afb43d1f0be3f6742f446687e9e24cb1cce40a1b243e973326e30182e8f89fd0",
    "e1e0d0183004d62e9aa2df9754f84c63b941c3ffa67fc11a1e4635cdb4e80082",
)
POSTGRES_DIGESTS = (
    "3ec17e111134dffd73c1ada7bd9ab9fec2e7c5aafa800a97117fdad475d80ce0",
    "b14e1b4bfa5b0c3b83c3b7cbd20ba9e53aad123a9084c36bc136f640ff57dfdc",
    "edcc705f3be69f4cea2665b24d6e50d059be9202b6401464ed36e720bcb66c71",
    "8b65ba4a9d7c0287e000358c83c229db7f9f7feb7ec3585b5e30677935179ba7",
    "8f8351aea05ca878f41479f6abe3a0a2e3cae742a598b99f8a9aba530ee4f109",
    "871d8b8682ab666c9f28de441c727ea9bf375bdc2ff324e305ad982431908679",
    "69468843475c7452dfa97fae0b6a005d560125d2521dfc7e64f94bd0c6477250",
    "6bf744c2eff4a4b06f365f196624135e637683afa40a8a2542b2b15b53389936",
    "eaf3cb0757565484b55fe5fe8e3197b4f354c3b3b23bffa98bedfb2fa7637942",
    "06ed0df463b28dbf352e2e85b56eb93bdc827803700ffb45fdb517dc1ae1150a",
    "d5afc59b289719b290c2fd2ed3acd4f8647299beb289bf4d875734345d6aae2a",
    "8a62267ee0ef5c57de87ba4ecb7595d813f48e29a81c3d84351449a41e93083e",
    "fda2488a75ba7f0c2551bfa0d658a4d53c50e23e80c4f532789aca736bde03c6",
    "1761519102c40024cd74392357d7af181a50c2b4a0bd4b4b2a0bae4c6e7b5707",
    "96a1429e410bc0635e10f952e0ffde2d0f5f9bcaa4378bbe8a389029254739df",
)


def _digests(scripts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(hashlib.sha256(s.encode("utf-8")).hexdigest() for s in scripts)


@pytest.mark.parametrize(
    ("migrations", "pinned"),
    [(SQLITE_MIGRATIONS, SQLITE_DIGESTS), (POSTGRES_MIGRATIONS, POSTGRES_DIGESTS)],
    ids=["sqlite", "postgres"],
)
def test_applied_migrations_are_unchanged(
    migrations: tuple[str, ...], pinned: tuple[str, ...]
) -> None:
    assert _digests(migrations)[: len(pinned)] == pinned
    assert len(migrations) >= len(pinned)


def test_sqlite_session_tables_have_the_shared_columns(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    con = sqlite3.connect(tmp_path / "s.db")
    for table in (TURNS, SESSION_META):
        names = tuple(r[1] for r in con.execute(f"PRAGMA table_info({table.name})"))
        assert names == table.column_names()
    con.close()


@pytest.mark.postgres
def test_postgres_session_tables_have_the_shared_columns() -> None:
    pytest.importorskip("psycopg")
    store: Any
    with postgres_store() as store, connect(pg_url()) as conn:
        for table in (TURNS, SESSION_META):
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                (store.schema, table.name),
            ).fetchall()
            assert tuple(r[0] for r in rows) == table.column_names()
