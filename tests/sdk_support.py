"""The provider SDKs and their loopback fakes, by provider name, for tests that run the
same steps against Anthropic and OpenAI."""

from __future__ import annotations

from typing import Any

from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_openai import FakeOpenAI


def fake_and_sdk(provider: str) -> tuple[Any, Any]:
    """(the fake server class, the SDK client class) of ``provider`` ("anthropic" or
    "openai"); the SDK is imported here, so a test module that skips without it may
    call this."""
    if provider == "anthropic":
        import anthropic

        return FakeAnthropic, anthropic.Anthropic
    import openai

    return FakeOpenAI, openai.OpenAI
