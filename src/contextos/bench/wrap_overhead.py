"""How much time ``contextos.wrap`` adds to an SDK call (``contextos bench wrap``).

Both calls go through the real SDK client to the same loopback fake server
(:mod:`contextos.testing.fake_anthropic` / ``fake_openai``), interleaved one
bare, one wrapped, so drift on a shared machine hits both alike; the result is
the median of each and their difference.

Two modes:

- ``passthrough``: ``wrap(client)`` without memory or session; the bare call
  sends the same arguments.
- ``session``: ``wrap(client, memory=..., session=...)`` on a SQLite file in a
  temporary directory; each wrapped call assembles the window (session log,
  memory search, breakpoints), logs both turns and remembers the exchange. The
  bare call then re-sends the exact body the wrapped call put on the wire, so
  the difference is the wrapper's own work, not a bigger request.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import MissingExtraError
from ..providers.wrapper import WrappedClient, wrap
from ..testing.fake_http import FakeHTTPServer
from .sigterm import stop_if_terminated

Provider = Literal["anthropic", "openai"]
Mode = Literal["passthrough", "session"]

#: The issue's target: the wrapper adds at most this many milliseconds (median).
TARGET_MS = 10.0

_SYSTEM = " ".join(f"Rule {i}: answer from the memories when they apply." for i in range(60))
_FACTS = [
    "Ana is allergic to peanuts.",
    "Ana's sister is called Bea.",
    "Ana moved to Lisbon in 2021.",
    "Ana prefers short answers.",
    "Ana is learning the cello.",
    "Ana works as a nurse.",
]


@dataclass(frozen=True)
class OverheadResult:
    """Medians of one interleaved run (milliseconds)."""

    provider: str
    mode: str
    stream: bool
    calls: int
    bare_median_ms: float
    wrapped_median_ms: float
    bare_p90_ms: float
    wrapped_p90_ms: float
    embedder: str

    @property
    def overhead_ms(self) -> float:
        """Median wrapped minus median bare."""
        return self.wrapped_median_ms - self.bare_median_ms

    @property
    def within_target(self) -> bool:
        return self.overhead_ms <= TARGET_MS


def _sdk(provider: Provider) -> Any:
    try:
        if provider == "anthropic":
            import anthropic

            return anthropic
        import openai

        return openai
    except ImportError:
        raise MissingExtraError(provider, provider) from None


@contextmanager
def _server(provider: Provider) -> Iterator[tuple[FakeHTTPServer, Any]]:
    sdk = _sdk(provider)
    if provider == "anthropic":
        from ..testing.fake_anthropic import FakeAnthropic

        fake: Any = FakeAnthropic()
        make = sdk.Anthropic
    else:
        from ..testing.fake_openai import FakeOpenAI

        fake = FakeOpenAI()
        make = sdk.OpenAI
    with fake:
        # No proxy (``trust_env=False``): the fake server is on loopback, and an
        # ``HTTP_PROXY`` without ``127.0.0.1`` in ``NO_PROXY`` failed every call with
        # "Connection error". The SDK's own httpx client otherwise, as the bare call has.
        client = make(
            base_url=fake.base_url,
            api_key="bench",
            max_retries=0,
            http_client=sdk.DefaultHttpxClient(trust_env=False),
        )
        try:
            yield fake, client
        finally:
            client.close()


def _send(provider: Provider, target: Any, kwargs: dict[str, Any], stream: bool) -> None:
    if provider == "anthropic":
        result = (
            target.messages.create(**kwargs, stream=stream)
            if stream
            else target.messages.create(**kwargs)
        )
    else:
        result = (
            target.chat.completions.create(**kwargs, stream=stream)
            if stream
            else target.chat.completions.create(**kwargs)
        )
    if stream:
        for _ in result:
            pass


def _call_kwargs(provider: Provider, question: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "system": _SYSTEM,
            "messages": [{"role": "user", "content": question}],
        }
    return {
        "model": "gpt-4.1-mini",
        "max_tokens": 256,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": question}],
    }


def _timed(func: Callable[[], None]) -> float:
    started = time.perf_counter()
    func()
    return (time.perf_counter() - started) * 1000


def _sent_body(fake: FakeHTTPServer) -> dict[str, Any]:
    body = dict(fake.requests[-1].json())
    body.pop("stream", None)
    body.pop("stream_options", None)
    return body


def _run(
    provider: Provider,
    mode: Mode,
    calls: int,
    warmup: int,
    stream: bool,
    wrapped: WrappedClient,
    client: Any,
    fake: FakeHTTPServer,
) -> tuple[list[float], list[float]]:
    bare_ms: list[float] = []
    wrapped_ms: list[float] = []
    for i in range(warmup + calls):
        stop_if_terminated()  # a SIGTERM whose exception was swallowed (see there)
        kwargs = _call_kwargs(provider, f"Question {i}: what do you know about Ana?")
        w = _timed(lambda kw=kwargs: _send(provider, wrapped, kw, stream))  # type: ignore[misc]
        bare_kwargs = _sent_body(fake) if mode == "session" else kwargs
        b = _timed(lambda kw=bare_kwargs: _send(provider, client, kw, stream))  # type: ignore[misc]
        if i >= warmup:
            wrapped_ms.append(w)
            bare_ms.append(b)
    return bare_ms, wrapped_ms


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def measure(
    provider: Provider = "anthropic",
    *,
    mode: Mode = "passthrough",
    calls: int = 200,
    warmup: int = 10,
    stream: bool = False,
    embedder: str = "hash",
) -> OverheadResult:
    """Run ``calls`` interleaved bare/wrapped calls and return both medians.

    ``embedder`` (session mode): ``hash`` (fast, deterministic), or ``minilm-int8``
    (the real default) or ``minilm`` (float32), to include query embedding in the overhead.
    """
    if calls < 1 or warmup < 0:
        raise ValueError("calls must be >= 1 and warmup >= 0")
    # The memory is closed (its embedding worker stopped) before its folder goes, however
    # the block ends: a SIGTERM during its first add left the worker reading a removed
    # file, and its "disk I/O error" was printed after "terminated" (a CI run, s55).
    with (
        _server(provider) as (fake, client),
        tempfile.TemporaryDirectory() as tmp,
        ExitStack() as stack,
    ):
        if mode == "session":
            from ..embed import make_embedder
            from ..memory import Memory

            memory = stack.enter_context(
                Memory(
                    Path(tmp) / "bench.db",
                    embedder=make_embedder(embedder),
                    background_embedding=True,
                )
            )
            memory.add(list(_FACTS), user_id="ana", session_id="earlier")
            wrapped = wrap(client, memory=memory, session="bench", user_id="ana")
        else:
            wrapped = wrap(client)
        stack.callback(wrapped.flush)  # before the memory closes (last in, first out)
        bare, timed = _run(provider, mode, calls, warmup, stream, wrapped, client, fake)
    return OverheadResult(
        provider,
        mode,
        stream,
        calls,
        statistics.median(bare),
        statistics.median(timed),
        _p90(bare),
        _p90(timed),
        embedder if mode == "session" else "-",
    )
