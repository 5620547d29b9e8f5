"""The wire-format fakes shipped in ``contextos.testing``, as the SDKs and a stopped
client meet them: a body that is not a JSON object, or lacks a required field, is the
provider's 400 (it was a dropped connection and a traceback in the fake's thread), and
a request whose client went away mid-body is dropped, not answered with a traceback."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_http import FakeHTTPServer
from contextos.testing.fake_openai import FakeOpenAI

ROUTES = {
    "openai": (FakeOpenAI, "/v1/chat/completions", {"authorization": "Bearer test"}),
    "anthropic": (FakeAnthropic, "/v1/messages", {"x-api-key": "test"}),
}
#: The smallest request each provider answers.
VALID = {
    "openai": {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]},
    "anthropic": {
        "model": "claude-sonnet-4",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    },
}


@pytest.mark.parametrize("provider", sorted(ROUTES))
@pytest.mark.parametrize(
    "body", [b"", b"[]", b"null", b'"text"', b"{not json", b"{}", b'{"model": "m"}']
)
def test_a_body_that_is_not_a_json_object_is_a_400(provider: str, body: bytes) -> None:
    fake_class, path, headers = ROUTES[provider]
    with fake_class() as fake:
        answer = httpx.post(
            f"http://127.0.0.1:{fake.port}{path}", content=body, headers=headers, timeout=10
        )
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json()


@pytest.mark.parametrize("provider", sorted(ROUTES))
def test_a_client_gone_mid_body_is_dropped_quietly(
    provider: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A process stopped mid-call (``bench wrap`` under SIGTERM) left the fake a
    request whose body never came: it answered it anyway, and the AttributeError of a
    missing body was printed by the server thread in the middle of the run's output."""
    fake_class, path, headers = ROUTES[provider]
    fake: FakeHTTPServer
    with fake_class() as fake:
        head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
            sock.sendall(head.encode() + b'{"model": "m", "mess')
        time.sleep(0.5)  # the server thread reads to the end of what came
        assert fake.requests == []
        url = f"http://127.0.0.1:{fake.port}{path}"
        whole = httpx.post(url, json=VALID[provider], headers=headers, timeout=10)
        assert whole.status_code == 200, whole.text
    assert "Traceback" not in capfd.readouterr().err
