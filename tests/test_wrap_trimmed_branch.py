"""An app that trims its own history (system prompt + last N messages) and branches.

Plain trimmed calls were matched against the log's end, but a regenerate (drop the last
answer, send again), an edit of the last question, or keeping choice 1 of an ``n=2``
reply sends messages the log holds in its middle: the log neither ends with them (the
dropped answer follows) nor starts with them. All of it was logged again as new (a
review): the old turns twice, two assistant turns in a row, the rejected answer kept
and remembered, and every later call sent that conversation (13 messages where the app
sent 5). Now such a request is a branch (``redo_of``), as a whole-conversation
regenerate is. The real ``openai`` client against the loopback fake, a real SQLite
memory file.
"""

from __future__ import annotations

from typing import Any

import pytest

openai = pytest.importorskip("openai")

from contextos.engine.context import REDO_KEY, Match, match_request  # noqa: E402
from contextos.errors import ProviderHTTPError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import Message  # noqa: E402
from sdk_support import openai_choices  # noqa: E402

GPT = "gpt-4.1-mini"
SYSTEM = {"role": "system", "content": "You are a chef."}
QUESTIONS = ["I am vegetarian.", "I live in Lisbon.", "I hate coriander.", "What do I cook?"]
KEEP = 4


class TrimmingApp:
    """An app that keeps its whole history and sends its system prompt and last four."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.history: list[dict[str, Any]] = []

    def send(self, **extra: Any) -> Any:
        messages = [SYSTEM, *self.history[-KEEP:]]
        return self.client.chat.completions.create(model=GPT, messages=messages, **extra)

    def ask(self, question: str) -> str:
        self.history.append({"role": "user", "content": question})
        answer = str(self.send().choices[0].message.content)
        self.history.append({"role": "assistant", "content": answer})
        return answer


def _log(wrapped: Any) -> list[tuple[str, str, int | None]]:
    wrapped.flush()
    turns = wrapped.context.session.turns()
    return [(t.message.role, t.message.content, t.message.metadata.get(REDO_KEY)) for t in turns]


def _sent(fake: FakeOpenAI) -> list[tuple[str, str]]:
    """The last request's turns (not the system prompt), the question's text parts joined."""
    out = []
    for m in fake.completions_requests()[-1].json()["messages"][1:]:
        content = m["content"]
        text = content if isinstance(content, str) else "".join(p["text"] for p in content)
        out.append((m["role"], text))
    return out


def _remembered(memory: Memory) -> list[str]:
    return [r.text for r in memory.get_all(user_id="ana")]


@pytest.fixture
def app(openai_client: Any, memory: Memory) -> TrimmingApp:
    wrapped = wrap(
        openai_client, memory=memory, session="s", user_id="ana", background_commit=False
    )
    app = TrimmingApp(wrapped)
    for question in QUESTIONS:
        app.ask(question)
    assert len(_log(wrapped)) == 8  # plain trimmed calls log nothing twice
    return app


def test_a_trimmed_regenerate_is_a_branch_not_the_old_turns_again(
    fake_openai: FakeOpenAI, memory: Memory, app: TrimmingApp
) -> None:
    wrapped = app.client
    rejected = "You said: What do I cook?"
    assert rejected in _remembered(memory)
    app.history.pop()  # regenerate: drop the last answer, send again
    fake_openai.enqueue_reply("Try a mushroom risotto.", OpenAIUsage(50, 6))
    app.history.append({"role": "assistant", "content": app.send().choices[0].message.content})
    log = _log(wrapped)
    assert log[:8] == [
        (role, f"You said: {q}" if role == "assistant" else q, None)
        for q in QUESTIONS
        for role in ("user", "assistant")
    ]
    assert len(log) == 10
    assert log[8] == ("user", "What do I cook?", 6)  # said again, in the question's place
    assert log[9][:2] == ("assistant", "Try a mushroom risotto.")
    # The model saw the conversation up to the question, without the dropped answer.
    assert _sent(fake_openai)[-2:] == [
        ("assistant", "You said: I hate coriander."),
        ("user", "What do I cook?"),
    ]
    assert rejected not in [text for _, text in _sent(fake_openai)]
    assert rejected not in _remembered(memory)  # the rejected answer's memory went
    assert "What do I cook?" in _remembered(memory)  # the question said again stays
    # The app goes on from the new answer: its next trimmed call is a plain one.
    app.ask("And for dessert?")
    assert len(_log(wrapped)) == 12
    assert rejected not in [text for _, text in _sent(fake_openai)]


def test_a_trimmed_edit_of_the_last_question_replaces_it(
    fake_openai: FakeOpenAI, memory: Memory, app: TrimmingApp
) -> None:
    wrapped = app.client
    app.history[-2:] = [{"role": "user", "content": "What do I cook for two?"}]
    app.send()
    log = _log(wrapped)
    assert len(log) == 10
    assert log[8] == ("user", "What do I cook for two?", 6)
    assert "What do I cook?" not in [text for _, text in _sent(fake_openai)]
    assert "What do I cook?" not in _remembered(memory)


def test_a_trimmed_app_that_keeps_choice_one_branches_at_the_answer(
    fake_openai: FakeOpenAI, app: TrimmingApp
) -> None:
    wrapped = app.client
    fake_openai.enqueue(openai_choices("Call it Tom.", "Call it Felix."))
    app.history.append({"role": "user", "content": "Name my cat."})
    reply = app.send(n=2)
    app.history.append({"role": "assistant", "content": reply.choices[1].message.content})
    app.ask("Great, thanks.")
    log = _log(wrapped)
    assert [t[:2] for t in log[8:]] == [
        ("user", "Name my cat."),
        ("assistant", "Call it Tom."),
        ("assistant", "Call it Felix."),  # in Tom's place
        ("user", "Great, thanks."),
        ("assistant", "You said: Great, thanks."),
    ]
    assert log[10][2] == 9
    assert ("assistant", "Call it Tom.") not in _sent(fake_openai)


def test_a_trimmed_app_that_drops_a_failed_question_branches_there(
    fake_openai: FakeOpenAI, app: TrimmingApp
) -> None:
    wrapped = app.client
    fake_openai.enqueue_error(500)
    with pytest.raises(ProviderHTTPError):
        app.ask("Is it spicy?")
    app.history.pop()  # the app gives the question up and asks another
    app.ask("Is it quick?")
    log = _log(wrapped)
    assert [t[:2] for t in log[8:]] == [
        ("user", "Is it spicy?"),
        ("user", "Is it quick?"),
        ("assistant", "You said: Is it quick?"),
    ]
    assert log[9][2] == 8
    assert "Is it spicy?" not in [text for _, text in _sent(fake_openai)]


def test_match_request_finds_a_trimmed_requests_run_in_the_conversation() -> None:
    u = [Message("user", f"q{i}") for i in range(5)]
    a = [Message("assistant", f"a{i}") for i in range(5)]
    log = [u[0], a[0], u[1], a[1], u[2], a[2]]
    x = Message("user", "x")
    assert match_request([a[0], u[1], a[1], u[2]], log) == Match(3, 4)  # a regenerate
    assert match_request([a[0], u[1], a[1], x], log) == Match(3, 4)  # an edit
    assert match_request([u[1], a[1], u[2], a[2]], log) == Match(3, 5)  # the reply again
    assert match_request([a[0], u[1], Message("assistant", "b1"), x], log) == Match(2, 3)
    # One message said again is a new turn, not a branch (a review: a note app that
    # sends a fixed instruction and the new note lost every note but the last).
    assert match_request([u[1], Message("assistant", "b1"), x], log) == Match(0, len(log))
    assert match_request([u[1], x], log) == Match(0, len(log))  # its last two questions
    notes = [u[0], a[0], u[3], u[1], a[1], u[3], u[2], a[2]]  # u[3]: "file this note"
    assert match_request([u[3], u[4]], notes) == Match(0, len(notes))
    # A plain trimmed call is matched at the log's end, as before; so is a tie.
    assert match_request([u[2], a[2], x], log) == Match(2, 6)
    assert match_request([a[2], x], [*log[:4], a[2], u[3], a[2]]) == Match(1, 7)
    # The whole conversation's start wins a tie with a run further on.
    assert match_request([u[0], a[0], x], [u[0], a[0], u[0], a[0], u[1]]) == Match(2, 2)
    # A run that starts further back than the request can have trimmed is not looked for.
    far = [*log, *[Message(("user", "assistant")[i % 2], f"m{i}") for i in range(40)]]
    assert match_request([a[0], u[1], a[1], x], far) == Match(0, len(far))
