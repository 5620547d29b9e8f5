"""How long the assistant's answers should be is one rule at a time (session 46).

"Please keep your answers short" and, later, "Please answer in detail from now on" were
both kept current (no claim was read from either), and every window pinned both: the
model was told to answer briefly and at length."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from contextos import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.text.claims import claim


@contextmanager
def _memory(tmp_path: Path) -> Iterator[Memory]:
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder())
    try:
        yield m
    finally:
        m.close()


@pytest.mark.parametrize(
    ("first", "later"),
    [
        ("Please keep your answers short.", "Please answer in detail from now on."),
        ("Be brief.", "Actually, please explain things in more detail from now on."),
        ("I prefer short answers.", "From now on, reply at length."),
        ("Always answer in detail.", "Keep it short from now on."),
        ("Please give me detailed answers.", "Please reply briefly from now on."),
    ],
)
def test_a_later_answer_length_replaces_the_earlier(tmp_path: Path, first: str, later: str) -> None:
    with _memory(tmp_path) as m:
        m.add(first, user_id="u", infer=True)
        [new] = m.add(later, user_id="u", infer=True)
        assert [r.text for r in m.get_all(user_id="u")] == [new.text]


def test_an_answer_length_leaves_the_language_rule(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        m.add("Always answer in English.", user_id="u", infer=True)
        m.add("Please keep your answers brief.", user_id="u", infer=True)
        assert len(m.get_all(user_id="u")) == 2


@pytest.mark.parametrize(
    ("text", "value", "negated"),
    [
        ("Ann: Please keep your answers short.", "short", False),
        ("Ann: Be concise.", "concise", False),
        ("Ann: Answer me in more detail.", "in more detail", False),
        ("Ann wants you to reply briefly.", "briefly", False),
        ("Ann: Don't give me short answers.", "short", True),
        ("Please give Ann detailed answers.", "detailed", False),
        # Not asked of the assistant: the speaker's own answers, a length of something else.
        ("Ann keeps her answers short.", None, None),
        ("Ann always answers briefly when Ann's boss asks.", None, None),
        ("The meeting will be long.", None, None),
        ("Please give Bob detailed answers.", None, None),
    ],
)
def test_the_answer_length_is_read_only_where_it_is_asked_for(
    text: str, value: str | None, negated: bool | None
) -> None:
    held = claim(text, "Ann")
    if value is None:
        assert held is None or held.slot != "prefers:answer"
    else:
        assert held is not None
        assert (held.slot, held.value, held.negated) == ("prefers:answer", value, negated)


@pytest.mark.parametrize(
    "task",
    [
        "You should be thorough with the tax forms this year.",
        "Be brief with the landlord tomorrow, he hates small talk.",
        "I want you to be thorough when you check my code.",
        "The essay is too long. Make it shorter before Friday.",
        "Please make them shorter, the curtains I mean.",
        "Please reply briefly to John's email.",
    ],
)
def test_a_task_of_the_day_leaves_the_answer_length_rule(tmp_path: Path, task: str) -> None:
    """Read as the answer length, each of these replaced "Please keep your answers short"
    (a review): no window pinned the user's rule any more."""
    with _memory(tmp_path) as m:
        [rule] = m.add("Please keep your answers short.", user_id="u", infer=True)
        m.add(task, user_id="u", infer=True)
        assert rule.text in [r.text for r in m.get_all(user_id="u")]


def test_a_run_of_openers_is_read_in_linear_time() -> None:
    """A match may start at every comma; 50 KB of ", please, " read each run whole from
    every start: 51 s (20 KB: 8 s) before the openers were bounded."""
    import time

    started = time.perf_counter()
    claim(", please, " * 5_000, "Ann")
    assert time.perf_counter() - started < 2.0
