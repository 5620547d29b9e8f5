"""What a memory costs in a window, counted once when it is written.

A search that fills a token budget needs the tokens of every hit's rendering
(``memory.render``, the string the window sends). Counting them on every search
repeats the same work for the same rows, so a ``Memory`` counts each record as it
writes it and the store keeps the count beside the row, stamped with what counted
it: the tokenizer's name and the rendering's version (``render.RENDERING``). A
reader trusts a stored count only when its own stamp is the same; a row without a
count (written before counts were stored, or outside a ``Memory``) or counted
another way is counted when read, as before. Nothing is written back on a read:
reads stay reads (read-only files, replicas), and the next write of the row
stores its count.
"""

from __future__ import annotations

from dataclasses import replace

from contextos.llm.tokens import Tokenizer

from ..types import MemoryRecord, TokenCount
from .render import RENDERING, render


class RecordTokens:
    """Counts records' renderings with one tokenizer, reusing counts it stamped."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._count = tokenizer.count
        #: What this counter stamps on the counts it makes.
        self.counted_with = f"{tokenizer.name}/{RENDERING}"

    def __call__(self, record: MemoryRecord) -> TokenCount:
        """The count of ``record``'s rendering, counted now (what a writer stores)."""
        return TokenCount(self._count(render(record)), self.counted_with)

    def counted(self, record: MemoryRecord) -> MemoryRecord:
        """``record`` with its count (for a write)."""
        return replace(record, token_count=self(record))

    def tokens(self, record: MemoryRecord) -> int:
        """Tokens of ``record``'s rendering: the stored count when this counter made
        it, else counted now."""
        stored = record.token_count
        if stored is not None and stored.counted_with == self.counted_with:
            return stored.tokens
        return self._count(render(record))
