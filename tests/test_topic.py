"""The topic memory block: refreshed when due or on measured drift, never duplicated."""

from __future__ import annotations

import pytest

from contextos.engine.topic import TopicBlock
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord

DOGS = [
    "Ana walks her dog Rex in the park every morning",
    "Rex the dog chased a ball in the park",
    "Ana bought a new leash for her dog Rex",
]
GUITAR = [
    "Bo plays guitar in a jazz band on Fridays",
    "Bo bought a new guitar amplifier for the band",
    "The jazz band played guitar songs at the bar",
]


def hits(texts: list[str], prefix: str) -> list[Hit]:
    return [Hit(MemoryRecord(f"{prefix}{i}", t), score=1.0 / (i + 1)) for i, t in enumerate(texts)]


def test_first_update_fills_the_block_then_it_stays_on_topic():
    block = TopicBlock(HashEmbedder(256), margin=0.1)
    dogs = hits(DOGS, "d")
    got, delta, refreshed = block.update("Tell me about Rex the dog in the park", dogs[:2])
    assert refreshed and [h.record.id for h in got] == ["d0", "d1"] and delta == []
    # Same topic: the block stays (the cached prefix is not rewritten); the new
    # memory that fits goes to the delta, the block's own memories never do.
    got, delta, refreshed = block.update("Does Rex the dog like the park?", dogs)
    assert not refreshed
    assert [h.record.id for h in got] == ["d0", "d1"]
    assert {h.record.id for h in delta} <= {"d2"}
    assert not {h.record.id for h in delta} & {h.record.id for h in got}


def test_drift_refreshes_the_block_and_what_if_leaves_it_alone():
    block = TopicBlock(HashEmbedder(256), margin=0.1)
    block.update("Rex the dog in the park", hits(DOGS, "d"))
    guitar = hits(GUITAR, "g")
    assert block.drift("Bo guitar jazz band", guitar) > 0.1
    got, _, refreshed = block.update("Bo guitar jazz band", guitar, commit=False)
    assert refreshed and [h.record.id for h in got] == ["g0", "g1", "g2"]
    assert [h.record.id for h in block.hits] == ["d0", "d1", "d2"]  # not committed
    got, _, refreshed = block.update("Bo guitar jazz band", guitar)
    assert refreshed and [h.record.id for h in block.hits] == ["g0", "g1", "g2"]


def test_hysteresis_and_due():
    block = TopicBlock(HashEmbedder(256), margin=5.0)  # cosine gains never pass 5
    block.update("Rex the dog in the park", hits(DOGS, "d"))
    _, _, refreshed = block.update("Bo guitar jazz band", hits(GUITAR, "g"))
    assert not refreshed and block.hits[0].record.id == "d0"
    block.due = True  # e.g. after a compaction: the prefix changes anyway
    _, _, refreshed = block.update("Bo guitar jazz band", hits(GUITAR, "g"))
    assert refreshed and block.hits[0].record.id == "g0" and not block.due


def test_bad_arguments():
    with pytest.raises(ValueError):
        TopicBlock(HashEmbedder(), margin=-1)
    with pytest.raises(ValueError):
        TopicBlock(HashEmbedder(), top_k=0)
    block = TopicBlock(HashEmbedder())
    assert block.update("anything", []) == ([], [], False)


def test_the_delta_tops_the_block_up_to_the_fresh_best_and_no_further():
    block = TopicBlock(HashEmbedder(256), margin=5.0, delta_top=2)  # never drifts
    dogs = hits(DOGS, "d")
    block.update("Rex the dog in the park", dogs[:2])
    # The block holds the fresh top 2: nothing to add, whatever else was found.
    _, delta, _ = block.update("Rex the dog in the park", dogs[:2] + hits(GUITAR, "g"))
    assert delta == []
    # Off the block's topic: the delta carries the fresh top 2, never more.
    _, delta, refreshed = block.update("Bo guitar jazz band", hits(GUITAR, "g"))
    assert not refreshed and [h.record.id for h in delta] == ["g0", "g1"]
    # Between the two: only what the block lacks of the fresh top 2.
    mixed = [dogs[0], hits(GUITAR, "g")[0], dogs[1]]
    _, delta, _ = block.update("Rex the dog and Bo's guitar", mixed)
    assert [h.record.id for h in delta] == ["g0"]


def test_drift_within_the_margin_never_refreshes_a_due_block_always_does():
    block = TopicBlock(HashEmbedder(256), margin=0.1)
    block.update("Rex the dog in the park", hits(DOGS, "d"))
    guitar = hits(GUITAR, "g")
    drift = block.drift("Bo guitar jazz band", guitar)
    assert drift > 0.1
    # Hysteresis: a margin just above the measured drift keeps the block.
    block.margin = drift + 1e-6
    assert block.update("Bo guitar jazz band", guitar)[2] is False
    block.margin = drift - 1e-6
    assert block.update("Bo guitar jazz band", guitar, commit=False)[2] is True


def test_negative_delta_top_is_refused():
    with pytest.raises(ValueError):
        TopicBlock(HashEmbedder(), delta_top=-1)
