"""Budgets and compaction strategies that are no such thing are refused when given.

``wrap(budget=0)`` (or -100, True, 3) was taken, and every call was refused as if "the
instructions and tools alone do not fit" with none given; ``budget=float("nan")``
failed at the call with "cannot convert float NaN to integer", ``"2000"`` with a bare
``TypeError`` from a comparison; ``compaction="none"`` was taken, and every call failed
("unknown strategy 'none'") after its new turns were logged (a review). Now ``wrap()``
refuses them, naming the budget or the strategy, before anything is sent or logged;
``Session.window`` refuses such a budget when asked.

Real ``anthropic.Anthropic`` clients against the loopback :class:`FakeAnthropic`, a real
Memory and Session on SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.session import MIN_BUDGET, Session  # noqa: E402
from contextos.errors import BudgetError  # noqa: E402
from contextos.llm.models import get_model  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4-6"
NOT_NUMBERS: list[Any] = [True, float("nan"), float("inf"), "2000", [2000]]
TOO_SMALL = [0, -100, 1, 3, MIN_BUDGET - 1]


@pytest.fixture
def memory(tmp_path: Path) -> Any:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as mem:
        yield mem


@pytest.fixture
def client() -> Any:
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        sdk.fake = fake
        yield sdk


@pytest.mark.parametrize("budget", NOT_NUMBERS, ids=repr)
def test_wrap_refuses_a_budget_that_is_no_number(memory: Memory, client: Any, budget: Any) -> None:
    with pytest.raises(TypeError, match="token budget must be a number of tokens"):
        wrap(client, memory, "s", user_id="ana", budget=budget)
    assert Session(memory, "s", user_id="ana").turns() == []


@pytest.mark.parametrize(
    ("budget", "held"), [(2000.0, 2000), (128_000 * 0.75, 96_000), (1500.7, 1500)]
)
def test_a_float_budget_is_its_whole_tokens(
    memory: Memory, client: Any, budget: float, held: int
) -> None:
    """``budget=128_000 * 0.75`` worked before the checks; apps pass such budgets."""
    assert wrap(client, memory, "s", user_id="ana", budget=budget).context.budget == held


@pytest.mark.parametrize("budget", TOO_SMALL)
def test_wrap_refuses_a_budget_too_small_for_any_request(
    memory: Memory, client: Any, budget: int
) -> None:
    with pytest.raises(BudgetError, match=f"token budget of {budget} holds no request") as err:
        wrap(client, memory, "s", user_id="ana", budget=budget)
    assert (err.value.requested, err.value.available) == (MIN_BUDGET, budget)
    assert "instructions" not in str(err.value)


def test_the_smallest_budget_sends_a_one_token_question(memory: Memory, client: Any) -> None:
    wrapped = wrap(client, memory, "s", user_id="ana", budget=MIN_BUDGET, background_commit=False)
    wrapped.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    sent = client.fake.messages_requests()[-1].json()
    assert sent["messages"][-1]["content"][-1]["text"] == "hi"


def test_wrap_refuses_an_unknown_compaction_before_anything_is_logged(
    memory: Memory, client: Any
) -> None:
    with pytest.raises(ValueError, match="compaction must be one of .* not 'none'"):
        wrap(client, memory, "s", user_id="ana", compaction="none")  # type: ignore[typeddict-item]
    for strategy in ("summarize", "truncate", "clear_tool_results", "offload", None):
        wrap(client, memory, "s", user_id="ana", compaction=strategy)
    assert client.fake.messages_requests() == []
    assert Session(memory, "s", user_id="ana").turns() == []


@pytest.mark.parametrize("budget", [0, -5, float("nan"), 7.5, True])
def test_session_window_refuses_a_budget_that_is_none(memory: Memory, budget: Any) -> None:
    session = Session(memory, "s", user_id="ana")
    error = BudgetError if budget in (0, -5, 7.5) and not isinstance(budget, bool) else TypeError
    with pytest.raises(error, match="token budget"):
        session.window(get_model("gpt-4o"), "hi there", budget=budget)
    assert session.window(get_model("gpt-4o"), "hi there", budget=MIN_BUDGET).budget == MIN_BUDGET
