"""Bad arguments of the Python API are refused up front, naming the argument, on every store.

- ``Memory.update(text=...)``, ``get``, ``delete``, ``delete_many`` and ``history`` with a
  lone surrogate raised the store codec's UnicodeEncodeError, naming no argument, where
  ``add`` answers a ValueError naming what is wrong (a review).
- ``Filter(metadata={"a..b": 1})`` (white space, a control or format character, a lone
  surrogate in the key) was refused only when a store built its SQL: a search with no
  keyword hit and no vector answered ``[]`` with no error, so the same call was refused
  or answered depending on the data (a review). It is refused where the filter is made.

Real SQLite files, and PostgreSQL when ``scripts/postgres.sh`` started one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter

SURROGATE = "tea \ud800"


@pytest.fixture
def mem(store: Store) -> Iterator[Memory]:
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


def test_a_lone_surrogate_in_update_text_is_a_value_error_naming_text(mem: Memory) -> None:
    [rec] = mem.add("I like tea", user_id="ana")
    with pytest.raises(ValueError, match=r"^text is not valid Unicode text") as caught:
        mem.update(rec.id, text=SURROGATE)
    assert not isinstance(caught.value, UnicodeError)
    assert mem.get(rec.id).text == "I like tea"  # nothing was written
    assert len(mem.history(rec.id)) == 1


@pytest.mark.parametrize("call", ["get", "delete", "history", "update", "delete_many"])
def test_a_lone_surrogate_in_an_id_is_a_value_error_naming_memory_id(
    mem: Memory, call: str
) -> None:
    [rec] = mem.add("I like tea", user_id="ana")
    bad = "id\ud800"
    calls = {
        "get": lambda: mem.get(bad),
        "delete": lambda: mem.delete(bad),
        "history": lambda: mem.history(bad),
        "update": lambda: mem.update(bad, text="coffee"),
        "delete_many": lambda: mem.delete_many([rec.id, bad]),
    }
    with pytest.raises(ValueError, match=r"^memory_id is not valid Unicode text") as caught:
        calls[call]()
    assert not isinstance(caught.value, UnicodeError)
    assert mem.get(rec.id).text == "I like tea"  # delete_many checked every id first
    with pytest.raises(NotFound):  # a well-formed unknown id is still "no such memory"
        mem.get("id\u00e9")


BAD_KEYS = ["a..b", ".a", "k w", "k\x00", "k\u202e", "k\ud800", "a[0]", ""]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_bad_filter_key_is_refused_when_the_filter_is_made(key: str) -> None:
    with pytest.raises(ValueError, match="metadata filter keys must be dotted identifiers"):
        Filter(metadata={key: 1})


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_bad_filter_key_is_refused_on_a_search_that_finds_nothing(mem: Memory, key: str) -> None:
    for call in (
        lambda: mem.search("zzz nothing", user_id="u", filters=Filter(metadata={key: 1})),
        lambda: mem.get_all(user_id="u", filters=Filter(metadata={key: 1})),
    ):
        with pytest.raises(ValueError, match="metadata filter keys must be dotted identifiers"):
            call()


def test_good_filter_keys_still_match(mem: Memory) -> None:
    mem.add("nested", user_id="u", metadata={"a": {"b": 1}})
    mem.add("literal", user_id="u", metadata={"a.b": 1})
    mem.add("script", user_id="u", metadata={"città": "Roma", "user-id": "x"})
    dotted = mem.get_all(user_id="u", filters=Filter(metadata={"a.b": 1}))
    assert sorted(r.text for r in dotted) == ["literal", "nested"]
    other = mem.get_all(user_id="u", filters=Filter(metadata={"città": "Roma", "user-id": "x"}))
    assert [r.text for r in other] == ["script"]
