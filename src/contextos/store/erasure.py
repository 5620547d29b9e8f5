"""What erasing a user's (or one memory's) text must also reach, for every backend.

A memory's text is copied beyond its own row: a reply in the same session is
indexed with ``replying to <the turn it answers>`` in its ``context`` column
(see ``memory/ingest.py``). ``forget`` and ``delete(purge=True)`` remove those
copies with :func:`scrub_context`; each store runs it inside its own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

#: How much of a forgotten text is looked for in other records' context. The reply
#: context quotes the first 300 characters of the raw turn (before stripping), so a
#: shorter probe of the stripped text is always inside the quote.
PROBE_CHARS = 200

_REPLY_MARK = "replying to "


def probes(texts: Iterable[str]) -> list[str]:
    """The strings that identify copies of ``texts`` (empty texts give none)."""
    out = {t.strip()[:PROBE_CHARS] for t in texts}
    out.discard("")
    return sorted(out, key=len, reverse=True)


def scrub_context(context: str, texts: Iterable[str]) -> str:
    """``context`` without any copy of ``texts``.

    A copy inside the ``replying to ...`` part (always the last part) removes that
    whole part; a copy anywhere else is cut out on its own.
    """
    for probe in probes(texts):
        at = context.find(probe)
        while at >= 0:
            start = context.rfind(_REPLY_MARK, 0, at)
            if start >= 0:
                context = context[:start].rstrip(" |")
            else:
                context = context[:at] + context[at + len(probe) :]
            at = context.find(probe)
    return context
