"""The extractor's unit of comparison, a word (``text.sentences.words``), shared by
content words and the claim matcher's stems: one tokenization, case-insensitive."""

from __future__ import annotations

from contextos.text.claims import stem_tokens
from contextos.text.sentences import content_words, words


def test_words_are_lower_cased_and_keep_inner_apostrophes_ampersands_and_hyphens() -> None:
    assert words("Don't miss R&B at the Follow-up, 2023!") == [
        "don't",
        "miss",
        "r&b",
        "at",
        "the",
        "follow-up",
        "2023",
    ]


def test_content_words_and_claim_stems_ignore_case() -> None:
    assert content_words("Ann ADOPTED two Puppies") == content_words("ann adopted two puppies")
    assert stem_tokens("Ann LIVES in Paris") == stem_tokens("ann lives in paris")
    assert "lives" not in stem_tokens("Ann LIVES in Paris")  # the plural/verb -s is stripped
