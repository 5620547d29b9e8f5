"""A logged tool call whose arguments are not strict JSON must not break its session.

Python's parser takes ``NaN``, ``Infinity`` and ``1e999`` (as inf), which are not JSON,
and raises RecursionError on arguments nested ~2,000 deep. Such a call, logged (the
OpenAI wrapper logs what the model wrote), made every later Anthropic request of the
session fail: the SDK refused to send it ("Out of range float values are not JSON
compliant"), a wrapped client raised RecursionError on every call, the HTTP window
answered 500 (or sent ``null`` for the value). It is now left out, with its results, as
a call whose arguments are not an object (``["-la"]``) already was. The real
``anthropic`` SDK client against the loopback fake, a real server on loopback, real
SQLite files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.cache.render import tool_input  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store import open_store  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.types import Message, ToolCall  # noqa: E402
from ui_support import LiveServer, auth, live_server  # noqa: E402

MODEL = "claude-sonnet-4-6"
DEEP = '{"a":' + "[" * 2000 + "]" * 2000 + "}"
HOSTILE = [
    pytest.param('{"n": NaN}', id="nan"),
    pytest.param('{"n": Infinity}', id="infinity"),
    pytest.param('{"n": -Infinity}', id="minus-infinity"),
    pytest.param('{"n": 1e999}', id="out-of-range"),
    pytest.param(DEEP, id="nested-2000"),
]
#: Escaped halves of a surrogate pair: JSON text, but no Unicode text (a review). Sent
#: mended (U+FFFD), with the call's results (session 49: dropped, a tool loop asked the
#: model the same question until it gave up).
MENDED = [
    pytest.param('{"path": "\\ud800"}', {"path": "\ufffd"}, id="lone-surrogate-value"),
    pytest.param('{"\\udc00": 1}', {"\ufffd": 1}, id="lone-surrogate-key"),
]


def _log(session: Session, arguments: str) -> None:
    session.add(
        Message("user", "compute it"),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "calc", arguments),)),
        Message("tool", "42", tool_call_id="call_1"),
        Message("assistant", "It is 42."),
    )


def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for m in body["messages"] for b in m["content"]]


@pytest.mark.parametrize("arguments", HOSTILE)
def test_such_arguments_are_not_a_tool_use_input(arguments: str) -> None:
    assert tool_input(arguments) is None


@pytest.mark.parametrize(("arguments", "sent"), MENDED)
def test_lone_surrogates_are_sent_mended(arguments: str, sent: dict[str, Any]) -> None:
    assert tool_input(arguments) == sent


def test_strict_json_numbers_still_read_as_before() -> None:
    given = '{"n": 1.5, "big": 1e308, "small": -2.5e-300, "i": 12, "z": -0.0}'
    assert tool_input(given) == {"n": 1.5, "big": 1e308, "small": -2.5e-300, "i": 12, "z": 0.0}
    assert isinstance(tool_input('{"n": 1.5}')["n"], float)  # type: ignore[index]


@pytest.mark.parametrize("arguments", HOSTILE)
def test_wrapped_calls_succeed_and_leave_the_call_out(tmp_path: Path, arguments: str) -> None:
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder())
    try:
        _log(Session(memory, "fallback", user_id="ana"), arguments)
        with (
            FakeAnthropic() as fake,
            anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as raw,
        ):
            client = wrap(raw, memory=memory, session="fallback", user_id="ana")
            for question in ["and now?", "and then?"]:  # every later call, not just one
                reply = client.messages.create(
                    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": question}]
                )
                assert reply.content[0].text == f"You said: {question}"
                blocks = _blocks(fake.messages_requests()[-1].json())
                kinds = {b["type"] for b in blocks}
                assert "tool_use" not in kinds and "tool_result" not in kinds
                assert {"type": "text", "text": "It is 42."} in [
                    {k: v for k, v in b.items() if k != "cache_control"} for b in blocks
                ]
    finally:
        memory.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server, its store's file and a key of tenant ``acme``."""
    db = tmp_path_factory.mktemp("srv") / "w.db"
    with live_server(db) as live:
        yield live, db, live.issue_key("acme")


@pytest.mark.parametrize("arguments", HOSTILE)
def test_the_http_anthropic_window_answers_200_without_the_call(
    server: tuple[LiveServer, Path, str], request: pytest.FixtureRequest, arguments: str
) -> None:
    live, db, key = server
    sid = f"hostile-{request.node.callspec.id}"
    store = open_store(db)  # logged by the library (or a wrapped SDK): HTTP logs no calls
    try:
        _log(Session(store, sid, tenant="acme"), arguments)
    finally:
        store.close()
    resp = live.http.post(
        f"/v1/sessions/{sid}/window",
        json={"question": "what now", "token_budget": 8000, "format": "anthropic"},
        headers=auth(key),
    )
    assert resp.status_code == 200, resp.text
    blocks = _blocks(resp.json()["request"])
    assert not {"tool_use", "tool_result"} & {b["type"] for b in blocks}
    assert [b["text"] for b in blocks if b["type"] == "text"][:2] == ["compute it", "It is 42."]
