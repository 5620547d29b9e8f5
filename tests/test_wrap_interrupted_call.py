"""A wrapped call stopped by Ctrl-C, or ``contextos chat`` with a provider stopped by
SIGTERM / SIGHUP / Ctrl-C, while the model is answering: the question, logged before the
call, is remembered as a failed call's is.

Was (a review): ``failing()`` caught ``Exception`` only, and a ``KeyboardInterrupt``
(Ctrl-C, and the CLI's SIGTERM/SIGHUP exception) skipped it: the question stayed in the
log unanswered, sent on every later call, and never reached memory ("I am vegetarian"
gone from the user's next session). The real SDK clients against the loopback fakes
(their reply held back until the signal has landed), real signals, a real SQLite file;
the CLI in its own process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anthropic")
pytest.importorskip("openai")

from cli_support import cli_env, reaped, run_cli  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402

SAID = "I am vegetarian and allergic to peanuts."


def _held(release: threading.Event) -> Callable[[dict[str, Any]], str]:
    """A fake's reply that comes only once ``release`` is set (30 s at most)."""

    def reply(_body: dict[str, Any]) -> str:
        release.wait(30)
        return "Noted."

    return reply


def _when_asked(fake: Any, then: Callable[[], None]) -> threading.Thread:
    """A thread that runs ``then`` once ``fake`` has received a request."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the SDK is waiting for the reply
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_call_interrupted_while_the_model_answers_remembers_its_question(
    tmp_path: Path, provider: str
) -> None:
    fake_server, sdk_client = fake_and_sdk(provider)
    release = threading.Event()
    main = threading.main_thread().ident
    assert main is not None
    with (
        fake_server(reply=_held(release)) as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
        sdk_client(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, memory=memory, session="s", user_id="ann")
        messages = [{"role": "user", "content": SAID}]
        ctrl_c = _when_asked(fake, lambda: signal.pthread_kill(main, signal.SIGINT))
        try:
            with pytest.raises(KeyboardInterrupt):
                if provider == "anthropic":
                    client.messages.create(
                        model="claude-haiku-4-5", max_tokens=50, messages=messages
                    )
                else:
                    client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
        finally:
            release.set()
            ctrl_c.join()
        client.flush()
        assert [t.message.content for t in client.context.session.turns()] == [SAID]
        assert [r.text for r in memory.get_all(user_id="ann")] == [SAID]
        assert list(client.calls) == []  # no reply came: nothing billed is lost


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"]
)
def test_chat_with_a_provider_stopped_mid_answer_remembers_the_question(
    tmp_path: Path, sig: signal.Signals
) -> None:
    db = tmp_path / "c.db"
    release = threading.Event()
    with FakeOpenAI(reply=_held(release)) as fake:
        proc = subprocess.Popen(
            [sys.executable, "-m", "contextos", "--json", "chat", "--provider", "openai"]
            + ["--base-url", fake.base_url, "-m", "gpt-4.1-mini", "--no-show-window"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(db),
        )
        with reaped(proc):
            assert proc.stdin is not None
            proc.stdin.write(f"{SAID}\n".encode())
            proc.stdin.flush()
            _when_asked(fake, lambda: proc.send_signal(sig)).join()
            try:
                _, err = proc.communicate(timeout=60)
            finally:
                release.set()
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err.decode()
    turns = json.loads(run_cli("--json", "session", "show", "chat", db=db).stdout)["turns"]
    assert [t["message"]["content"] for t in turns] == [SAID]  # asked, never answered
    memories = json.loads(run_cli("--json", "list", "-u", "me", db=db).stdout)
    assert any("vegetarian" in m["text"] for m in memories), memories
