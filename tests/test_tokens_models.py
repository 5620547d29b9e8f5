"""Token counting (offline cl100k) and the model registry."""

from __future__ import annotations

import pytest

from contextos import ConfigError, Message, count_tokens, default_tokenizer
from contextos.models import MODELS, get_model
from contextos.tokens import CharEstimateTokenizer, Tokenizer


def test_cl100k_counts_known_strings_offline() -> None:
    tok = default_tokenizer()
    assert tok.count("hello world") == 2
    assert tok.count("") == 0
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
    assert tok.count("<|endoftext|>") > 1  # special tokens are counted as text, never raise


def test_message_counts_include_framing() -> None:
    tok = default_tokenizer()
    msgs = [Message(role="user", content="hello world")]
    # 3 framing + role ("user" = 1) + content (2) + 3 reply primer
    assert tok.count_messages(msgs) == 3 + 1 + 2 + 3
    assert tok.count_messages([]) == 3


def test_truncate_cuts_on_token_boundary() -> None:
    tok = default_tokenizer()
    text = "one two three four five six"
    cut = tok.truncate(text, 3)
    assert tok.count(cut) == 3 and text.startswith(cut)
    assert tok.truncate("short", 10) == "short"


def test_tokenizers_implement_the_protocol() -> None:
    assert isinstance(default_tokenizer(), Tokenizer)
    assert isinstance(CharEstimateTokenizer(), Tokenizer)
    assert CharEstimateTokenizer().count("abcdefgh") == 2


def test_registry_values_are_consistent() -> None:
    for m in MODELS.values():
        assert m.context_window > m.max_output_tokens > 0
        p = m.prices
        assert p.cache_read <= p.input <= p.cache_write_5m <= p.cache_write_1h or m.provider != "anthropic"
        if m.provider == "anthropic":
            assert p.cache_write_5m == pytest.approx(p.input * 1.25)
            assert p.cache_read == pytest.approx(p.input * 0.1)


def test_aliases_and_unknown_models() -> None:
    assert get_model("sonnet").name == "claude-sonnet-4-5"
    assert get_model("claude-haiku-4-5-20251001").min_cache_tokens == 4096
    with pytest.raises(ConfigError, match="known models"):
        get_model("gpt-7-ultra")


def test_input_cost() -> None:
    assert get_model("claude-sonnet-4-5").input_cost(1_000_000) == pytest.approx(3.0)
