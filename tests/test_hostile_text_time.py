"""A long run of one character costs time in proportion to its length, not its square.

The offline extractor runs on every add of a session turn (its facts are embedded with
the turn) and on ``add(infer=True)``. Three of its patterns were tried at each
character of a run of white space: a turn of 90,000 spaces, which any client of the
server may send, held a thread for minutes (a review, session 34).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

FILLS = [" ", "\n", "\t", "\u3000", ". ", "Mel, ", "[shares a photo: ", "in June "]


@pytest.mark.serial  # a time bound
@pytest.mark.parametrize("fill", FILLS)
def test_a_turn_of_one_repeated_piece_is_added_in_linear_time(tmp_path: Path, fill: str) -> None:
    text = "Ana: hello" + fill * (99_000 // len(fill)) + "world"
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        start = time.thread_time()
        m.add(text, user_id="u", session_id="s")
        m.add(text, user_id="u", infer=True)
        took = time.thread_time() - start
    assert took < 8, f"{took:.1f} s of CPU for {fill!r}"
