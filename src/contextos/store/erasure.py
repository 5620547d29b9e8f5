"""What erasing a user's (or one memory's) text must also reach, for every backend.

A memory's text is copied beyond its own row: a reply in the same session is
indexed with ``replying to <the turn it answers>`` in its ``context`` column
(see ``memory/ingest.py``). Versions before this one also quoted, outside a
session, the message before it in the same ``add``, so records without a session
may hold such quotes too (of a memory of their own scope: one ``add`` has one
scope). ``forget`` and ``delete(purge=True)`` remove those copies with
:class:`Scrub` (:func:`scrub_context` for one context); each store runs it inside
its own transaction, over its sessions' records and, for a purge, the records
without a session of the purged memory's scope that quote anything
(:data:`REPLY_MARK`).

An update of a session turn's text (or speaker) rewrites those quotes instead, with the
same matcher (:meth:`Scrub.requoted`), in the records that answer it (:func:`answers`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from contextos.types import MemoryRecord

#: How much of the turn it answers a reply's context quotes: the first characters of
#: the stored (stripped) text.
QUOTED_CHARS = 300

#: How much of a forgotten text is looked for anywhere in other records' context.
#: Shorter than :data:`QUOTED_CHARS`, so it is inside any quote of the text written
#: now. Rows written before quoted the raw turn, whose leading blanks could push the
#: probe out of the quoted 300 characters: :class:`Scrub` also recognises a quote by
#: the quote itself (whitespace squeezed), so those are found too.
PROBE_CHARS = 200

#: What starts the quote of the turn a reply answers (always the context's last part).
REPLY_MARK = "replying to "
_PART = " | "


def probes(texts: Iterable[str]) -> list[str]:
    """The strings that identify copies of ``texts`` (empty texts give none)."""
    out = {t.strip()[:PROBE_CHARS] for t in texts}
    out.discard("")
    return sorted(out, key=len, reverse=True)


def _squeezed(text: str) -> str:
    """``text`` with every run of whitespace one space, and none at either end."""
    return " ".join(text.split())


class Scrub:
    """Finds and cuts the copies of ``texts`` in contexts (built once per erasure)."""

    def __init__(self, texts: Iterable[str]) -> None:
        texts = list(texts)
        self.probes = probes(texts)
        squeezed = {s for t in texts if (s := _squeezed(t))}
        self._whole = frozenset(squeezed)
        self._sorted = sorted(squeezed)

    def __bool__(self) -> bool:
        return bool(self.probes)

    def __call__(self, context: str) -> str:
        """``context`` without any copy of the texts.

        A quote of one in the ``replying to ...`` part (always the last part) removes
        that whole part; a copy anywhere else is cut out on its own.
        """
        context = self._without_quote(context)
        for probe in self.probes:
            at = context.find(probe)
            while at >= 0:
                start = context.rfind(REPLY_MARK, 0, at)
                if start >= 0:
                    context = context[:start].rstrip(" |")
                else:
                    context = context[:at] + context[at + len(probe) :]
                at = context.find(probe)
        return context

    def requoted(self, context: str, quote: str) -> str:
        """``context`` with its reply part, if that quotes one of the texts, replaced by
        ``quote`` (the reply part quoting what replaced them); else ``context`` as it is.

        Why: an update of a session turn (a user redacting a card number) left the old
        text quoted in the reply's indexed context, and a search for the removed words
        still found the conversation."""
        start = self._quote_start(context)
        if start is None:
            return context
        return context[:start] + quote if quote else context[:start].rstrip(" |")

    def _without_quote(self, context: str) -> str:
        """``context`` without its reply part if that quotes one of the texts."""
        start = self._quote_start(context)
        return context if start is None else context[:start].rstrip(" |")

    def _quote_start(self, context: str) -> int | None:
        """Where the reply part of ``context`` starts if it quotes one of the texts: the
        whole text, or its first :data:`QUOTED_CHARS` characters (raw, leading blanks
        included, in rows written before), whitespace aside; None when it quotes none."""
        start = context.find(REPLY_MARK)
        while start >= 0:
            whole_part = start == 0 or context.startswith(_PART, start - len(_PART))
            if whole_part and self._quotes(context[start + len(REPLY_MARK) :]):
                return start
            start = context.find(REPLY_MARK, start + 1)
        return None

    def _quotes(self, tail: str) -> bool:
        """Whether ``tail`` (after the mark: ``speaker: `` then the quote) quotes a text."""
        cut = -2
        while True:
            said = tail[cut + 2 :]  # without the speaker, at each place it may end
            quoted = _squeezed(said)
            if quoted and (
                quoted in self._whole or (len(said) >= QUOTED_CHARS and self._starts(quoted))
            ):
                return True
            cut = tail.find(": ", cut + 2)
            if cut < 0:
                return False

    def _starts(self, prefix: str) -> bool:
        """Whether some text (squeezed) starts with ``prefix``."""
        at = bisect_left(self._sorted, prefix)
        return at < len(self._sorted) and self._sorted[at].startswith(prefix)


def scrub_context(context: str, texts: Iterable[str]) -> str:
    """``context`` without any copy of ``texts`` (see :class:`Scrub`)."""
    return Scrub(texts)(context)


def answers(record: MemoryRecord, turn: MemoryRecord) -> bool:
    """Whether ``record``, of ``turn``'s session, may be the reply to ``turn`` (or a fact
    stored beside that reply): numbered right after it (``metadata["seq"]``); where
    either has no number (rows written before sessions were numbered), any record may.

    Why by number and not by the quoted text alone: a chat repeats short turns ("ok",
    "Thanks!"), and an update of one of them must not rewrite the quote in the reply
    to another turn with the same words."""
    seq, after = reply_seq(turn), record.metadata.get("seq")
    if seq is not None and type(after) is int:  # a JSON true is no number
        return after == seq
    return True


def reply_seq(turn: MemoryRecord) -> int | None:
    """The number the reply to ``turn`` holds (``metadata["seq"]``), as do the facts
    stored beside that reply (a fact copies its turn's metadata): the turn's own plus
    one; None when the turn has none (any record may answer it: :func:`answers`).

    Why the stores read it: an update of an "ok" looked through every record of its
    session quoting "ok" (nearly all of them) and, on PostgreSQL, locked each of them,
    to keep the one reply (a review: 7 ms became 300 ms in a session of 16,000 turns).
    The stores select by this number in SQL; :func:`answers` stays the last check."""
    seq = turn.metadata.get("seq")
    return seq + 1 if type(seq) is int else None
