"""A wrapped client's memory-tool loop cut between its requests, retried by a new process.

Process A (a wrapped SDK client with ``memory_tools=True``) asks a question; the model
calls ``core_memory_append``, the tool runs, and the request carrying its result fails
(529/503, no SDK retries): ``create()`` raises and A exits. Process B, the same app
restarted on the same SQLite file and session, retries the same ``create()``. Each
process is a real subprocess with the real SDK against the loopback fake run here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_scripts import anthropic_text, anthropic_tool_use, openai_text, openai_tool_calls
from contextos import Memory, Session
from contextos.agent.core_memory import CoreMemory
from contextos.engine.conversation import REDO_KEY
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_openai import FakeOpenAI

pytest.importorskip("anthropic")
pytest.importorskip("openai")

#: One process of the app: a wrapped SDK client on ``db`` (session "s1", user ana),
#: asks each conversation given in turn (JSON), printing the answer or the error's
#: class. With ``within`` set, the loop is built with that ``resume_within_s``. It
#: imports only the SDK it uses, as an app does: importing both took up to ~1 s a run.
APP = """
import json, sys
from contextos import Memory, Session, wrap
from contextos.agent import AgentTools, ToolLoop
from contextos.agent.core_memory import CoreMemory
from contextos.testing.embedders import HashEmbedder

db, provider, base_url, within, asks = sys.argv[1:6]
memory = Memory(db, embedder=HashEmbedder(), background_embedding=False)
tools = True
if within != "-":
    session = Session(memory, "s1", user_id="ana")
    core = CoreMemory(memory, user_id="ana")
    tools = ToolLoop(AgentTools(core, session=session), provider, resume_within_s=float(within))
if provider == "anthropic":
    import anthropic
    sdk = anthropic.Anthropic(base_url=base_url, api_key="t", max_retries=0)
else:
    import openai
    sdk = openai.OpenAI(base_url=base_url, api_key="t", max_retries=0)
client = wrap(sdk, memory=memory, session="s1", user_id="ana", memory_tools=tools)
for messages in json.loads(asks):
    try:
        if provider == "anthropic":
            out = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=messages
            )
            print(out.content[0].text, flush=True)
        else:
            out = client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
            print(out.choices[0].message.content, flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
        break
client.flush()
memory.close()
"""

QUESTION = {"role": "user", "content": "I moved to Porto in May."}
APPEND = ("core_memory_append", {"label": "human", "content": "Lives in Porto since May."})


def _app(db: Path, provider: str, fake: Any, asks: list[Any], within: float | None = None) -> str:
    """Run one process of the app; what it printed."""
    args = [str(db), provider, fake.base_url, "-" if within is None else str(within)]
    done = subprocess.run(
        [sys.executable, "-c", APP, *args, json.dumps(asks)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _script(fake: Any, provider: str, *steps: str) -> None:
    """Play the model: "call" (the append), "fail" (an overloaded answer), or a reply."""
    for step in steps:
        if step == "fail":
            fake.enqueue_error(529 if provider == "anthropic" else 503)
        elif step == "call":
            call = anthropic_tool_use if provider == "anthropic" else openai_tool_calls
            fake.enqueue(call(APPEND))
        else:
            fake.enqueue(anthropic_text(step) if provider == "anthropic" else openai_text(step))


def _log(db: Path) -> tuple[list[tuple[str, str]], str]:
    """(role and text of each logged turn, Ana's human block) in ``db``."""
    memory = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    try:
        turns = Session(memory, "s1", user_id="ana").turns()
        assert not [t for t in turns if REDO_KEY in t.message.metadata]  # no branch
        logged = [(t.message.role, t.message.content) for t in turns]
        return logged, CoreMemory(memory, user_id="ana").get("human").value
    finally:
        memory.close()


def _said(body: dict[str, Any]) -> list[Any]:
    """A request's conversation: its messages but the system prompt (OpenAI's system
    messages carry the core snapshot, which a new process renders from the block as
    it is now, the edit made)."""
    return [m for m in body["messages"] if m["role"] != "system"]


def _fake(provider: str) -> Any:
    return FakeAnthropic() if provider == "anthropic" else FakeOpenAI()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_restarted_process_resumes_a_loop_cut_between_requests(
    tmp_path: Path, provider: str
) -> None:
    """Why: B's loop kept nothing (progress was kept in A's memory only) and started
    over: the model saw the question, its tool call and result, then the question again;
    the question was logged twice and the model made its edit again (a review: the block
    held the line twice). B sends A's failed request again, as A's own retry would."""
    db = tmp_path / "app.db"
    with _fake(provider) as fake:
        _script(fake, provider, "call", "fail", "Noted, Ana.")
        assert _app(db, provider, fake, [[QUESTION]]).split() == ["ProviderHTTPError"]
        assert _app(db, provider, fake, [[QUESTION]]).strip() == "Noted, Ana."
        bodies = [r.json() for r in fake.requests]
    assert len(bodies) == 3  # the model was not asked anew
    assert _said(bodies[2]) == _said(bodies[1])  # the failed request, again
    logged, block = _log(db)
    assert block == "Lives in Porto since May."  # the edit made once
    assert [role for role, _ in logged] == ["user", "assistant", "tool", "assistant"]
    assert logged[0][1] == QUESTION["content"] and logged[-1][1] == "Noted, Ana."


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_restarted_process_resumes_a_later_turn_of_the_conversation(
    tmp_path: Path, provider: str
) -> None:
    """The same for the second turn of a conversation the app re-sends whole: the first
    turn's hidden exchange is put back, then the cut one after the new question."""
    db = tmp_path / "app.db"
    later = {"role": "user", "content": "And I work from home now."}
    ask = [QUESTION, {"role": "assistant", "content": "Noted."}, later]
    with _fake(provider) as fake:
        _script(fake, provider, "call", "Noted.", "call", "fail", "Got it.")
        assert _app(db, provider, fake, [[QUESTION], ask]).split() == [
            "Noted.",
            "ProviderHTTPError",
        ]
        assert _app(db, provider, fake, [ask]).strip() == "Got it."
        bodies = [r.json() for r in fake.requests]
    assert len(bodies) == 5
    assert _said(bodies[4]) == _said(bodies[3])
    logged, block = _log(db)
    assert block == "Lives in Porto since May.\nLives in Porto since May."  # once a turn
    roles = ["user", "assistant", "tool", "assistant"]
    assert [role for role, _ in logged] == roles * 2
    assert [text for role, text in logged if role == "user"] == [
        QUESTION["content"],
        later["content"],
    ]


def test_a_retry_past_resume_within_s_starts_over(tmp_path: Path) -> None:
    """The log's progress waits ``resume_within_s`` for the retry, by the logged turns'
    time, as the progress kept in memory does: the same question after that is asked
    anew (a new question in the same words)."""
    db = tmp_path / "app.db"
    with FakeAnthropic() as fake:
        _script(fake, "anthropic", "call", "fail", "Hello again.")
        assert _app(db, "anthropic", fake, [[QUESTION]]).split() == ["ProviderHTTPError"]
        assert _app(db, "anthropic", fake, [[QUESTION]], within=0.0).strip() == "Hello again."
        bodies = [r.json() for r in fake.requests]
    assert len(bodies) == 3
    assert _said(bodies[2]) != _said(bodies[1])  # asked anew, not resumed
