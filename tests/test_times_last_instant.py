"""The last instant a time may take, 9999-12-31T23:59:59.999999 UTC, survives a store.

The SQLite store keeps times as float epoch seconds and reads them back through
``times.from_epoch``, which clamps to years 1-9999. It clamped to 23:59:59, so the last
instant came back a 999,999 us early, and a ``time_range`` starting at it left the
memory out. (A float of that size holds about 30 us; 23:59:59.999999 rounds up to the
first instant of year 10000, which is why reading it back needs the clamp at all. The
precision itself is a property of the stored format, documented in docs/api.md.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.times import MAX_EPOCH, MAX_TIME, from_epoch, to_epoch
from pg_support import memory_on

BOTH = pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@contextmanager
def open_memory(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[Memory]:
    kwargs.update(embedder=HashEmbedder(), background_embedding=False)
    with memory_on(kind, tmp_path, **kwargs) as m:
        yield m


def test_the_last_instant_reads_back_from_epoch_seconds() -> None:
    assert MAX_TIME == LAST
    assert from_epoch(to_epoch(LAST)) == LAST
    assert from_epoch(MAX_EPOCH) == LAST
    whole = datetime(9999, 12, 31, 23, 59, 58, tzinfo=UTC)  # a float holds it exactly
    assert from_epoch(to_epoch(whole)) == whole


@BOTH
def test_a_memory_dated_at_the_last_instant_keeps_it_and_is_found_from_it(
    kind: str, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path) as m:
        [rec] = m.add("the end of the calendar", user_id="ana", event_time=LAST)
        assert m.get(rec.id).event_time == LAST
        hits = m.search("calendar", user_id="ana", time_range=(LAST, None))
        assert [h.record.id for h in hits] == [rec.id]
        assert m.search("calendar", user_id="ana", time_range=(None, LAST)) == []
