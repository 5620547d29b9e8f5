"""A wrapped call the provider refuses before any reply (529, 500, 429...): its question
is in the session's log, and is remembered as a cut stream's question is (a review:
"I am allergic to peanuts" said before a 529 never reached memory, so the user's next
session did not know it). Once only when the app retries it. The real SDK clients
against the loopback fakes, a real SQLite memory file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.errors import ContextosError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import OpenAIUsage  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402

SAID = "I am allergic to peanuts."


def _texts(memory: Memory) -> list[str]:
    return [r.text for r in memory.get_all(user_id="ann")]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_question_whose_call_failed_is_remembered_once(
    tmp_path: Path, provider: str, stream: bool
) -> None:
    fake_server, sdk_client = fake_and_sdk(provider)
    with (
        fake_server() as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        sdk_client(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory=memory, session="chat-1", user_id="ann")

        def ask(text: str) -> None:
            messages = [{"role": "user", "content": text}]
            if provider == "anthropic":
                reply = client.messages.create(
                    model="claude-haiku-4-5", max_tokens=50, messages=messages, stream=stream
                )
            else:
                reply = client.chat.completions.create(
                    model="gpt-4.1-mini", messages=messages, stream=stream
                )
            if stream:
                for _ in reply:
                    pass

        def answer(text: str) -> None:
            if provider == "anthropic":
                fake.enqueue_reply(text, AnthropicUsage(5, 2), stream=stream)
            else:
                fake.enqueue_reply(text, OpenAIUsage(5, 2), stream=stream)

        fake.enqueue_error(529 if provider == "anthropic" else 500, "overloaded")
        with pytest.raises(ContextosError):
            ask(SAID)
        client.flush()
        assert SAID in _texts(memory)  # before: only once a later call's commit ran, never

        answer("Noted.")  # the app retries the same question: remembered once
        ask(SAID)
        client.flush()
        assert _texts(memory).count(SAID) == 1

        answer("Rice and vegetables.")
        ask("What can I eat tonight?")
        client.flush()
        assert _texts(memory).count(SAID) == 1
        hits = memory.search("peanuts allergy", user_id="ann", limit=3)
        assert SAID in [h.record.text for h in hits]


def test_an_inferring_chat_keeps_the_exchange_when_its_extracting_model_fails(
    tmp_path: Path,
) -> None:
    """The extraction runs in the commit after the reply; its model answering 429 (it
    often shares the chat's key) lost the message from memory for good, and failed the
    user's next, unrelated message, which was then not logged (a review)."""
    from contextos.llm.clients import AnthropicLLM
    from contextos.memory.extract_llm import LLMExtractor
    from contextos.providers.chat import Chat

    def reply(body: dict[str, Any]) -> str:
        if "output_config" in body:  # the extractor's structured call
            said = json.dumps(body["messages"])
            facts = [{"text": "Ann has a cat.", "type": "semantic"}] if "cat" in said else []
            return json.dumps({"facts": facts})
        return "Sure thing."

    with (
        FakeAnthropic(reply=reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        extractor = LLMExtractor(AnthropicLLM(sdk))
        with Memory(
            tmp_path / "m.db",
            embedder=HashEmbedder(),
            background_embedding=False,
            extractor=extractor,
        ) as memory:
            chat = Chat(memory, provider="anthropic", session_id="c", user_id="ann", client=sdk)
            chat.send("I have a cat.")
            chat.context.flush()
            fake.enqueue_reply("Sure thing.", AnthropicUsage(5, 2))  # the chat's answer
            fake.enqueue_error(429, "slow down", retry_after=0)  # then its extraction's
            chat.send(SAID)
            assert chat.send("What can I eat?").reply == "Sure thing."  # not the old 429
            chat.context.flush()
            texts = _texts(memory)
            assert "Ann has a cat." in texts  # extracted while the model answered
            assert SAID in texts  # kept as said when it did not
            logged = [t.message.content for t in chat.context.session.turns()]
            assert "What can I eat?" in logged
            chat.close()
