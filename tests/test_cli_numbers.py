"""Numeric options and settings refuse nan, inf and out-of-range values, before
anything starts.

click's FloatRange lets them through (nan compares false with every bound):
``serve --rate nan`` served with no rate limit, ``serve --header-timeout nan`` gave
408s at random, ``bench serve --seconds nan`` ran a load of no length.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from contextos.cli.main import cli
from contextos.config import load_settings
from contextos.errors import ConfigError


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--rate", "nan"],
        ["serve", "--header-timeout", "nan"],
        ["serve", "--header-timeout", "inf"],
        ["mcp", "--transport", "streamable-http", "--rate", "inf"],
        ["bench", "serve", "--seconds", "nan"],
        ["search", "coffee", "-u", "ana", "--min-score", "nan"],
        ["bench", "replay", "--trigger", "nan"],
    ],
)
def test_a_number_that_is_not_finite_is_refused(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "n.db"), *args])
    assert result.exit_code == 2, result.output
    assert "is not a finite number" in result.output
    assert "serving on" not in result.output
    assert not (tmp_path / "n.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_an_embedding_batch_size_below_one_is_refused(tmp_path: Path, value: str) -> None:
    # 0 was accepted: the worker embedded nothing, for ever, and said nothing.
    with pytest.raises(ConfigError, match="CONTEXTOS_EMBED_BATCH_SIZE"):
        load_settings({"CONTEXTOS_EMBED_BATCH_SIZE": value}, db=str(tmp_path / "s.db"))
    assert load_settings({"CONTEXTOS_EMBED_BATCH_SIZE": "16"}, db="x.db").embed_batch_size == 16
