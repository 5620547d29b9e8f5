"""``wrap(..., memory_tools=True)`` with an app that marks its own system prompt for caching.

The tool loop adds the core-memory snapshot as one more system block after the app's.
Unmarked after the app's marked block, the wrapper read it as a block that changes per
call (a timestamp) and placed no breakpoint after it: no request of the session cached
its history, and the share of input read from the cache fell from 0.94 to 0.66 in a
30-turn session (a review). The snapshot is byte-stable between compaction points, so
it now counts as part of the app's stable prefix: the history stays cached as with a
plain ``system`` string. The real ``anthropic`` SDK against the loopback fake (which
prices each request's ``cache_control`` as the API does), a real SQLite memory file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest

from agent_scripts import close_sdk_clients, opened  # noqa: F401 - autouse: closes the clients
from contextos import Memory, wrap
from contextos.agent.bench import SYSTEM
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from test_agent_wrap import scripted_agent

EPHEMERAL = {"type": "ephemeral"}
TURNS = 16
EDITS = {3, 9}  # each edit turn makes two model calls
NOTE = "Answer in the user's language."  # a second static block of the app


def _marked(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "cache_control": EPHEMERAL}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _marks(body: dict[str, Any]) -> list[str]:
    """Where each marker of a request went: "system" or "messages"."""
    out = ["system" for b in body.get("system") or [] if "cache_control" in b]
    for message in body["messages"]:
        content = message["content"]
        blocks = content if isinstance(content, list) else []
        out += ["messages" for b in blocks if "cache_control" in b]
    return out


def _session(
    tmp_path: Path, name: str, system: Any, *, padding: str = ""
) -> tuple[float, list[dict[str, Any]]]:
    """A scripted ``memory_tools`` session: (share of input read from the cache, bodies);
    ``system`` given as is, or called with the turn's number; ``padding`` ends each question."""
    with (
        Memory(tmp_path / f"{name}.db", embedder=HashEmbedder(), background_embedding=False) as m,
        FakeAnthropic(reply=scripted_agent(EDITS), min_cache_tokens=1024) as fake,
    ):
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0))
        client = wrap(sdk, memory=m, session=name, user_id="ana", memory_tools=True)
        for i in range(TURNS):
            given = {} if system is None else {"system": system(i) if callable(system) else system}
            question = f"Turn {i}: plan item {i}, please.{padding}"
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=256,
                messages=[{"role": "user", "content": question}],
                **given,
            )
        client.flush()
        assert len(client.calls) == TURNS + len(EDITS)
        total = client.calls.total()
        inputs = (
            total.input_tokens + total.cache_read_input_tokens + total.cache_creation_input_tokens
        )
        bodies = [r.json() for r in fake.messages_requests()]
        return total.cache_read_input_tokens / inputs, bodies


@pytest.mark.parametrize(
    "system",
    [
        pytest.param([_marked(SYSTEM)], id="one-marked-block"),
        pytest.param([_marked(SYSTEM), _marked(NOTE)], id="every-block-marked"),
        pytest.param([_plain(SYSTEM), _marked(NOTE)], id="last-block-marked"),
        pytest.param([_marked(SYSTEM), _plain("  ")], id="marked-then-blank"),
        pytest.param(SYSTEM + "\n" + NOTE, id="string"),
    ],
)
def test_an_apps_marked_system_keeps_the_history_cached(tmp_path: Path, system: Any) -> None:
    """As high a share read from the cache as with a plain string, and the core-memory
    block and the history marked on every request."""
    baseline, _ = _session(tmp_path, "plain", SYSTEM + "\n" + NOTE)
    share, bodies = _session(tmp_path, "app", system)
    assert baseline >= 0.85
    assert share >= baseline - 0.01
    for body in bodies[1:]:
        assert "cache_control" in body["system"][-1], "the core-memory snapshot is cached"
        assert "messages" in _marks(body), "the history is cached"
        assert len(_marks(body)) <= 4


def test_without_a_system_prompt_the_history_is_cached(tmp_path: Path) -> None:
    """The snapshot is the only system block and carries no mark of the app's; the
    (long) questions are cached as the history grows."""
    share, bodies = _session(tmp_path, "none", None, padding=" Some context." * 150)
    assert share >= 0.7  # each new question (450 tokens) is read uncached once
    for body in bodies[2:]:
        assert len(body["system"]) == 1
        assert "messages" in _marks(body)


def test_a_changing_block_after_the_apps_mark_still_ends_the_cached_prefix(
    tmp_path: Path,
) -> None:
    """The app's unmarked block after its mark changes per call: the snapshot after it is
    not marked, and nothing is marked after the app's mark, as without memory tools."""
    _, bodies = _session(tmp_path, "clock", lambda i: [_marked(SYSTEM), _plain(f"Time: 10:{i:02}")])
    for body in bodies:
        assert [("cache_control" in b) for b in body["system"]] == [True, False, False]
        assert _marks(body) == ["system"]
