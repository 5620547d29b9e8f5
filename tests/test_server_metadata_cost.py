"""A client's metadata is checked at C speed (``server/json_checks.py``), refusing
exactly what the walks refused, in their words.

Why: request bodies are validated on the server's one event loop, and the metadata
checks were Python walks (~2 us a value, four of them). A 900 KB body holding a list of
300,000 zeros took 0.64 s to refuse, and 40 such bodies from one valid key held every
tenant's requests for 10-25 s (session 55's review of hostile clients,
``/work/notes/s55/review/http.md``, finding 1). The equivalence is checked against the
walks themselves: the strict-JSON walk (``schemas._check_json``) and the library's
``check_metadata``, which Python callers still run.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contextos.memory.ingest import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, check_metadata
from contextos.server import schemas
from contextos.server.json_checks import check_json_metadata


def _walked(value: dict[str, Any]) -> str | None:
    """What the walks said of ``value``: None when they took it."""
    try:
        schemas._check_json(value)  # noqa: SLF001 - the rule this module must equal
        check_metadata(value)
    except ValueError as exc:
        return str(exc)
    return None


def _fast(value: dict[str, Any]) -> str | None:
    try:
        check_json_metadata(value)
    except ValueError as exc:
        return str(exc)
    return None


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"a": 1, "b": [1.5, -2, True, None, "x"], "c": {"d": "é🙂"}},
        {"big": 2**63 - 1, "small": -(2**63)},
        {"big": 2**63},
        {"small": -(2**63) - 1},
        {"float": 1.2345678901234567e300, "digits": 12345678901234567890.5},
        {"text": "a 12345678901234567890 in a text is no number"},
        {"nan": math.nan},
        {"inf": [math.inf]},
        {"nul": "a\x00b"},
        {"k\x00": 1},
        {"backslash-u": "\\u0000 is six characters, no NUL"},
        {"surrogate": "\ud800"},
        {"\udfff": "key"},
        _nested(MAX_METADATA_DEPTH),
        _nested(MAX_METADATA_DEPTH + 1),
        _nested(5_000),
        {"brackets": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{"},
        {"a": "x" * (MAX_METADATA_BYTES - 8)},
        {"a": "x" * (MAX_METADATA_BYTES - 7)},
        {"a": [0] * 300_000},
    ],
)
def test_the_same_refusals_in_the_same_words(value: dict[str, Any]) -> None:
    assert _fast(value) == _walked(value)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.sampled_from(["a", "\\", '"', "\x00", "\ud800", "é", "[", "{", "7"]))
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _json, max_size=5))
def test_any_value_is_refused_or_taken_as_the_walks_would(value: dict[str, Any]) -> None:
    fast, walked = _fast(value), _walked(value)
    assert (fast is None) == (walked is None), (fast, walked)


@contextmanager
def cpu_seconds() -> Iterator[list[float]]:
    """This thread's CPU seconds in the block, Python's cyclic collector paused: what the
    checks cost, not a full collection of the test process's heap, which a suite worker
    that ran hundreds of tests before pays for the 60,000 objects a body makes (0.6 s
    of such a collection failed a fresh clone's run)."""
    spent: list[float] = []
    was_on = gc.isenabled()
    gc.disable()
    start = time.thread_time()
    try:
        yield spent
    finally:
        spent.append(time.thread_time() - start)
        if was_on:
            gc.enable()


def _cpu_seconds(body: dict[str, Any]) -> float:
    parsed = json.loads(json.dumps(body))
    with cpu_seconds() as spent, pytest.raises(ValidationError):
        schemas.AddRequest.model_validate(parsed)
    return spent[0]


def test_a_costly_body_is_refused_in_milliseconds() -> None:
    """The review's bodies, each under the 1 MB limit: metadata of 300,000 values and of
    60,000 keys took 0.64 s and 0.20 s of the event loop; now well under 0.2 s."""
    long_list = {"messages": "x", "user_id": "u", "metadata": {"a": [0] * 300_000}}
    many_keys = {"messages": "x", "user_id": "u", "metadata": {f"k{i}": 0 for i in range(60_000)}}
    assert _cpu_seconds(long_list) < 0.2
    assert _cpu_seconds(many_keys) < 0.2


def test_many_messages_with_metadata_at_the_limit_cost_milliseconds() -> None:
    """Each message's metadata under the limit, the body under 1 MB: every value was
    walked four times (~0.1 s a message); now a JSON dump and a few scans each."""
    meta = {"a": [0] * 30_000}  # ~60 KB as JSON
    body = {"messages": [{"content": "x", "metadata": meta} for _ in range(15)], "user_id": "u"}
    parsed = json.loads(json.dumps(body))
    with cpu_seconds() as spent:
        schemas.AddRequest.model_validate(parsed)
    assert spent[0] < 0.4


def _library_walks(value: Any) -> int | str:
    """What ``ingest.check_metadata`` answered by its walks alone: the size, or the
    message of its refusal."""
    from contextos.engine.message_text import check_unicode
    from contextos.memory.ingest import (
        check_metadata_size,
        metadata_bytes,
        metadata_depth,
        wide_int,
    )

    try:
        if metadata_depth(value) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata may nest at most {MAX_METADATA_DEPTH} levels deep")
        if (wide := wide_int(value)) is not None:
            raise ValueError(f"metadata integers must fit in 64 bits (got {wide})")
        check_unicode(value, "metadata")
        return check_metadata_size(metadata_bytes(value), "metadata", value)
    except ValueError as exc:
        return str(exc)


def _library(value: Any) -> int | str:
    try:
        return check_metadata(value)
    except ValueError as exc:
        return str(exc)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"a": 1, "b": [1.5, -2, True, None, "x"], "c": {"d": "é🙂"}},
        {"big": 2**63 - 1, "small": -(2**63)},
        {"big": 2**63},
        {"nan": math.nan},  # the library keeps a NaN (the server refuses it)
        {"nul": "a\x00b"},  # and a NUL
        {"surrogate": "\ud800"},
        {1: "an int key", 2.5: "a float key"},
        {"t": (1, [2, (3,)])},
        {"s": {1, 2}},
        _nested(MAX_METADATA_DEPTH),
        _nested(MAX_METADATA_DEPTH + 1),
        {"a": "x" * (MAX_METADATA_BYTES - 7)},
        {"a": [0] * 30_000},
    ],
)
def test_the_library_check_answers_as_its_walks(value: dict[str, Any]) -> None:
    """``Memory.add``'s metadata check reads plain JSON at C speed and walks the rest:
    the same size or the same refusal as the walks alone."""
    assert _library(value) == _library_walks(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _json, max_size=5))
def test_any_value_gets_the_library_answer_of_its_walks(value: dict[str, Any]) -> None:
    assert _library(value) == _library_walks(value)


def test_many_messages_with_metadata_cost_the_write_threads_milliseconds() -> None:
    """The library's own check, which an add runs on the server's write threads after
    the body's: 15 messages with 60 KB of metadata each walked ~0.1 s a message, holding
    the GIL from every tenant's requests (a review of the server on PostgreSQL)."""
    meta = {"a": [0] * 30_000}
    with cpu_seconds() as spent:
        for _ in range(15):
            check_metadata(meta)
    assert spent[0] < 0.3
