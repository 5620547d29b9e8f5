"""What a Filter may ask, and one answer on every store.

- ``memory_types="episodic"`` was read letter by letter (``('e', 'p', ...)``) and an
  unknown type was passed on: both matched nothing, silently. Refused now.
- Metadata filters: SQLite compared ``json_extract(...) = ?`` (``True`` is 1, so it
  matched ``1`` and ``1.0``, and ``1`` matched ``true``; None matched nothing) while
  PostgreSQL's ``@>`` matched JSON types exactly (and None an explicit null). One rule
  now (``types.check_metadata_filter_value``): a str matches only a JSON string, a
  bool only a JSON boolean, a number any equal JSON number; None and other values are
  refused. Both backends, get_all and search.
- A dotted filter key (``a.b``) found only the nested path, never a key stored with the
  dot (``{"a.b": 2}``, as mem0 apps store them); it names both now.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter

ROWS: dict[str, dict[str, Any]] = {
    "true": {"flag": True},
    "false": {"flag": False},
    "one": {"flag": 1},
    "one_float": {"flag": 1.0},
    "zero": {"flag": 0},
    "string_one": {"flag": "1"},
    "null": {"flag": None},
    "missing": {},
    "list": {"flag": [1]},
    "object": {"flag": {"a": 1}},
    "nested": {"a": {"b": 2}},
    "dotted_key": {"a.b": 2},
    "both": {"a": {"b": 5}, "a.b": 6},
}

EXPECTED: list[tuple[dict[str, Any], set[str]]] = [
    ({"flag": True}, {"true"}),
    ({"flag": False}, {"false"}),
    ({"flag": 1}, {"one", "one_float"}),
    ({"flag": 1.0}, {"one", "one_float"}),
    ({"flag": 0}, {"zero"}),
    ({"flag": "1"}, {"string_one"}),
    ({"flag": "[1]"}, set()),  # a string never equals an array's text
    ({"flag": '{"a": 1}'}, set()),
    # a dotted key names the nested path and the key stored with its dot (mem0 apps
    # store ``{"source.app": ...}``; the path alone never found those)
    ({"a.b": 2}, {"nested", "dotted_key"}),
    ({"a.b": 5}, {"both"}),
    ({"a.b": 6}, {"both"}),
]


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    for name, meta in ROWS.items():
        memory.add(f"note {name} about apples", user_id="u", metadata=meta)
    yield memory  # the store fixture closes the store


def names(memory: Memory, records: list[Any]) -> set[str]:
    return {r.text.split()[1] for r in records}


@pytest.mark.parametrize(("wanted", "found"), EXPECTED, ids=[str(w) for w, _ in EXPECTED])
def test_a_metadata_filter_matches_json_types_alike_on_every_store(
    memory: Memory, wanted: dict[str, Any], found: set[str]
) -> None:
    flt = Filter(metadata=wanted)
    assert names(memory, memory.get_all(user_id="u", filters=flt)) == found
    hits = memory.search("note about apples", user_id="u", filters=flt, limit=50)
    assert names(memory, [h.record for h in hits]) == found


@pytest.mark.parametrize(
    "value", [None, [1], {"a": 1}, b"1", 2**70, float("nan"), float("inf")], ids=repr
)
def test_a_metadata_filter_value_no_store_compares_alike_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="metadata filter 'flag'"):
        Filter(metadata={"flag": value})


def test_a_metadata_filter_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        Filter(metadata=[("flag", 1)])  # type: ignore[arg-type]


def test_memory_types_must_be_known_types_not_a_string(memory: Memory) -> None:
    with pytest.raises(ValueError, match="not the string 'episodic'"):
        Filter(memory_types="episodic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown memory type 'bogus'"):
        Filter(memory_types=("bogus",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not 'episodic'"):
        memory.search("apples", user_id="u", memory_types="episodic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown memory type 'nope'"):
        memory.search("apples", user_id="u", memory_types=["nope"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not the string"):
        memory.get_all(user_id="u", filters=Filter(memory_types="semantic"))  # type: ignore[arg-type]
    # A list is a sequence of types like a tuple (kept as one).
    listed = Filter(memory_types=["episodic"])  # type: ignore[arg-type]
    assert listed.memory_types == ("episodic",)
    assert len(memory.get_all(user_id="u", filters=listed, limit=100)) == len(ROWS)
    assert memory.search("apples", user_id="u", memory_types=["semantic"]) == []


def test_a_large_float_reads_back_as_the_float_written_on_every_store(store: Store) -> None:
    """PostgreSQL's jsonb gave ``1e300`` back as a 301-digit int: a search filtered on
    the value written missed it, and the record as read could not be written again."""
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    added = memory.add("a very dear painting", user_id="u", metadata={"price": 1e300, "n": 7})
    [record] = memory.get_all(user_id="u")
    assert {k: record.metadata[k] for k in ("price", "n")} == {"price": 1e300, "n": 7}
    assert type(record.metadata["price"]) is float and type(record.metadata["n"]) is int
    flt = Filter(metadata={"price": 1e300})
    hits = memory.search("dear painting", user_id="u", filters=flt)
    assert [h.record.id for h in hits] == [added[0].id]
    memory.update(record.id, metadata=record.metadata)  # as read, written again


def test_a_turns_wide_integer_reads_back_exactly_on_every_store(store: Store) -> None:
    """Only a memory's metadata reads wide numbers as floats (it holds no integer past
    64 bits): a turn's metadata and a session's state keep a uint64 exactly."""
    from contextos.types import Message, Scope

    big = 18446744073709551615
    scope = Scope(tenant="default", user_id="u", session_id="s1")
    store.append_turns(scope, [Message("user", "order placed", metadata={"hash": big})], [5])
    store.set_session_meta(scope, {"cursor": big})
    assert store.turns(scope)[0].message.metadata["hash"] == big
    assert store.session_meta(scope)["cursor"] == big
