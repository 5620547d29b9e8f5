"""What one ``Memory.update`` computes: the embedded text of each version of the record
once. Each computation runs the offline extractor over the turn (``memory.expansion``),
and ``update`` and the store's transaction each used to compute both versions."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.memory.render import embedding_text
from contextos.testing.embedders import HashEmbedder


@contextmanager
def calls_of(function: Callable[..., Any]) -> Iterator[list[str]]:
    """The calls of ``function`` in this thread inside the block (each the text of its
    first argument), seen through the profiler hook: nothing is replaced."""
    seen: list[str] = []

    def hook(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is function.__code__:
            seen.append(frame.f_locals["record"].text)

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"speaker": "Melanie", "caption": "a blue sailboat"}},  # new facts
        {"metadata": {"speaker": "Caroline", "caption": "a red bicycle", "tag": "x"}},  # same
        {"text": "I adopted a cat yesterday"},
    ],
)
def test_an_update_computes_the_embedded_text_of_each_version_once(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    # The vectors are made on the embedding worker's thread, which is not watched.
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), turn_facts=True) as memory:
        [turn] = memory.add(
            {"role": "user", "name": "Caroline", "content": "I adopted a dog last week"},
            user_id="u",
            session_id="s",
            metadata={"caption": "a red bicycle"},
        )
        with calls_of(embedding_text) as calls:
            updated = memory.update(turn.id, **change)
        assert calls == [turn.text, updated.text]  # before, after; not again in the store
