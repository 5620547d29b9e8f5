"""Every metadata key ``add`` and ``update`` store can be filtered on (a review that
ported a mem0 app): a key with a dot (``{"source.app": "slack"}``) was stored, and every
filter (Python, ``--where``, HTTP) read the dot as a path into nested objects and
silently found nothing; a key with a space was stored and its filter refused. Such a key
is now refused where it is written, by the filters' own rule, with the nested form to
use instead; that nested form is stored and found by the dotted filter. Real SQLite
files, the real ``contextos`` command and the real HTTP app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.store.base import check_metadata_key
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Message

NEST_IT = 'nest it instead ({"source": {"app": "slack"}})'
NO_FILTER = "cannot be named by a metadata filter"


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({"source.app": "slack"}, NEST_IT),
        ({"source": {"app.id": 7}}, 'nest it instead ({"source": {"app": {"id": 7}}})'),
        ({"service.name": {"v": 1}}, '({"service": {"name": ...}})'),
        ({"music genre": "jazz"}, f"key 'music genre' {NO_FILTER}"),
        ({"a": {"b c": 1}}, f"key 'a.b c' {NO_FILTER}"),
        ({"": 1}, f"key '' {NO_FILTER}"),
        ({"a..b": 1}, f"key 'a..b' {NO_FILTER}"),
        ({"$price": 1}, f"key '$price' {NO_FILTER}"),
        ({'say "hi"': 1}, NO_FILTER),
        ({"x" * 201: 1}, NO_FILTER),
        ({"k" * 100: {"k" * 100: 1}}, "dotted path at most 200 characters"),
        ({"a": {2: "b"}}, "keys must be strings, got 2 (in 'a')"),
    ],
    ids=[
        "dot",
        "nested-dot",
        "dot-object-value",
        "space",
        "nested-space",
        "empty",
        "empty-part",
        "dollar",
        "quotes",
        "long",
        "long-path",
        "int-key",
    ],
)
def test_a_key_no_filter_could_name_is_refused_by_add_and_update(
    mem: Memory, metadata: dict[Any, Any], says: str
) -> None:
    [kept] = mem.add("Ana likes tea.", user_id="ana", metadata={"team": "ops"})
    for call in (
        lambda: mem.add("Ana posted in slack.", user_id="ana", metadata=metadata),
        lambda: mem.add({"role": "user", "content": "x", "metadata": metadata}, user_id="ana"),
        lambda: mem.add("Ana posted.", user_id="ana", session_id="s", metadata=metadata),
        lambda: mem.add("Ana posted.", user_id="ana", metadata=metadata, infer=True),
        lambda: mem.update(kept.id, metadata=metadata),
    ):
        with pytest.raises(ValueError, match="key") as refused:
            call()
        assert says in str(refused.value)
    assert [r.text for r in mem.get_all(user_id="ana")] == ["Ana likes tea."]
    assert mem.get(kept.id).metadata == {"team": "ops", "role": "user"}


def test_the_nested_form_the_refusal_shows_is_stored_and_found_by_the_dotted_filter(
    mem: Memory,
) -> None:
    with pytest.raises(ValueError, match="nest it instead") as refused:
        mem.add("Ana asked for the build logs.", user_id="ana", metadata={"source.app": "slack"})
    shown = str(refused.value).split("nest it instead (")[1].split("), and filter on")[0]
    assert json.loads(shown) == {"source": {"app": "slack"}}
    [rec] = mem.add("Ana asked for the build logs.", user_id="ana", metadata=json.loads(shown))
    mem.add("Ana asked for tea.", user_id="ana", metadata={"source": {"app": "mail"}})
    by_app = Filter(metadata={"source.app": "slack"})
    assert [r.id for r in mem.get_all(user_id="ana", filters=by_app)] == [rec.id]
    assert [h.record.id for h in mem.search("build logs", user_id="ana", filters=by_app)] == [
        rec.id
    ]


@pytest.mark.parametrize(
    "metadata",
    [
        {"città": "Lisboa", "user-id": "a-1", "app_version": 3, "n2": True},
        {"source": {"app": "slack", "thread": {"ts": "1712.5"}}},
        {"tags": [{"any key.at all": 1}, "x.y"]},  # inside a list: no filter looks there
        {"k" * 99: {"k" * 100: 1}},  # a dotted path of 200 characters
    ],
    ids=["words", "nested", "in-a-list", "path-of-200"],
)
def test_keys_a_filter_can_name_are_stored_as_before(mem: Memory, metadata: dict[str, Any]) -> None:
    [rec] = mem.add("Ana likes tea.", user_id="ana", metadata=metadata)
    assert mem.get(rec.id).metadata == {**metadata, "role": "user"}
    [updated] = [mem.update(rec.id, metadata={**metadata, "more": 1})]
    assert updated.metadata["more"] == 1


@pytest.mark.parametrize(
    "key", ["a", "città", "user-id", "a b", "a.b", "", "$x", "x" * 201, "a\u202eb", "é\u0301"]
)
def test_add_stores_a_top_level_key_exactly_when_a_filter_takes_it(mem: Memory, key: str) -> None:
    """One rule on both sides (``store.base.is_metadata_key``): a dot-free key is stored
    if and only if a filter may name it."""
    try:
        check_metadata_key(key)
        filterable = "." not in key
    except ValueError:
        filterable = False
    try:
        [rec] = mem.add("Ana likes tea.", user_id="ana", metadata={key: "v"})
    except ValueError:
        assert not filterable
        return
    assert filterable
    found = mem.get_all(user_id="ana", filters=Filter(metadata={key: "v"}))
    assert [r.id for r in found] == [rec.id]


def test_the_librarys_own_keys_still_write_and_filter(mem: Memory) -> None:
    """The keys the library writes itself (``role``, ``seq``, ``speaker``, ``utc_offset``,
    ``turn_facts``, ``fact_of``) pass the same rule: a session turn with facts beside it
    and a zoned time is stored, read back and written back unchanged."""
    named = {"role": "user", "content": "I moved to Lisbon in May.", "name": "ana"}
    written = mem.add(
        named, user_id="ana", session_id="s1", event_time="2024-05-01T10:00:00+02:00", facts=True
    )
    turn = next(r for r in written if "fact_of" not in r.metadata)
    assert {"role", "seq", "speaker", "utc_offset"} <= set(turn.metadata)
    again = mem.update(turn.id, metadata=dict(turn.metadata))  # sent back as read
    assert again.metadata == turn.metadata
    facts = [r for r in mem.get_all(user_id="ana") if "fact_of" in r.metadata]
    for fact in facts:
        mem.update(fact.id, metadata=dict(fact.metadata))
    assert [r.id for r in mem.get_all(user_id="ana", filters=Filter(metadata={"seq": 0}))]


def test_an_offload_archives_turns_whose_own_metadata_has_a_dotted_key(tmp_path: Path) -> None:
    """A turn's metadata goes into its archived memory, which ``add`` now refuses for a
    key no filter could name: the offload keeps the turn's other keys and leaves that
    one in the log (an archive must never be refused for its metadata)."""
    said = "the build server disk filled up again on night {}. "
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        session = Session(m, "ops", user_id="ana")
        meta = {"source.app": "slack", "source": {"app": "slack"}, "odd": {"a b": 1}}
        for i in range(12):
            session.add(
                Message("user", said.format(i) * 5, metadata=meta),
                Message("assistant", f"answer {i}: clean /var/tmp and rotate the logs. " * 5),
            )
        done = session.compact(300, "offload", memory=m, force=True)
        assert done.archived > 0
        asked = [r for r in m.get_all(user_id="ana", limit=100) if r.metadata["role"] == "user"]
        assert asked
        assert all(r.metadata["source"] == {"app": "slack"} for r in asked)
        assert not any({"source.app", "odd"} & set(r.metadata) for r in asked)
        assert session.turn(0).message.metadata == meta  # the log keeps it whole


def test_the_cli_refuses_such_a_key_and_where_finds_the_nested_one(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    bad = run_cli(
        "add", "Ana asked for the logs", "-u", "ana", "--metadata", '{"source.app": "slack"}', db=db
    )
    assert bad.returncode != 0 and NEST_IT in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    nested = '{"source": {"app": "slack"}, "team": "ops"}'
    ok = run_cli("add", "Ana asked for the logs", "-u", "ana", "--metadata", nested, db=db)
    assert ok.returncode == 0, ok.stderr
    listed = run_cli("--json", "list", "-u", "ana", "--where", "source.app=slack", db=db)
    assert [r["text"] for r in json.loads(listed.stdout)] == ["Ana asked for the logs"]
    found = run_cli("--json", "search", "logs", "-u", "ana", "--where", "source.app=slack", db=db)
    hits = json.loads(found.stdout)
    assert [h.get("memory", h)["text"] for h in hits] == ["Ana asked for the logs"]


def test_http_answers_422_for_such_a_key_and_its_filter_finds_the_nested_one(
    tmp_path: Path,
) -> None:
    pytest.importorskip("fastapi")
    from server_support import app_client, auth, issue_key

    with app_client(tmp_path / "server.db") as c:
        h = auth(issue_key(c, "acme"))
        body = {"messages": "Ana wants a green tea", "user_id": "ana"}
        bad = c.post("/v1/memories", headers=h, json={**body, "metadata": {"source.app": "slack"}})
        assert bad.status_code == 422, bad.text
        assert NEST_IT in bad.json()["error"]["message"]
        spaced = c.post("/v1/memories", headers=h, json={**body, "metadata": {"cat name": "x"}})
        assert spaced.status_code == 422 and NO_FILTER in spaced.json()["error"]["message"]
        turn = {"role": "user", "content": "hi", "metadata": {"a": {"b.c": 1}}}
        own = c.post("/v1/memories", headers=h, json={"messages": [turn], "user_id": "ana"})
        assert own.status_code == 422 and "a.b.c" in own.json()["error"]["message"]
        added = c.post(
            "/v1/memories", headers=h, json={**body, "metadata": {"source": {"app": "slack"}}}
        )
        assert added.status_code == 201, added.text
        [mid] = [r["id"] for r in added.json()["results"]]
        patched = c.patch(f"/v1/memories/{mid}", headers=h, json={"metadata": {"x.y": 1}})
        assert patched.status_code == 422 and "x.y" in patched.json()["error"]["message"]
        search = {"query": "green tea", "user_id": "ana", "metadata": {"source.app": "slack"}}
        hits = c.post("/v1/memories/search", headers=h, json=search).json()["results"]
        assert [x["memory"]["id"] for x in hits] == [mid]
        assert c.get(f"/v1/memories/{mid}", headers=h).json()["metadata"]["source"] == {
            "app": "slack"
        }


def test_a_session_turn_over_http_keeps_a_dotted_key(tmp_path: Path) -> None:
    """The key rule is for memories, which filters read: a turn logged over HTTP with
    ``{"gen_ai.request.model": ...}`` was refused 422 while ``Session.add`` logged it."""
    pytest.importorskip("fastapi")
    from server_support import app_client, auth, issue_key

    with app_client(tmp_path / "turns.db") as c:
        h = auth(issue_key(c, "acme"))
        turn = {"role": "user", "content": "hi", "metadata": {"gen_ai.request.model": "m1"}}
        logged = c.post("/v1/sessions/s1/turns", headers=h, json={"messages": [turn]})
        assert logged.status_code == 201, logged.text
        turns = c.get("/v1/sessions/s1/turns", headers=h).json()["results"]
        assert turns[-1]["metadata"]["gen_ai.request.model"] == "m1"


def test_an_old_memory_with_a_dotted_key_can_still_be_updated(mem: Memory) -> None:
    """A memory stored before keys were checked keeps its keys: its metadata sent back as
    read with one key added is written (the agent's owner tag on an old archival passage
    was refused, and that agent's every archival search failed); a new dotted key is
    still refused."""
    import uuid
    from datetime import UTC, datetime

    from contextos.types import MemoryRecord, Scope, content_hash

    now, text = datetime.now(UTC), "an old passage"
    old = MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=Scope(tenant=mem.tenant, user_id="ana"),
        metadata={"source.app": "slack", "role": "user"},
        created_at=now,
        updated_at=now,
        valid_from=now,
        hash=content_hash(text),
    )
    mem.store.put([old])
    read = mem.get(old.id)
    updated = mem.update(old.id, metadata={**read.metadata, "owner": "bot"})
    assert updated.metadata["source.app"] == "slack" and updated.metadata["owner"] == "bot"
    with pytest.raises(ValueError, match=r"x\.y"):
        mem.update(old.id, metadata={**updated.metadata, "x.y": 1})
