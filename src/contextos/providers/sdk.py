"""The vendors' SDK clients, built in one place from a key or from the settings.

contextos mostly wraps a client the caller built; where it builds one itself (the
``Chat`` of ``contextos chat``, an LLM for extraction from the settings, a token
counter given only a key) it does so here, so the missing-extra error, the key
rules and the OpenAI-compatible-server case are written once.
"""

from __future__ import annotations

from typing import Any, Literal

from ..config import Settings
from ..errors import ConfigError, MissingExtraError

Vendor = Literal["anthropic", "openai"]


def sdk_client(vendor: Vendor, api_key: str | None, base_url: str | None = None) -> Any:
    """``anthropic.Anthropic`` or ``openai.OpenAI`` for ``api_key`` (and ``base_url``).

    Raises:
        MissingExtraError: that vendor's SDK (an optional extra) is not installed.
    """
    try:
        if vendor == "anthropic":
            import anthropic

            return anthropic.Anthropic(api_key=api_key, base_url=base_url)
        import openai

        return openai.OpenAI(api_key=api_key, base_url=base_url)
    except ImportError:
        raise MissingExtraError(vendor, vendor) from None


def client_from_settings(vendor: Vendor, settings: Settings, base_url: str | None = None) -> Any:
    """The SDK client for ``vendor`` with the configured key.

    OpenAI also takes ``OPENAI_BASE_URL`` (or ``base_url``) alone: an
    OpenAI-compatible server (vLLM, llama.cpp, Ollama) usually needs no key, and
    the SDK insists on one, so it gets "none".

    Raises:
        ConfigError: the settings hold no key (nor, for OpenAI, a server URL).
        MissingExtraError: that vendor's SDK is not installed.
    """
    if vendor == "anthropic":
        if not settings.anthropic_api_key:
            raise ConfigError(
                "no Anthropic API key: set ANTHROPIC_API_KEY (or use --provider offline)"
            )
        return sdk_client("anthropic", settings.anthropic_api_key, base_url)
    url = base_url or settings.openai_base_url
    key = settings.openai_api_key or ("none" if url else None)
    if not key:
        raise ConfigError(
            "no OpenAI API key: set OPENAI_API_KEY, or OPENAI_BASE_URL for "
            "an OpenAI-compatible server (or use --provider offline)"
        )
    return sdk_client("openai", key, url)
