"""Copies of a user's text held in the process, beside the store, after ``forget``.

The store's erasure is tested elsewhere; these are the objects that live on in the
application: the exact Anthropic token counter a Memory may count with (its cache of
counts), the extractor's vocative stripping (which once cached patterns built from
the speakers' names, and ``re`` caches every compiled pattern), and a wrapped
client's ``client.calls``, the application's log, which ``forget`` does not reach
and which the application clears. The real ``anthropic`` SDK against the loopback
fake; a real SQLite file.
"""

from __future__ import annotations

import gc
import sys
import types
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anthropic")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import AnthropicTokenCounter, wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.text.sentences import strip_filler  # noqa: E402

MODEL = "claude-haiku-4-5"

#: Not walked into: code, and what belongs to the SDK or the network (the SDK client's
#: connection pool is the SDK's, not a copy contextos keeps).
_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
_FOREIGN = ("anthropic", "openai", "httpx", "httpcore", "threading", "_thread", "socket", "ssl")


def _holding(roots: list[Any], needle: str) -> list[str]:
    """The strings (or bytes) holding ``needle`` reachable from ``roots``."""
    seen: set[int] = set()
    found: list[str] = []
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            if needle in obj:
                found.append(obj[:80])
            continue
        if isinstance(obj, (bytes, bytearray)):
            if needle.encode() in obj:
                found.append(repr(bytes(obj[:80])))
            continue
        if isinstance(obj, _OPAQUE) or type(obj).__module__.split(".")[0] in _FOREIGN:
            continue
        if isinstance(obj, dict):
            stack += [*obj.keys(), *obj.values()]
            continue
        stack += gc.get_referents(obj)
    return found


def _contextos_modules() -> list[Any]:
    """Every contextos module's globals, and ``re``'s (its cache of compiled patterns)."""
    names = [n for n in sys.modules if n.startswith("contextos") or n == "re"]
    return [vars(sys.modules[n]) for n in names if sys.modules[n] is not None]


def test_the_exact_token_counter_caches_counts_not_texts(
    fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    secret = "qzcountedmarker51"
    counter = AnthropicTokenCounter(anthropic_client, model=MODEL)
    text = f"my bank PIN is {secret}"
    before = len(fake_anthropic.requests)
    n = counter.count(text)
    assert n > 0 and counter.count(text) == n  # cached: one request for the text
    assert len(fake_anthropic.requests) - before == 2  # the framing once, the text once
    assert _holding([counter], secret) == []


def test_vocative_stripping_keeps_no_speaker_name() -> None:
    name = "Qzvocativename"
    said = f"I loved the show, {name}!"
    assert strip_filler(said, [name, "Caroline"]) == "I loved the show!"
    assert strip_filler(f"{name[:5]}, you did it", [name]) == "you did it"
    assert strip_filler("Ǭzq! see you", ["Ǭzq"]) == "see you"  # a short name, whole
    # Not the names, nor the three letters a long one is matched by.
    for held in (name, name[:3], "Ǭzq"):
        assert _holding(_contextos_modules(), held) == [], held


def test_client_calls_is_the_applications_log_and_clears(tmp_path: Path) -> None:
    said, answer = "remember qzwrappedmarker52", "noted qzwrappedmarker53"
    with (
        FakeAnthropic(reply=lambda _req: answer) as fake,
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m,
    ):
        import anthropic

        sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0)
        client = wrap(sdk, m, session="s1", user_id="ana")
        client.messages.create(
            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": said}]
        )
        client.flush()
        assert m.forget("ana") > 0
        assert m.search("qzwrappedmarker52", user_id="ana") == []
        # forget does not reach the application's log (docs/providers.md) ...
        assert [c.reply.content for c in client.calls if c.reply] == [answer]
        usage, count = client.calls.total(), client.calls.count
        client.calls.clear()  # ... the application drops it
        assert len(client.calls) == 0 and list(client.calls) == []
        assert client.calls.total() == usage and client.calls.count == count == 1
        assert _holding([client.calls], "qzwrappedmarker5") == []
        sdk.close()
