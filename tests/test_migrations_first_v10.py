"""SQLite files made by the first V10 script, which was later rewritten under its number.

That first V10 logged each deleted record's rowid in ``index_log_rowids`` and had no
trigger on insert; today's in-process keyword index learns of new rows only through
``index_log``. A file made by it and opened by a later release kept version 10 and so
never got the insert trigger: a process that stayed up never found, by keyword, a
memory added after its index loaded, its own adds included. V11 runs today's V10
again. The file is built here as that script left it (every migration to V9, then
the first V10's tables and triggers) and used as applications use it: a Memory that
stays up, adding and searching by keyword.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from contextos.memory import Memory
from contextos.store.sqlite.schema import MIGRATIONS, V10_INDEX_LOG_INSERTS
from contextos.testing.embedders import HashEmbedder
from store_support import sqlite_file_at

#: What the first V10 script changed, written out (it is no longer in the code).
FIRST_V10 = """
CREATE TABLE IF NOT EXISTS index_log_rowids (seq INTEGER PRIMARY KEY, mem_rowid INTEGER NOT NULL);
DROP TRIGGER index_log_delete;
CREATE TRIGGER index_log_delete AFTER DELETE ON memories BEGIN
    INSERT INTO index_log (mem_id) VALUES (old.id);
    INSERT INTO index_log_rowids (seq, mem_rowid) VALUES (last_insert_rowid(), old.rowid);
END;
DROP TRIGGER IF EXISTS index_log_insert;
"""


def _file_from_first_v10(path: Path) -> None:
    v10 = MIGRATIONS.index(V10_INDEX_LOG_INSERTS) + 1
    con = sqlite_file_at(path, v10)  # V1..V10 as today, then undone to the first V10
    con.executescript(FIRST_V10 + f"PRAGMA user_version = {v10};")
    con.commit()
    con.close()


def _objects(path: Path) -> set[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        return {(t, n) for t, n in rows}
    finally:
        con.close()


def test_a_file_from_the_first_v10_finds_what_a_long_lived_process_adds(tmp_path: Path) -> None:
    old = tmp_path / "first-v10.db"
    _file_from_first_v10(old)
    with Memory(old, embedder=HashEmbedder(), background_embedding=False) as m:
        for n in range(3):
            m.add(f"hiking trip number {n} to the mountains", user_id="ana")
        assert len(m.search("hiking", user_id="ana")) == 3  # the keyword index has loaded
        added = m.add("we keep an aquarium of guppies", user_id="ana")[0]
        hits = m.search("aquarium", user_id="ana")
        assert hits[0].record.id == added.id
        assert hits[0].lexical_rank == 1  # found by keyword, not only by its vector
    fresh = tmp_path / "fresh.db"
    Memory(fresh, embedder=HashEmbedder(), background_embedding=False).close()
    assert _objects(old) == _objects(fresh)  # the same schema as a file made today
