"""What a memory costs in a window, counted once when it is written.

A search that fills a token budget needs the tokens of every hit's rendering
(``memory.render``, the string the window sends). Counting them on every search
repeats the same work for the same rows, so a ``Memory`` counts each record as it
writes it and the store keeps the count beside the row, stamped with what counted
it and what it counted: the tokenizer's name, the rendering's version
(``render.RENDERING``) and a short digest of the rendered text. A reader renders
the row it read (microseconds) and trusts the stored count only when the whole
stamp is its own; tokenizing again costs tens of microseconds. The digest is what
makes the count safe against every other writer: an older contextos, a hand-written
SQL fix or a restore of some columns that changes the text and leaves the count
alone leaves a count whose digest no longer matches, so it is counted when read.

Counting is a cache, never a reason to lose a write: a tokenizer that fails (a
remote ``count_tokens`` answering 429) stores no count, and the row is counted when
read, as one written before counts were stored. Nothing is written back on a read:
reads stay reads (read-only files, replicas), and the next write of the row stores
its count.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from contextos.llm.tokens import Tokenizer

from ..types import MemoryRecord, TokenCount
from .render import RENDERING, render

log = logging.getLogger(__name__)


def rendering_digest(rendered: str) -> str:
    """A short digest of a rendering (blake2b, 8 bytes, hex): what a count counted."""
    return hashlib.blake2b(rendered.encode("utf-8"), digest_size=8).hexdigest()


class RecordTokens:
    """Counts records' renderings with one tokenizer, reusing counts it stamped."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._count = tokenizer.count
        self._counter = f"{tokenizer.name}/{RENDERING}"
        self._failed = False

    def stamp(self, rendered: str) -> str:
        """The ``counted_with`` of this counter's count of ``rendered``:
        ``"<tokenizer>/<rendering version>/<digest of rendered>"``."""
        return f"{self._counter}/{rendering_digest(rendered)}"

    def __call__(self, record: MemoryRecord) -> TokenCount | None:
        """The count of ``record``'s rendering, counted now (what a writer stores), or
        None when the tokenizer fails (logged once): the write goes on without it."""
        rendered = render(record)
        try:
            tokens = self._count(rendered)
        except Exception as exc:  # any tokenizer's failure: the count is only a cache
            log.log(
                logging.DEBUG if self._failed else logging.WARNING,
                "storing no token count (the record is counted when read): %s: %s",
                type(exc).__name__,
                exc,
            )
            self._failed = True
            return None
        return TokenCount(tokens, self.stamp(rendered))

    def counted(self, record: MemoryRecord) -> MemoryRecord:
        """``record`` with its count (for a write; None when counting failed)."""
        return replace(record, token_count=self(record))

    def tokens(self, record: MemoryRecord) -> int:
        """Tokens of ``record``'s rendering: the stored count when this counter made it
        of this very rendering, else counted now."""
        rendered = render(record)
        stored = record.token_count
        if stored is not None and stored.counted_with == self.stamp(rendered):
            return stored.tokens
        return self._count(rendered)
