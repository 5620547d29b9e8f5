"""The SDK clients' own shapes, kept by ``wrap()``: a client used as a context manager,
and OpenAI's per-message participant ``name`` (both found by a review of apps using the
SDKs' richer features). The real SDK clients against the loopback fakes, a real SQLite
memory file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.llm.media_tokens import media_tokens  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from contextos.testing.fake_http import FakeResponse  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import Message  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("session", [None, "s"])
def test_a_wrapped_client_is_a_context_manager_as_the_sdk_client_is(
    tmp_path: Path, provider: str, session: str | None
) -> None:
    # `with anthropic.Anthropic() as client:` with wrap() added raised TypeError.
    server, sdk = fake_and_sdk(provider)
    with (
        server() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        client = sdk(base_url=fake.base_url, api_key="t", max_retries=0)
        managed = (
            wrap(client, memory=memory, session=session, user_id="ana") if session else wrap(client)
        )
        question = [{"role": "user", "content": "I keep bees."}]
        with managed as c:
            assert c is managed
            if provider == "anthropic":
                fake.enqueue_reply("Nice.", AnthropicUsage(5, 2))
                c.messages.create(model="claude-sonnet-4", max_tokens=64, messages=question)
            else:
                fake.enqueue_reply("Nice.", OpenAIUsage(5, 2))
                c.chat.completions.create(model="gpt-4.1-mini", messages=question)
        assert client.is_closed()
        if session:  # the block waited for the call's commit
            assert "I keep bees." in [r.text for r in memory.get_all(user_id="ana")]


def test_openai_participant_names_are_sent_as_the_app_sent_them(tmp_path: Path) -> None:
    # A group chat's {"role": "user", "name": "alice"} turns were logged with their
    # names and sent without them: the model saw anonymous users. A name the API would
    # refuse (a space) stays out, as before.
    with (
        FakeOpenAI() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="g", user_id="team")
        history = [{"role": "user", "name": "alice", "content": "I like tea."}]
        fake.enqueue_reply("Noted.", OpenAIUsage(5, 2))
        wrapped.chat.completions.create(model="gpt-4.1-mini", messages=history)
        history += [
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "name": "bob", "content": "I like coffee. What does each of us like?"},
        ]
        fake.enqueue_reply("Tea and coffee.", OpenAIUsage(5, 2))
        wrapped.chat.completions.create(model="gpt-4.1-mini", messages=history)
        history += [
            {"role": "assistant", "content": "Tea and coffee."},
            {"role": "user", "name": "Ana Maria", "content": "And me?"},
        ]
        fake.enqueue_reply("You did not say.", OpenAIUsage(5, 2))
        wrapped.chat.completions.create(model="gpt-4.1-mini", messages=history)
        second, third = (r.json()["messages"] for r in fake.completions_requests()[1:])
        users = [m for m in second if m["role"] == "user"]
        assert [m.get("name") for m in users] == ["alice", "bob"]
        assert [m.get("name") for m in third if m["role"] == "user"] == ["alice", "bob", None]


def test_the_legacy_functions_api_is_refused_with_a_session_and_passed_through_without(
    tmp_path: Path,
) -> None:
    # Its function_call reply was logged as an empty assistant turn and its role
    # "function" result as the user speaking: the model saw no call.
    legacy = {"functions": [{"name": "get_time", "parameters": {"type": "object"}}]}
    question = [{"role": "user", "content": "What time is it?"}]
    with (
        FakeOpenAI() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        managed = wrap(client, memory=memory, session="s", user_id="ana")
        with pytest.raises(ValueError, match="legacy functions API"):
            managed.chat.completions.create(model="gpt-4.1-mini", messages=question, **legacy)
        called = [*question, {"role": "function", "name": "get_time", "content": "12:00"}]
        with pytest.raises(ValueError, match="use tools="):
            managed.chat.completions.create(model="gpt-4.1-mini", messages=called)
        assert fake.completions_requests() == []  # nothing was sent
        # Left at the SDK's NOT_GIVEN, None or empty, they are not a use of it.
        for unused in ({"functions": openai.NOT_GIVEN}, {"function_call": None}, {"functions": []}):
            fake.enqueue_reply("Noon.", OpenAIUsage(5, 2))
            managed.chat.completions.create(model="gpt-4.1-mini", messages=question, **unused)
        fake.requests.clear()
        fake.enqueue_reply("It is noon.", OpenAIUsage(5, 2))
        wrap(client).chat.completions.create(model="gpt-4.1-mini", messages=question, **legacy)
        assert fake.completions_requests()[-1].json()["functions"][0]["name"] == "get_time"


def test_an_edited_message_and_a_regenerated_reply_leave_memory_with_their_branch(
    tmp_path: Path,
) -> None:
    # The log and the window took the new branch, but what the cut turns had added to
    # memory stayed: the user's next session was sent the edited "My cat is called
    # Tom" beside the edit's "Felix", and both regenerated replies.
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="chat-1", user_id="ana")

        def send(history: list[dict[str, str]], reply: str) -> None:
            fake.enqueue_reply(reply, AnthropicUsage(5, 2))
            wrapped.messages.create(model="claude-sonnet-4", max_tokens=64, messages=history)
            wrapped.flush()

        hello = [{"role": "user", "content": "Hi, I'm Ana."}]
        send(hello, "Hello Ana.")
        start = [*hello, {"role": "assistant", "content": "Hello Ana."}]
        send([*start, {"role": "user", "content": "My cat is called Tom."}], "Noted, Tom.")
        edited = [*start, {"role": "user", "content": "My cat is called Felix."}]
        send(edited, "Noted, Felix.")
        send(edited, "Felix it is.")  # regenerate: the same request again
        texts = sorted(r.text for r in memory.get_all(user_id="ana"))
        assert texts == sorted(
            ["Hi, I'm Ana.", "Hello Ana.", "My cat is called Felix.", "Felix it is."]
        ), texts
        hits = [h.record.text for h in memory.search("cat called", user_id="ana")]
        assert "My cat is called Tom." not in hits
        # An edit after the regenerate: the regenerate's question (whose memory is the
        # turn it said again) goes with the replies.
        send([*start, {"role": "user", "content": "My cat is called Luna."}], "Noted, Luna.")
        texts = sorted(r.text for r in memory.get_all(user_id="ana"))
        assert texts == sorted(
            ["Hi, I'm Ana.", "Hello Ana.", "My cat is called Luna.", "Noted, Luna."]
        ), texts
        # An edit whose call fails, retried: the retry's commit cuts the branch.
        fake.enqueue_error(529, "overloaded")
        renamed = [*start, {"role": "user", "content": "My cat is called Mia."}]
        with pytest.raises(Exception, match="overloaded"):
            wrapped.messages.create(model="claude-sonnet-4", max_tokens=64, messages=renamed)
        send(renamed, "Noted, Mia.")
        texts = sorted(r.text for r in memory.get_all(user_id="ana"))
        assert texts == sorted(
            ["Hi, I'm Ana.", "Hello Ana.", "My cat is called Mia.", "Noted, Mia."]
        ), texts


def _paused_reply(content: list[dict[str, Any]], stop: str) -> FakeResponse:
    return FakeResponse(
        json_body={
            "id": "msg_p",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10},
        }
    )


PAUSED = [
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
    {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_1",
        "content": [
            {
                "type": "web_search_result",
                "url": "https://x.example",
                "title": "X",
                "encrypted_content": "ENC" * 2000,
            }
        ],
    },
    {"type": "text", "text": "Found one source, searching more."},
    {"type": "server_tool_use", "id": "srvtoolu_2", "name": "web_search", "input": {"query": "q2"}},
]


def test_a_paused_server_tool_turn_goes_back_with_its_blocks(tmp_path: Path) -> None:
    """With server tools the API may stop a turn with ``pause_turn``; the app sends the
    paused turn back as it came so the server goes on. The wrapper sent its text alone:
    the pending ``server_tool_use`` and the search results already run were gone, and
    nothing failed (a review)."""
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="research", user_id="ana")
        fake.enqueue(_paused_reply(PAUSED, "pause_turn"))
        fake.enqueue(_paused_reply([{"type": "text", "text": "Both sources agree."}], "end_turn"))
        history: list[dict[str, Any]] = [{"role": "user", "content": "Research topic X."}]
        first = wrapped.messages.create(
            model="claude-sonnet-4-5", max_tokens=500, messages=history, tools=tools
        )
        assert first.stop_reason == "pause_turn"
        history.append({"role": "assistant", "content": first.content})  # SDK objects
        second = wrapped.messages.create(
            model="claude-sonnet-4-5", max_tokens=500, messages=history, tools=tools
        )
        assert second.content[0].text == "Both sources agree."
        sent = fake.messages_requests()[-1].json()["messages"]
        assert sent[-1]["role"] == "assistant"
        assert [b["type"] for b in sent[-1]["content"]] == [b["type"] for b in PAUSED]
        assert sent[-1]["content"][1]["content"][0]["encrypted_content"] == "ENC" * 2000
        assert sent[-1]["content"][3]["id"] == "srvtoolu_2"
        # Logged whole as one reply, which memory holds in place of the paused fragment.
        wrapped.flush()
        replies = [
            r.text for r in memory.get_all(user_id="ana") if r.metadata["role"] == "assistant"
        ]
        assert replies == ["Found one source, searching more.Both sources agree."]

        # A prefill of text blocks goes as given too.
        fake.enqueue(_paused_reply([{"type": "text", "text": " and more."}], "end_turn"))
        wrapped.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=50,
            messages=[
                {"role": "user", "content": "Say something."},
                {"role": "assistant", "content": [{"type": "text", "text": "Something"}]},
            ],
        )
        sent = fake.messages_requests()[-1].json()["messages"]
        assert sent[-1] == {"role": "assistant", "content": [{"type": "text", "text": "Something"}]}


def test_a_paused_turns_server_blocks_count_towards_the_window() -> None:
    # 6,000 characters of encrypted search results sent back: not 0 tokens in a budget.
    paused = Message(
        "assistant",
        "Found one source, searching more.",
        metadata={"wire": ("anthropic", {"role": "assistant", "content": PAUSED})},
    )
    assert 1500 <= media_tokens(paused) <= 1700
    text_only = [b for b in PAUSED if b["type"] == "text"]
    plain = Message("assistant", "x", metadata={"wire": ("anthropic", {"content": text_only})})
    assert media_tokens(plain) == 0


def test_what_the_user_said_before_the_apps_prefill_is_remembered(tmp_path: Path) -> None:
    """A request that ends with the app's own prefill ("{" for a JSON answer) has no
    question, and only a question was remembered: an app that always prefilled never
    remembered a word its user said (a review)."""
    with (
        FakeAnthropic() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, memory=memory, session="json", user_id="ana")
        history: list[dict[str, Any]] = []
        for said, answer in [
            ("I keep bees.", '"hobby": "bees"}'),
            ("I live in Porto.", '"city": "Porto"}'),
        ]:
            history.append({"role": "user", "content": said})
            fake.enqueue_reply(answer, AnthropicUsage(5, 2))
            wrapped.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=50,
                messages=[*history, {"role": "assistant", "content": "{"}],
            )
            history.append({"role": "assistant", "content": "{" + answer})
        wrapped.flush()
        users = [r.text for r in memory.get_all(user_id="ana") if r.metadata["role"] == "user"]
        assert sorted(users) == ["I keep bees.", "I live in Porto."]
