"""``contextos export`` / ``import`` and ``Memory.export`` / ``Memory.import_records``: a
store's memories out and back, as they were.

Why (review s57, finding 1): the documented way out (``list --validity all --json``) and
back (``add`` each, "adds again as read") refused every session memory (its ``seq``) and
every assistant turn (its ``role``), stored inferred facts twice on a re-import, brought
superseded facts back as current and lost ids and times. Users need it for backups,
restores and moving a store from SQLite to PostgreSQL.

Each test runs on real SQLite files, and where it says so on the test PostgreSQL too
(skipped with the reason when none runs).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import cli_env, run_cli
from contextos import Message, Session
from contextos.memory import Memory
from contextos.memory.transfer import (
    FORMAT,
    FORMAT_VERSION,
    ImportLineError,
    ImportTenantError,
)
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope
from pg_support import memory_on, pg_url, two_handles

#: Control characters, bidi marks, emoji, a line separator: no NUL (no store keeps one).
HOSTILE = (
    "zebra\x07\x1b[2J \u202eevil\u202c \u200f\u05e9\u05dc\u05d5\u05dd 😀👩‍👩‍👧 a\u2028b\tc\r\nd"
)


def fill(m: Memory) -> None:
    """What a real store holds: plain, zoned, typed and named memories, inferred facts
    (Berlin superseded by Paris), a session's user and assistant turns, some of them
    offloaded from its log, an agent's note and hostile text."""
    m.add("I moved to Lisbon in May", user_id="ana", event_time="2024-05-02T10:00:00+02:00")
    m.add("Prefers tea", user_id="ana", metadata={"source": {"app": "slack"}, "n": 1.5})
    m.add("Always answer in Portuguese", user_id="ana", memory_type="procedural")
    m.add({"role": "user", "content": "Bob said hi", "name": "Bob"}, user_id="ana")
    m.add("I live in Berlin", user_id="ana", infer=True)
    m.add("I now live in Paris", user_id="ana", infer=True)
    m.add(
        [
            {"role": "user", "content": "turn a"},
            {"role": "assistant", "content": "reply a"},
        ],
        user_id="ana",
        session_id="s2",
    )
    s = Session(m, "s3", user_id="ana")
    for i in range(12):
        s.add(Message("user" if i % 2 == 0 else "assistant", f"s3 turn {i} " + "words " * 30))
    assert s.compact(300, strategy="offload", force=True).archived > 1
    m.add(HOSTILE, user_id="ana", session_id="s9", metadata={"note": HOSTILE})
    m.add("the agent's own note", agent_id="helper")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "src.db", embedder=HashEmbedder(), background_embedding=False) as m:
        fill(m)
        yield m


def dst_dir(tmp_path: Path) -> Path:
    (tmp_path / "dst").mkdir(exist_ok=True)
    return tmp_path / "dst"


def records(m: Memory) -> list[dict[str, Any]]:
    """Every memory of ``m``'s tenant, each with every field a record has (the token
    count aside: a cache), in the store's order."""
    rows = m.store.list_after(Filter(scope=Scope(m.tenant), include_invalid=True), limit=10_000)
    return [{**r.to_dict(), "context": r.context, "hash": r.hash} for r, _ in rows]


def test_export_lines_are_a_header_then_every_memory_oldest_first(source: Memory) -> None:
    lines = list(source.export())
    assert lines[0]["format"] == FORMAT and lines[0]["version"] == FORMAT_VERSION
    assert lines[0]["scope"] == {"user_id": None, "agent_id": None, "session_id": None}
    body = lines[1:-1]
    assert lines[-1] == {"end": True, "count": len(body)}
    assert [r["id"] for r in body] == [r["id"] for r in reversed(records(source))]
    texts = {r["text"] for r in body}
    assert {"User lives in Berlin", "reply a", HOSTILE, "the agent's own note"} <= texts
    berlin = next(r for r in body if r["text"] == "User lives in Berlin")
    assert berlin["valid_to"] is not None  # superseded, and exported
    # A scope's export: ana's only, the agent's note left out.
    ana = list(source.export(user_id="ana"))
    assert ana[0]["scope"]["user_id"] == "ana"
    assert len(ana) == len(lines) - 1


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_import_restores_every_field(source: Memory, tmp_path: Path, kind: str) -> None:
    """Into a fresh SQLite file or PostgreSQL: every record as it was (id, text, type,
    scope, metadata, context, times, validity, provenance), in the same order (the turns
    an offload archived share one instant), superseded facts still superseded."""
    exported = list(source.export())
    with memory_on(
        kind, dst_dir(tmp_path), embedder=HashEmbedder(), background_embedding=False
    ) as d:
        report = d.import_records(exported)
        assert (report.added, report.already, report.conflicts) == (len(exported) - 2, 0, 0)
        assert records(d) == records(source)
        hits = [h.record.text for h in d.search("where does ana live", user_id="ana")]
        assert "User now lives in Paris" in hits and "User lives in Berlin" not in hits
        # The keyword index holds them: the hostile text is found by its word.
        found = d.store.keyword_search(Filter(scope=Scope(d.tenant, "ana")), "zebra", limit=5)
        assert [d.get(f.id).text for f in found] == [HOSTILE]
        # A session restored goes on where it was: the next turn is numbered as there.
        (turn,) = d.add("one more", user_id="ana", session_id="s3")
        (there,) = source.add("one more", user_id="ana", session_id="s3")
        assert turn.metadata["seq"] == there.metadata["seq"] > 0


def test_importing_twice_or_into_the_source_stores_nothing_again(
    source: Memory, tmp_path: Path
) -> None:
    """Idempotent: a second import (or one into the store exported) adds nothing and
    says how many were there; the inferred facts are not stored twice (they were)."""
    exported = list(source.export())
    n = len(exported) - 2
    before = records(source)
    report = source.import_records(exported)
    assert (report.added, report.already, report.conflicts) == (0, n, 0)
    assert records(source) == before
    with Memory(tmp_path / "dst.db", embedder=HashEmbedder(), background_embedding=False) as d:
        d.import_records(exported)
        again = d.import_records(json.dumps(line) for line in exported)
        assert (again.added, again.already, again.conflicts) == (0, n, 0)
        assert records(d) == before


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_changed_memory_is_a_conflict_and_left_as_stored(
    source: Memory, tmp_path: Path, kind: str
) -> None:
    exported = list(source.export(user_id="ana"))
    with memory_on(
        kind, dst_dir(tmp_path), embedder=HashEmbedder(), background_embedding=False
    ) as d:
        d.import_records(exported)
        tea = next(r for r in exported[1:-1] if r["text"] == "Prefers tea")
        d.update(tea["id"], "Prefers coffee now")
        report = d.import_records(exported)
        assert (report.added, report.conflicts, report.conflict_ids) == (0, 1, [tea["id"]])
        assert report.already == len(exported) - 3
        assert d.get(tea["id"]).text == "Prefers coffee now"


def test_an_id_of_another_tenant_is_a_conflict_on_sqlite(source: Memory, tmp_path: Path) -> None:
    """SQLite's ids are unique across tenants: the same export (its header left out, as
    a copy into another tenant must) into a second tenant of one file is refused record
    by record, reported, nothing overwritten."""
    exported = list(source.export(agent_id="helper"))
    with Memory(
        tmp_path / "src.db", tenant="acme", embedder=HashEmbedder(), background_embedding=False
    ) as other:
        report = other.import_records(exported[1:-1])
    assert (report.added, report.conflicts) == (0, 1)
    assert source.get(exported[1]["id"]).tenant == "default"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_imported_memories_are_found_by_meaning_once_the_worker_ran(
    source: Memory, tmp_path: Path, kind: str
) -> None:
    exported = list(source.export())
    with memory_on(kind, dst_dir(tmp_path), embedder=HashEmbedder()) as d:
        d.import_records(exported)
        assert d.flush(timeout=30)
        assert d.embedding_status().pending == 0
        flt = Filter(scope=Scope(d.tenant, "ana"), include_invalid=True)
        vector = d.embedder.embed(["Always answer in Portuguese"])[0]
        (best, *_) = d.store.vector_search(flt, vector, limit=3)
        assert d.get(best.id).text == "Always answer in Portuguese"


def test_default_embedder_finds_an_imported_memory_by_meaning(tmp_path: Path) -> None:
    """With the shipped model: a question sharing no word with the memory finds it."""
    line = {
        "id": "m-1",
        "text": "Ana's flat is in Lisbon",
        "user_id": "ana",
        "created_at": "2024-05-02T10:00:00Z",
    }
    with Memory(tmp_path / "m.db") as m:
        m.import_records([line])
        assert m.flush(timeout=60)
        (hit,) = m.search("which city is her home", user_id="ana", limit=1)
        assert hit.record.id == "m-1" and hit.dense_rank == 1


def test_a_bad_line_is_named_and_the_batches_before_it_stay(tmp_path: Path) -> None:
    good = [
        json.dumps({"id": f"m{i}", "text": f"t{i}", "user_id": "u", "created_at": "2024-01-01"})
        for i in range(3)
    ]
    header = json.dumps({"format": FORMAT, "version": FORMAT_VERSION})
    base = {"id": "x", "text": "t", "user_id": "u", "created_at": "2024-01-01"}
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        with pytest.raises(ImportLineError, match=r"^line 5: not JSON") as caught:
            m.import_records([header, *good, "{broken", good[0]], batch_size=2)
        assert caught.value.line == 5 and caught.value.report.added == 3
        assert m.store.count(Filter(scope=Scope(m.tenant, "u"))) == 3
        for bad, why in [
            ('{"id": "x", "text": "t", "user_id": "u", "created_at": "2024", "x": 1}', "unknown"),
            ('{"id": "x", "text": "t", "user_id": "u"}', "'created_at' is missing"),
            ('{"id": "x", "text": "t", "user_id": "u", "created_at": "soon"}', "ISO-8601"),
            ('{"id": "x", "text": "t", "created_at": "2024-01-01"}', "user_id, agent_id"),
            ('{"id": "x", "text": "t\\u0000", "user_id": "u", "created_at": "2024-01-01"}', "NUL"),
            (
                '{"id": "x", "text": "t", "user_id": "u", "created_at": "2024", '
                '"metadata": {"n": NaN}}',
                "nan",
            ),
            ('{"format": "contextos-export", "version": 2}', "version 2"),
            ("[1]", "expected a JSON object"),
            # What add refuses, refused here too (review s57, defect 7): the other
            # surfaces could not read such a memory back.
            (json.dumps({**base, "id": "i" * 300}), "at most 256"),
            (json.dumps({**base, "text": "   "}), "'text' is blank"),
            (json.dumps({**base, "metadata": {"n": 2**70}}), "64 bits"),
            (json.dumps({**base, "metadata": deep}), "nest at most"),
            (json.dumps({**base, "text": "t\ud800"}), "not valid Unicode"),
            (json.dumps({**base, "text": "t" * 100_001}), "at most 100,000"),
        ]:
            with pytest.raises(ImportLineError, match=why):
                m.import_records([bad])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_interrupted_import_leaves_whole_batches_and_a_rerun_finishes_it(
    tmp_path: Path, kind: str
) -> None:
    lines = [
        {"id": f"m{i}", "text": f"memory number {i}", "user_id": "u", "created_at": "2024-01-01"}
        for i in range(10)
    ]

    def cut_after(n: int) -> Iterator[dict[str, Any]]:
        yield from lines[:n]
        raise KeyboardInterrupt

    with memory_on(kind, tmp_path, embedder=HashEmbedder(), background_embedding=False) as m:
        with pytest.raises(KeyboardInterrupt):
            m.import_records(cut_after(6), batch_size=4)
        assert m.store.count(Filter(scope=Scope(m.tenant, "u"))) == 4  # one whole batch
        report = m.import_records(lines, batch_size=4)
        assert (report.added, report.already) == (6, 4)
        stored = m.get_all(user_id="u", limit=100)
        assert sorted(r.id for r in stored) == sorted(line["id"] for line in lines)
        flt = Filter(scope=Scope(m.tenant, "u"))
        assert len(m.store.keyword_search(flt, "memory number", limit=100)) == 10


def test_export_reads_a_page_at_a_time(source: Memory) -> None:
    """Pages of 3 (``batch_size``) give every memory once, oldest first, whichever
    page boundary two memories of one instant fall on."""
    stored = records(source)
    assert len(stored) > 9
    for size in (1, 2, 3, 500):
        lines = list(source.export(batch_size=size))
        assert [line["id"] for line in lines[1:-1]] == [r["id"] for r in reversed(stored)]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        source.export(batch_size=0)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_export_is_one_snapshot_whatever_is_written_meanwhile(tmp_path: Path, kind: str) -> None:
    """Review s57, defect 1: each page was read on its own, so what was updated, deleted
    or added after the first page showed in the later ones (a superseded fact came back
    current beside the fact superseding it). The export is now the store as it was when
    it began: pages of 2, and after the first page is read a later memory is updated,
    another deleted and a new one added, while the export goes on."""
    with memory_on(kind, tmp_path, embedder=HashEmbedder(), background_embedding=False) as m:
        ids = [m.add(f"memory {i}", user_id="ana")[0].id for i in range(6)]
        before = {r.id: r.text for r in m.get_all(user_id="ana", limit=100)}
        export = m.export(batch_size=2)
        got = [next(export), next(export), next(export)]  # the header and the first page
        m.update(ids[4], "memory 4, changed after the export began")
        m.delete(ids[5])
        m.add("memory added after the export began", user_id="ana")
        got += list(export)
        assert got[-1] == {"end": True, "count": 6}
        assert {r["id"]: r["text"] for r in got[1:-1]} == before


def test_cli_export_piped_into_import(source: Memory, tmp_path: Path) -> None:
    """``contextos export | contextos import -`` into a fresh file, then the file
    exported with ``-o`` imported again: nothing added, exit 0."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    n = len(records(source))
    producer = subprocess.Popen(
        [sys.executable, "-m", "contextos", "--db", str(src), "export"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    consumer = subprocess.run(
        [sys.executable, "-m", "contextos", "--db", str(dst), "import", "-"],
        stdin=producer.stdout,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=180,
    )
    assert producer.stdout is not None
    producer.stdout.close()
    assert producer.wait(timeout=60) == 0
    assert producer.stderr is not None
    with producer.stderr:
        assert f"exported {n} memories" in producer.stderr.read().decode()
    assert consumer.returncode == 0, consumer.stderr
    assert f"imported {n} memories: {n} added, 0 already stored, 0 conflicts" in consumer.stdout

    out = tmp_path / "ana.jsonl"
    done = run_cli("export", "-u", "ana", "-o", str(out), db=dst)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    again = run_cli("--json", "import", str(out), db=dst)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["added"] == 0 and report["already"] == n - 1 and report["conflicts"] == 0
    with Memory(dst, embedder=HashEmbedder(), background_embedding=False) as d:
        assert records(d) == records(source)


def test_cli_import_names_a_bad_line_and_lists_conflicts(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    line = {"id": "x", "text": "first", "user_id": "u", "created_at": "2024-01-01T00:00:00Z"}
    bad = run_cli("import", "-", db=db, stdin=json.dumps(line) + "\nnot json\n")
    assert bad.returncode == 2
    assert "line 2: not JSON" in bad.stderr
    assert "before it: 1 added, 0 already stored, 0 conflicts" in bad.stderr
    changed = run_cli("import", "-", db=db, stdin=json.dumps({**line, "text": "other"}) + "\n")
    assert changed.returncode == 1
    assert "1 conflict" in changed.stdout and "left as stored: x" in changed.stderr


def test_an_export_of_another_tenant_is_refused_unless_imported_there(tmp_path: Path) -> None:
    """Review s57, defect 5: acme's backup imported without ``--tenant`` landed in
    tenant "default", readable by its keys. Now refused (exit 2, one line naming both
    tenants and ``--tenant``), nothing stored; with ``--tenant acme`` it is restored."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    with Memory(src, tenant="acme", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("acme's private roadmap", user_id="ana")
        exported = list(m.export())
    backup = tmp_path / "acme.jsonl"
    done = run_cli("--tenant", "acme", "export", "-o", str(backup), db=src)
    assert done.returncode == 0, done.stderr
    refused = run_cli("import", str(backup), db=dst)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1
    assert "'acme'" in refused.stderr and "'default'" in refused.stderr
    assert "--tenant acme" in refused.stderr
    with Memory(dst, embedder=HashEmbedder(), background_embedding=False) as d:
        assert d.store.count(Filter(scope=Scope(d.tenant), include_invalid=True)) == 0
        with pytest.raises(ImportTenantError, match="'acme'.*'default'"):
            d.import_records(exported)
        assert d.store.count(Filter(scope=Scope(d.tenant), include_invalid=True)) == 0
    restored = run_cli("--tenant", "acme", "import", str(backup), db=dst)
    assert restored.returncode == 0, restored.stderr
    assert "1 added" in restored.stdout


def test_an_export_cut_short_is_reported_and_a_rerun_finishes_it(
    source: Memory, tmp_path: Path
) -> None:
    """Review s57, defect 9: an export to stdout killed midway looked whole. Its last
    line is now ``{"end": true, "count": N}``; an import of a file without it (or with
    another count) stores what it read, then says the file was cut short (exit 2); the
    whole file imported again finishes the import."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    done = run_cli("export", db=src)
    assert done.returncode == 0, done.stderr
    lines = [line + "\n" for line in done.stdout.split("\n")[:-1]]  # not at U+2028
    n = len(lines) - 2
    assert json.loads(lines[-1]) == {"end": True, "count": n}
    cut = run_cli("import", "-", db=dst, stdin="".join(lines[:6]))
    assert cut.returncode == 2, cut.stderr
    assert "no end line" in cut.stderr and "cut short after 5 record(s)" in cut.stderr
    assert "of what it held: 5 added, 0 already stored" in cut.stderr
    assert "import the whole file again" in cut.stderr
    with Memory(dst, embedder=HashEmbedder(), background_embedding=False) as d:
        assert len(records(d)) == 5
    lost = run_cli("import", "-", db=dst, stdin="".join(lines[:8] + lines[10:]))
    assert lost.returncode == 2, lost.stderr
    assert f"the end line counts {n} record(s), the file holds {n - 2}" in lost.stderr
    with Memory(dst, embedder=HashEmbedder(), background_embedding=False) as d:
        assert len(records(d)) == n - 2  # what it read is stored
    whole = run_cli("--json", "import", "-", db=dst, stdin=done.stdout)
    assert whole.returncode == 0, whole.stderr
    report = json.loads(whole.stdout)
    assert (report["added"], report["already"]) == (2, n - 2)
    with Memory(dst, embedder=HashEmbedder(), background_embedding=False) as d:
        # (in another order: the turns an offload archived share one instant)
        assert sorted(records(d), key=str) == sorted(records(source), key=str)


def test_overlapping_imports_into_postgresql_both_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review s57, defect 3: an import whose batch met a record another import was
    inserting (not yet committed) failed on the key, ran again, and after 3 such tries
    gave up ("a record with this id already exists"), with a "PostgreSQL write failed"
    warning each time. Restores of one tenant now queue: two handles (two processes)
    import overlapping records while the others' transactions are held open (a trigger
    sleeps 0.8 s after each row inserted, as a large batch's transaction lasts); the
    second counts the others' records as already stored, and nothing is logged."""
    import psycopg

    lines = [
        {"id": f"X{i}", "text": f"x {i}", "user_id": "u", "created_at": f"2024-01-01T00:00:0{i}Z"}
        for i in range(1, 5)
    ]
    with two_handles() as (a, b):
        with psycopg.connect(pg_url(), autocommit=True) as admin:
            admin.execute(
                f"CREATE FUNCTION {a.schema}.slow_insert() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN PERFORM pg_sleep(0.8); RETURN NULL; END $$"
            )
            admin.execute(
                f"CREATE TRIGGER slow_insert AFTER INSERT ON {a.schema}.memories "
                f"FOR EACH ROW EXECUTE FUNCTION {a.schema}.slow_insert()"
            )
        first = Memory(store=a, embedder=HashEmbedder(), background_embedding=False)
        second = Memory(store=b, embedder=HashEmbedder(), background_embedding=False)
        errors: list[BaseException] = []

        def writer(line: dict[str, Any], start: float) -> None:
            time.sleep(start)
            try:
                first.import_records([line])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        # X1..X3 imported one each, their transactions overlapping the second's tries.
        threads = [
            threading.Thread(target=writer, args=(lines[i], at))
            for i, at in enumerate((0.0, 0.5, 1.0))
        ]
        with caplog.at_level(logging.WARNING, logger="contextos"):
            for t in threads:
                t.start()
            time.sleep(0.3)
            report = second.import_records(lines)
            for t in threads:
                t.join()
        assert not errors
        assert report.conflicts == 0 and report.added + report.already == 4
        assert sorted(r.id for r in first.get_all(user_id="u")) == ["X1", "X2", "X3", "X4"]
        assert not [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        first.close()
        second.close()


def _big_store(db: Path) -> None:
    """20,000 memories of about 45 words: an export of them runs for a while."""
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.import_records(
            {
                "id": f"m{i}",
                "text": f"memory {i} " + "words " * 40,
                "user_id": "u",
                "created_at": "2024-01-01T00:00:00Z",
            }
            for i in range(20_000)
        )


def test_an_export_under_nohup_outlives_the_hangup(tmp_path: Path) -> None:
    """``nohup contextos export -o FILE``: SIGHUP ignored, as nohup sets it. The export's
    own SIGHUP handler replaced that, so the backup ended with the session that started
    it (late review s57); it now finishes."""
    db = tmp_path / "m.db"
    _big_store(db)
    out = tmp_path / "b.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "contextos", "--db", str(db), "export", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # noqa: PLW1509
    )
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(".b.jsonl*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(out.read_text().splitlines()) == 20_002  # the header, every memory, the end


def test_a_memory_whose_metadata_add_took_at_its_limit_imports(tmp_path: Path) -> None:
    """``add`` counts a memory's metadata without the keys the library writes (``role``,
    ``seq``...); the import counted them and refused a memory ``add`` had stored with
    metadata of exactly the limit (late review s57)."""
    from contextos.memory.ingest import MAX_METADATA_BYTES, metadata_bytes

    pad = MAX_METADATA_BYTES - metadata_bytes({"blob": ""})
    meta = {"blob": "x" * pad}
    assert metadata_bytes(meta) == MAX_METADATA_BYTES
    with Memory(tmp_path / "a.db", embedder=HashEmbedder(), background_embedding=False) as a:
        a.add("a note at the limit", user_id="u", session_id="s", metadata=meta)
        lines = list(a.export())
    with Memory(tmp_path / "b.db", embedder=HashEmbedder(), background_embedding=False) as b:
        report = b.import_records(lines)
    assert report.added == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_an_export_to_a_file_stopped_by_sigterm_or_sighup_leaves_no_file(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Review s57, defect 8: ``export -o`` stopped by SIGTERM (timeout, systemd, docker
    stop) or SIGHUP (a closed terminal) left a hidden ``.FILE.XXXX.part`` copy of the
    whole tenant, never cleaned up. It now unwinds as Ctrl-C does: no file, exit 143 (as
    ``chat`` ends on either)."""
    db = tmp_path / "m.db"
    _big_store(db)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "contextos", "--db", str(db), "export", "-o", str(out / "b.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    deadline = time.monotonic() + 60
    while not any(out.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert [p.name for p in out.iterdir()][0].endswith(".part")  # the export runs
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert b"terminated" in err
    assert list(out.iterdir()) == []


def test_export_says_how_many_sessions_logs_it_left_out(source: Memory, tmp_path: Path) -> None:
    """Review s57, defect 2: a store whose conversations are session logs was exported
    with "exported N memories" and nothing about the logs, which the format does not
    hold. The CLI now says on stderr how many sessions' logs were not exported."""
    db = tmp_path / "src.db"
    logs = source.store.sessions(Scope(source.tenant))
    assert "s3" in logs
    done = run_cli("export", "-o", str(tmp_path / "all.jsonl"), db=db)
    assert done.returncode == 0, done.stderr
    assert f"session logs (turns) of {len(logs)} session" in done.stderr
    one = run_cli("export", "-s", "s3", "-o", str(tmp_path / "s3.jsonl"), db=db)
    assert "session logs (turns) of 1 session were not exported" in one.stderr
    none = run_cli("export", "-a", "helper", "-o", str(tmp_path / "a.jsonl"), db=db)
    assert none.returncode == 0 and "session logs" not in none.stderr
