"""A regenerated answer replaces the old one in every window and in compaction.

A wrapped call logs a regenerate as a branch (``redo_of``): the log keeps both
answers, and the wrapped call's own window sends only the new one. ``Session.window``
(the CLI's and the server's windows) and ``Session.compact`` read the raw log, so a
window showed both answers and compaction counted and summarized the replaced one. The
log is written by the real ``anthropic`` SDK client against the loopback fake, into a
real SQLite memory file.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from click.testing import CliRunner

anthropic = pytest.importorskip("anthropic")

from contextos.engine.compaction import history_tokens  # noqa: E402
from contextos.engine.context import REDO_KEY  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.llm.models import get_model  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4"
SONNET = get_model("claude-sonnet-4-5")
#: Each answer is long and says which it is, so a window or summary quoting it shows.
FILLER = " Ana booked the table at the harbour restaurant for Saturday night." * 6


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    numbers = itertools.count(1)

    def reply(body: Mapping[str, Any]) -> str:
        return f"Answer number {next(numbers)}.{FILLER}"

    with FakeAnthropic(reply=reply) as server:
        yield server


def _regenerated(client: Any, memory: Memory) -> tuple[str, str]:
    """A conversation whose second answer the user regenerated; (old, new) answer."""
    wrapped = wrap(client, memory=memory, session="s", user_id="ana", remember=False)
    history: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]

    def ask() -> str:
        reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
        return str(reply.content[0].text)

    history.append({"role": "assistant", "content": ask()})
    history.append({"role": "user", "content": "book a table for two"})
    old = ask()
    new = ask()  # "regenerate": the same request again
    history += [{"role": "assistant", "content": new}, {"role": "user", "content": "at eight"}]
    history.append({"role": "assistant", "content": ask()})
    wrapped.flush()
    log = [t.message for t in wrapped.context.session.turns()]
    assert [m.content for m in log].count(old) == 1 and any(REDO_KEY in m.metadata for m in log)
    return old, new


def _said(window: Any) -> str:
    return "\n".join(b.text for b in window.blocks)


def test_a_sessions_window_shows_only_the_regenerated_answer(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    old, new = _regenerated(anthropic_client, memory)
    session = Session(memory.store, "s", user_id="ana")  # the CLI's, the server's
    said = _said(session.window(SONNET, "and the wine?"))
    assert new.split(".")[0] in said and old.split(".")[0] not in said
    # The CLI's window is the same.
    runner = CliRunner()
    from contextos.cli.main import cli

    out = runner.invoke(
        cli,
        ["--db", str(memory.store.path), "window", "--session", "s", "-q", "and the wine?"]
        + ["--format", "anthropic"],
    )
    assert out.exit_code == 0, out.output
    body = json.dumps(json.loads(out.output))
    assert new.split(".")[0] in body and old.split(".")[0] not in body


def test_compaction_counts_and_summarizes_the_conversation_the_user_sees(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    old, _ = _regenerated(anthropic_client, memory)
    session = Session(memory.store, "s", user_id="ana")
    log = session.turns()
    replaced = next(t for t in log if t.message.content == old)
    # The regenerate logged the question again (marked redo_of the first): what the
    # user sees is the log less the first question and its replaced answer.
    again = next(t for t in log if t.message.metadata.get(REDO_KEY) is not None)
    assert again.message.metadata[REDO_KEY] == replaced.seq - 1
    shown = [t for t in log if t.seq not in (replaced.seq - 1, replaced.seq)]
    assert session.history_tokens() == history_tokens(shown, session.state())
    done = session.compact(300, "summarize", force=True)
    assert done.plan is not None and replaced.seq not in done.plan.rotate
    assert max(done.plan.rotate) > replaced.seq  # it rotated past the replaced answer
    summary = done.state.summary
    assert summary is not None and summary.lines
    assert all(line.seq != replaced.seq for line in summary.lines)
    assert "number 2" not in summary.text  # the replaced answer was the second
