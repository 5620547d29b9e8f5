"""A reply the app keeps in place of the logged one is remembered (review s42, sdkshapes
finding 2).

The app keeps another of ``n`` choices, or, after a double submit of the same whole
conversation, the answer it showed, and goes on from it. The next call logs that reply
as the first turn of a branch (``redo_of``) and sends it to the model, and the branch
deletes what the turns it replaced had added to memory, the logged reply's memory
included. The kept reply was never remembered: memory held no answer to the question at
all, not even the one the user saw. Now the call that logs it remembers it, once, marked
with its turn like any reply (so a later branch that cuts it takes its memory too).

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes, a real SQLite
memory file, the shipped HashEmbedder.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.conversation import REDO_KEY  # noqa: E402
from contextos.engine.session import LOGGED_TURN_KEY, Session  # noqa: E402
from contextos.errors import ProviderHTTPError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from sdk_support import fake_and_client, openai_choices  # noqa: E402

GPT = "gpt-4.1-mini"
CLAUDE = "claude-haiku-4-5"


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


def _remembered(memory: Memory) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id="ana"))


def _log(memory: Memory, session: str) -> list[tuple[str, str, Any]]:
    turns = Session(memory, session, user_id="ana").turns()
    return [(t.message.role, t.message.content, t.message.metadata.get(REDO_KEY)) for t in turns]


LISBON, PORTO = "Book the Lisbon flight on May 3.", "Book the Porto train on May 5."


def test_the_choice_of_n_the_app_keeps_is_remembered_in_place_of_the_logged_one(
    memory: Memory,
) -> None:
    with fake_and_client("openai") as (fake, sdk):
        client = wrap(sdk, memory=memory, session="n", user_id="ana")
        fake.enqueue(openai_choices(LISBON, PORTO))
        history: list[Any] = [{"role": "user", "content": "Plan my trip."}]
        completion = client.chat.completions.create(model=GPT, n=2, messages=history)
        client.flush()
        assert _remembered(memory) == sorted([LISBON, "Plan my trip."])
        # The user picks choice 1 and goes on.
        history += [completion.choices[1].message, {"role": "user", "content": "Go with that."}]
        client.chat.completions.create(model=GPT, messages=history)
        client.flush()
        assert _log(memory, "n")[1:3] == [("assistant", LISBON, None), ("assistant", PORTO, 1)]
        assert _remembered(memory) == sorted(
            ["Plan my trip.", PORTO, "Go with that.", "You said: Go with that."]
        )
        [kept] = [r for r in memory.get_all(user_id="ana") if r.text == PORTO]
        assert kept.metadata[LOGGED_TURN_KEY] == 2  # marked with its turn, as a reply is
        hits = [h.record.text for h in memory.search("Porto train May 5", user_id="ana")]
        assert hits[0] == PORTO
        # The user goes back to choice 0: that branch cuts the kept reply, memory and all.
        history = [history[0], {"role": "assistant", "content": LISBON}]
        history.append({"role": "user", "content": "The flight after all."})
        client.chat.completions.create(model=GPT, messages=history)
        client.flush()
        assert _remembered(memory) == sorted(
            ["Plan my trip.", LISBON, "The flight after all.", "You said: The flight after all."]
        )


def test_a_kept_reply_whose_call_fails_is_remembered_once_with_the_retry(
    memory: Memory,
) -> None:
    """The call that logs the kept reply fails (a 529): its question is remembered
    (``failed``), and the kept reply with it; the retry, which logs nothing again,
    remembers neither again."""
    with fake_and_client("openai") as (fake, sdk):
        client = wrap(sdk, memory=memory, session="n", user_id="ana")
        fake.enqueue(openai_choices(LISBON, PORTO))
        history: list[Any] = [{"role": "user", "content": "Plan my trip."}]
        completion = client.chat.completions.create(model=GPT, n=2, messages=history)
        history += [completion.choices[1].message, {"role": "user", "content": "Go with that."}]
        fake.enqueue_error(529, "overloaded")
        with pytest.raises(ProviderHTTPError):
            client.chat.completions.create(model=GPT, messages=history)
        client.flush()
        assert _remembered(memory) == sorted(["Plan my trip.", PORTO, "Go with that."])
        client.chat.completions.create(model=GPT, messages=history)
        client.flush()
        assert _remembered(memory) == sorted(
            ["Plan my trip.", PORTO, "Go with that.", "You said: Go with that."]
        )


class DoubleSubmit:
    """The fake's replies: ``Reply A`` to the first of the two requests in flight at once
    (sent once the second has come), ``Reply B`` to the second (sent once the app has
    shown ``Reply A``), ``Reply N`` to every other request, in order."""

    def __init__(self) -> None:
        self.on = False
        self.order = itertools.count()
        self.numbers = itertools.count()
        self.second_in, self.shown = threading.Event(), threading.Event()

    def __call__(self, body: dict[str, Any]) -> str:
        if not self.on:
            return f"Reply {next(self.numbers)}"
        if next(self.order) == 0:
            assert self.second_in.wait(20), "the second request never came"
            return "Reply A"
        self.second_in.set()
        assert self.shown.wait(20), "the first reply was never shown"
        return "Reply B"


class BothRead:
    """The store as the Memory sees it: the two requests' appends of ``question`` wait
    for each other, so both have read the log before either logs it (a double click's
    two requests, as they race)."""

    def __init__(self, store: SQLiteStore, question: str) -> None:
        self.store, self.question = store, question
        self.both = threading.Barrier(2, timeout=20)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_turns(self, scope: Any, messages: Any, tokens: Any, **kwargs: Any) -> Any:
        if messages[-1].role == "user" and messages[-1].content == self.question:
            self.both.wait()
        return self.store.append_turns(scope, messages, tokens, **kwargs)


MOVED = "I moved to Porto."


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_the_reply_shown_after_a_double_submit_is_remembered(tmp_path: Path, provider: str) -> None:
    """The same whole conversation sent twice at once (a double click): both questions
    are logged; the app shows the first reply it gets and goes on from it. Both replies
    and the second question were remembered, then cut with the turns the kept reply's
    branch replaced: memory held no answer to "I moved to Porto." at all."""
    replies = DoubleSubmit()
    store = BothRead(SQLiteStore(tmp_path / "m.db"), MOVED)
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    with fake_and_client(provider, reply=replies) as (fake, sdk), memory:
        client = wrap(sdk, memory=memory, session="d", user_id="ana")

        def ask(history: list[dict[str, str]]) -> str:
            if provider == "anthropic":
                message = client.messages.create(model=CLAUDE, max_tokens=64, messages=history)
                return str(message.content[0].text)
            completion = client.chat.completions.create(model=GPT, messages=history)
            return str(completion.choices[0].message.content)

        history = [{"role": "user", "content": "My name is Ana."}]
        history.append({"role": "assistant", "content": ask(history)})
        history.append({"role": "user", "content": MOVED})
        replies.on = True
        got: queue.Queue[str] = queue.Queue()
        clicks = [threading.Thread(target=lambda: got.put(ask(list(history)))) for _ in "12"]
        for click in clicks:
            click.start()
        shown = got.get(timeout=20)
        replies.shown.set()  # the app showed the first reply
        other = got.get(timeout=20)
        for click in clicks:
            click.join(20)
        replies.on = False
        assert (shown, other) == ("Reply A", "Reply B")
        client.flush()
        log = _log(memory, "d")
        assert [text for role, text, _ in log if role == "user"].count(MOVED) == 2
        history.append({"role": "assistant", "content": shown})
        history.append({"role": "user", "content": "What city?"})
        ask(history)
        client.flush()
        log = _log(memory, "d")
        assert log[-3:] == [
            ("assistant", "Reply A", log[-3][2]),
            ("user", "What city?", None),
            ("assistant", "Reply 1", None),
        ]
        assert log[-3][2] is not None  # the kept reply starts a branch
        assert _remembered(memory) == sorted(
            ["My name is Ana.", "Reply 0", MOVED, "Reply A", "What city?", "Reply 1"]
        )
        sdk.close()
