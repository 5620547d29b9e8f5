"""Chat histories in the shapes apps keep them (review s36, ``multimodal``).

- An OpenAI assistant turn given as content parts with a ``refusal`` part, or as an
  ``audio`` reply (``{"role": "assistant", "audio": {"id": ...}}``), was logged empty
  and sent on every later call as ``content: ""``: the refusal is its text, the audio
  reply its transcript or the ``[audio]`` placeholder. The real SDK against the fake.
- ``Memory.add`` of a chat history names the message at fault and says what to do;
  a ``developer`` message is a system message, as the OpenAI wrapper reads it.
"""

from __future__ import annotations

from typing import Any

import pytest

from contextos import Filter, Memory, Scope
from contextos.engine.session import Session
from contextos.providers import wrap


def logged(memory: Memory, sid: str) -> list[tuple[str, str]]:
    return [
        (t.message.role, t.message.content) for t in Session(memory, sid, user_id="ana").turns()
    ]


def sent(fake_openai: Any) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in fake_openai.requests[-1].json()["messages"]]


# -- an assistant turn of refusal parts, or an audio reply ------------------------------


def test_a_refusal_part_is_the_assistant_turns_text(
    memory: Memory, fake_openai: Any, openai_client: Any
) -> None:
    client = wrap(openai_client, memory, "s1", user_id="ana")
    refusal = "I can't help with picking locks."
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "How do I pick a lock?"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": refusal}]},
            {"role": "user", "content": "OK, how do I call a locksmith?"},
        ],
    )
    client.flush()
    assert sent(fake_openai)[1] == ("assistant", refusal)
    assert logged(memory, "s1")[1] == ("assistant", refusal)


@pytest.mark.parametrize(
    ("audio", "text"),
    [
        ({"id": "audio_abc123"}, "[audio]"),  # as OpenAI's docs send it back
        (  # the SDK's reply message appended as it is
            {"id": "audio_abc123", "data": "UklGRg==", "expires_at": 1, "transcript": "Hi Ana!"},
            "Hi Ana!",
        ),
    ],
    ids=["id-only", "with-transcript"],
)
def test_an_audio_reply_is_no_empty_turn(
    memory: Memory, fake_openai: Any, openai_client: Any, audio: dict[str, Any], text: str
) -> None:
    client = wrap(openai_client, memory, "s2", user_id="ana")
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Say hello to me."},
        {"role": "assistant", "content": None, "audio": audio},
        {"role": "user", "content": "And now in French?"},
    ]
    reply = client.chat.completions.create(model="gpt-4o-audio-preview", messages=history)
    assert sent(fake_openai)[1] == ("assistant", text)
    history += [reply.choices[0].message, {"role": "user", "content": "Thanks"}]
    client.chat.completions.create(model="gpt-4o-audio-preview", messages=history)
    client.flush()
    # Sent as text on the later call too: the audio id expires, the text does not.
    assert sent(fake_openai)[:2] == [("user", "Say hello to me."), ("assistant", text)]
    assert [role for role, _ in sent(fake_openai)] == ["user", "assistant"] * 2 + ["user"]
    assert logged(memory, "s2")[:3] == [
        ("user", "Say hello to me."),
        ("assistant", text),
        ("user", "And now in French?"),
    ]
    assert len(logged(memory, "s2")) == 6 and all(text for _, text in logged(memory, "s2"))


# -- Memory.add of a chat history ---------------------------------------------------------


def stored(memory: Memory) -> list[Any]:
    return memory.store.list(Filter(scope=Scope(tenant=memory.tenant, user_id="ana")))


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (
            {"role": "user", "content": [{"type": "text", "text": "my dog Rex"}]},
            TypeError,
            r"^message 2: 'content' is a list of parts .* pass the text parts joined",
        ),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
            },
            TypeError,
            r"^message 2: 'content' is None \(a message of tool calls\).*leave the message out",
        ),
        ({"role": "bot", "content": "hello"}, ValueError, r"^message 2: unknown role 'bot'"),
    ],
    ids=["content-parts", "tool-calls", "unknown-role"],
)
def test_an_add_names_the_message_at_fault(
    memory: Memory, bad: dict[str, Any], error: type[Exception], match: str
) -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, bad]
    with pytest.raises(error, match=match):
        memory.add(history, user_id="ana")
    assert stored(memory) == []  # nothing of the add written


def test_a_developer_message_is_remembered_as_a_system_one(memory: Memory) -> None:
    history = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "I live in Lyon."},
    ]
    wrote = memory.add(history, user_id="ana")
    assert [(r.text, r.metadata["role"]) for r in wrote] == [
        ("Answer in French.", "system"),
        ("I live in Lyon.", "user"),
    ]


def test_the_http_api_reads_a_developer_message_as_memory_add_does(tmp_path: Any) -> None:
    # Memory.add took it and the HTTP API answered 422: one history, two verdicts.
    from cli_support import keyed_client

    with keyed_client(str(tmp_path / "m.db"), "--embedder", "hash") as client:
        history = [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "I live in Lyon."},
        ]
        added = client.post("/v1/memories", json={"messages": history, "user_id": "ana"})
        assert added.status_code == 201, added.text
        roles = {r["text"]: r["metadata"]["role"] for r in added.json()["results"]}
        assert roles == {"Answer in French.": "system", "I live in Lyon.": "user"}
        logged = client.post("/v1/sessions/s/turns", json={"messages": history, "user_id": "ana"})
        assert logged.status_code == 201, logged.text
        listed = client.get("/v1/sessions/s/turns")
        assert listed.status_code == 200, listed.text
        turns = listed.json()["results"]
        assert [t["role"] for t in turns] == ["system", "user"]
