"""``conversation_search`` finds tool results, so a result compacted out of the window
(cleared to a stub, or rotated out) can be found again by the model.

Why: it searched only user and assistant turns while its schema promised "the full
log", and a wrapped agent whose config read was cleared could find it nowhere (a
review). A long result is shown around its match, not whole.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from agent_scripts import anthropic_text, anthropic_tool_use, tool_results
from contextos import wrap
from contextos.agent.tools import (
    ANSWER_OPENS,
    CONTINUED,
    ENTRY_CHARS,
    entry,
    scoped_tools,
    search_answer,
)
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.types import Message, ToolCall

TOOLS = [
    {
        "name": "read_config",
        "description": "Read config file N.",
        "input_schema": {"type": "object", "properties": {"n": {"type": "string"}}},
    }
]


def _reply(body: dict[str, Any]) -> Any:
    """Asked to read config N: a tool call; given its result: a short answer."""
    last = body["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return "Read it."
    text = last if isinstance(last, str) else last[-1].get("text", "")
    n = text.split()[-1]
    return [{"type": "tool_use", "id": f"tu_{n}", "name": "read_config", "input": {"n": n}}]


def test_a_cleared_tool_result_is_found_by_conversation_search(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    with (
        FakeAnthropic(reply=_reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as sdk,
    ):
        client = wrap(
            sdk, memory, session="ops", user_id="ana", compaction="clear_tool_results", budget=12000
        )
        messages: list[dict[str, Any]] = []
        for i in range(8):
            messages.append({"role": "user", "content": f"Read config {i}"})
            call = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=128, tools=TOOLS, messages=messages
            )
            messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in call.content]}
            )
            config = f"db_password_{i}=ZEBRAKEY{i}\n" + "padding line of the config file\n" * 400
            result = {"type": "tool_result", "tool_use_id": call.content[0].id, "content": config}
            messages.append({"role": "user", "content": [result]})
            answer = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=128, tools=TOOLS, messages=messages
            )
            messages.append({"role": "assistant", "content": answer.content[0].text})
        client.flush()
        assert client.context.session.state().cleared  # the early results were cleared
        last = json.dumps(fake.messages_requests()[-1].json())
        assert "ZEBRAKEY0" not in last
        # the stub tells the model how it can get the result back (not a Python call)
        assert (
            "keeps it as turn 2: call the tool again, or find it with conversation_search" in last
        )

    tools = scoped_tools(memory, user_id="ana", session_id="ops")
    found = tools.execute("conversation_search", {"query": "ZEBRAKEY0"}).text
    assert "tool: db_password_0=ZEBRAKEY0" in found
    # around the match (its lines indented), not the whole 13,000-character result
    assert len(found) < 1.3 * ENTRY_CHARS
    memory.close()


def test_a_long_turn_is_shown_around_its_match(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        session = Session(memory, "s", user_id="ana")
        call = ToolCall(id="c1", name="grep", arguments={})
        session.add(
            Message("user", "find the key"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "x" * 30_000 + " the key is WALRUS " + "y" * 30_000, tool_call_id="c1"),
        )
        found = scoped_tools(memory, user_id="ana", session_id="s").execute(
            "conversation_search", {"query": "walrus"}
        )
        assert "the key is WALRUS" in found.text
        assert "[29,5" in found.text and "characters after]" in found.text
        assert len(found.text) < ENTRY_CHARS + 200


def test_a_long_turn_is_shown_around_its_match_when_lower_case_is_longer(
    tmp_path: Path,
) -> None:
    """'İ' lower-cased is two characters: the match was found in the lower-cased turn
    and the turn cut at that offset, so after 640 of them the excerpt missed the match
    (a review, s57)."""
    line = "İstanbul İzmir İlçe İş raporu satırı. "
    report = line * 160 + "Sözleşme numarası: ZX-99812. " + line * 160
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        Session(memory, "tr", user_id="ana").add(Message("user", report))
        found = scoped_tools(memory, user_id="ana", session_id="tr").execute(
            "conversation_search", {"query": "ZX-99812 sözleşme"}
        )
        assert "Sözleşme numarası: ZX-99812." in found.text
        assert len(found.text) < ENTRY_CHARS + 200


def test_composed_and_decomposed_words_find_each_other(tmp_path: Path) -> None:
    """A word logged decomposed (u + U+0308, as text pasted from macOS file names
    arrives) was not found by the model's composed query, nor the other way round (a
    review, s57). The turn is shown as logged, and a long one around its match."""
    nfd = functools.partial(unicodedata.normalize, "NFD")
    long_turn = nfd("über öl äh " * 600 + "Café Süd, room QX-4471. " + "more " * 400)
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        Session(memory, "s", user_id="ana").add(
            Message("user", nfd("Meeting moved to Zürich office.")),
            Message("assistant", "Noted: Bärbel joins."),
            Message("user", long_turn),
        )
        tools = scoped_tools(memory, user_id="ana", session_id="s")

        def search(query: str) -> str:
            return tools.execute("conversation_search", {"query": query}).text

        assert search("Zürich") == search_answer(
            ["[turn 0] user: " + nfd("Meeting moved to Zürich office.")]
        )
        assert search(nfd("Bärbel")) == search_answer(["[turn 1] assistant: Noted: Bärbel joins."])
        assert nfd("Café Süd, room QX-4471.") in search("Café")


def test_earlier_search_answers_in_the_log_are_not_searched(tmp_path: Path) -> None:
    """An agent's own conversation_search answers are logged as tool results; searched
    too, they quoted each other several levels deep (a review: 218 characters grew to
    3,614 of echoes)."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        session = Session(memory, "s", user_id="ana")
        session.add(Message("user", "My locker code is 4412."), Message("assistant", "Noted."))
        tools = scoped_tools(memory, user_id="ana", session_id="s")
        answers = []
        for i in range(4):
            answer = tools.execute("conversation_search", {"query": "locker code"}).text
            answers.append(answer)
            call = ToolCall(id=f"c{i}", name="conversation_search", arguments='{"query": "locker"}')
            session.add(
                Message("assistant", "", tool_calls=(call,)),
                Message("tool", answer, tool_call_id=f"c{i}"),
            )
        assert "tool:" not in answers[-1]
        assert (
            answers[-1] == answers[0] == search_answer(["[turn 0] user: My locker code is 4412."])
        )


def _old_answer(answer: str) -> str:
    """``answer`` as answers were logged before session 58: its entries, no markers."""
    return "\n".join(answer.split("\n")[1:-1])


@pytest.mark.parametrize(
    "logged",
    [
        pytest.param(lambda a: a.replace("\n", "\r\n"), id="crlf"),
        pytest.param(_old_answer, id="before-s58"),
        pytest.param(lambda a: _old_answer(a).replace("\n", "\r\n"), id="before-s58-crlf"),
        pytest.param(lambda a: a.replace("\n", " \n", 1), id="opening-line-padded"),
    ],
)
def test_earlier_answers_logged_with_crlf_or_without_markers_are_not_searched(
    tmp_path: Path, logged: Callable[[str], str]
) -> None:
    """An answer logged with CRLF line ends (a client normalising them) kept a ``\\r`` on
    its marker lines, which then matched neither, and the answers nested again (3
    answers: 1,068 characters, 7 tool hits, a review, s58). Answers logged before they
    had markers were searched as any tool result, each quoted again beside the turn it
    quoted (review s58 D4). An app's own lines in such a turn are still searched."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        session = Session(memory, "s", user_id="ana")
        session.add(Message("user", "My locker code is 4412."), Message("assistant", "Noted."))
        tools = scoped_tools(memory, user_id="ana", session_id="s")
        first = tools.execute("conversation_search", {"query": "locker code"}).text
        for i in range(3):
            answer = tools.execute("conversation_search", {"query": "locker code"}).text
            call = ToolCall(id=f"c{i}", name="conversation_search", arguments="{}")
            session.add(
                Message("assistant", "", tool_calls=(call,)),
                Message(
                    "tool", f"locker room B{i} opened\n" + logged(answer), tool_call_id=f"c{i}"
                ),
            )
        last = tools.execute("conversation_search", {"query": "locker code"}).text
        assert "[turn 0] user: My locker code is 4412." in last
        assert last.count("My locker code") == 1  # no answer quoted again
        assert "locker room B2 opened" in last  # the app's line beside it, found
        assert first == search_answer(["[turn 0] user: My locker code is 4412."])


def test_parallel_results_beside_a_search_answer_are_searched_not_its_answer(
    tmp_path: Path,
) -> None:
    """Anthropic logs a response's parallel tool results as one turn, their texts joined.
    The search skipped only a turn that started with its answer: an answer after another
    result was quoted again, nesting deeper every turn, and a result after an answer that
    came first could never be found (a review, s57: 38 grew to 4,453 characters)."""
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory=memory, session="s", user_id="ana", memory_tools=True)
        messages: list[dict[str, Any]] = []
        # the search first, a core edit beside it; then searches after an archival insert
        fake.enqueue(
            anthropic_tool_use(
                ("conversation_search", {"query": "door code"}),
                ("core_memory_append", {"label": "human", "content": "Gate code is 4417"}),
            ),
            anthropic_text("Noted."),
        )
        for i in range(6):
            fake.enqueue(
                anthropic_tool_use(
                    ("archival_memory_insert", {"content": f"note {i}"}),
                    ("conversation_search", {"query": "travel plans"}),
                ),
                anthropic_text("Noted."),
            )
        fake.enqueue(
            anthropic_tool_use(("conversation_search", {"query": "gate code 4417"})),
            anthropic_text("Noted."),
        )
        asks = ["Remember my door code"] + [f"my travel plans, part {i}" for i in range(7)]
        for ask in asks:
            messages.append({"role": "user", "content": ask})
            reply = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=messages
            )
            messages.append({"role": "assistant", "content": reply.content[0].text})
        client.flush()
        answers = [tool_results(r.json())[-1] for r in fake.messages_requests()[1::2]]
    travel = answers[1:-1]
    # each answer quotes the user's turns, never an earlier answer (no nested entry)
    assert all("\n" + CONTINUED + "[turn" not in a for a in travel), travel[-1]
    assert travel[-1].count("[turn") == 5 and len(travel[-1]) < 320
    # the core edit logged beside the first search answer is found
    assert "tool: Core memory block 'human' is now:\n    Gate code is 4417" in answers[-1]
    memory.close()


def test_an_apps_indented_result_after_a_search_answer_is_searched_and_the_answer_not(
    tmp_path: Path,
) -> None:
    """An app that runs ``conversation_search`` itself (as MCP serves it) beside its own
    tool, and sends both results in one user turn through a wrapped client: the log
    joins them into one tool turn. The answer was told from the text by its layout (its
    further lines indented), so the app's result that came after it, indented YAML, was
    read as part of the answer and never found (review s57). The answer now opens and
    closes on lines of its own, and only what lies between them is left out."""
    config = "    host: db.internal\n    password: HUSKY-7731"  # a YAML fragment
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    tools = scoped_tools(memory, user_id="ana", session_id="s")
    with (
        FakeAnthropic() as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory=memory, session="s", user_id="ana")
        fake.enqueue(
            anthropic_text("Noted."),
            anthropic_tool_use(
                ("conversation_search", {"query": "locker code"}),
                ("read_config", {"n": "1"}),
            ),
            anthropic_text("Done."),
        )
        messages: list[dict[str, Any]] = [{"role": "user", "content": "My locker code is 4412."}]
        for step in range(3):
            reply = client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, tools=TOOLS, messages=messages
            )
            messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in reply.content]}
            )
            if step == 0:
                messages.append({"role": "user", "content": "Check the config too."})
            elif step == 1:
                search, read = (b for b in reply.content if b.type == "tool_use")
                answer = tools.execute("conversation_search", dict(search.input)).text
                results = [
                    {"type": "tool_result", "tool_use_id": search.id, "content": answer},
                    {"type": "tool_result", "tool_use_id": read.id, "content": config},
                ]
                messages.append({"role": "user", "content": results})
        client.flush()
    logged = [t.message for t in Session(memory, "s", user_id="ana").turns()]
    assert any(m.role == "tool" and m.content.startswith(answer) for m in logged)
    found = tools.execute("conversation_search", {"query": "HUSKY-7731 password"}).text
    assert "tool: " + entry("", config) in found  # the app's result, whole
    again = tools.execute("conversation_search", {"query": "locker code"}).text
    assert again == answer  # the turn itself, not the earlier answer quoting it
    memory.close()


def test_an_apps_line_like_the_answers_first_hides_nothing(tmp_path: Path) -> None:
    """Only the lines from an answer's first line to its last are left out: an app's
    result holding a line equal to the first, with no last line after it, is searched
    whole, also when a real answer follows it in the same joined turn."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        session = Session(memory, "s", user_id="ana")
        session.add(Message("user", "My locker code is 4412."), Message("assistant", "Noted."))
        tools = scoped_tools(memory, user_id="ana", session_id="s")
        answer = tools.execute("conversation_search", {"query": "locker code"}).text
        own = f"{ANSWER_OPENS}\nthe quoted report says ORCA-19"
        calls = (ToolCall("a", "read_report", "{}"), ToolCall("b", "conversation_search", "{}"))
        session.add(
            Message("assistant", "", tool_calls=calls),
            Message("tool", f"{own}\n{answer}", tool_call_id="a"),
        )
        assert (
            "the quoted report says ORCA-19"
            in tools.execute("conversation_search", {"query": "ORCA-19"}).text
        )
        assert tools.execute("conversation_search", {"query": "locker code"}).text == answer
