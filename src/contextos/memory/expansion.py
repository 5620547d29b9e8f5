"""Document expansion: a conversation turn is embedded together with its facts.

Why: a raw turn ("Wow! I went to a LGBTQ support group yesterday and it was so
powerful.") embeds poorly, while the offline extractor's facts of it ("Caroline
went to a LGBTQ support group on 7 May 2023.") are short, third-person and
dated, and embed well. Storing those facts as records beside the turns
(``Memory(turn_facts=True)``) finds more evidence but triples the rows and about
doubles search CPU. Appending them to the text the turn is *embedded* from gets
most of that gain for nothing at query time: one row and one vector per turn, as
before. On LoCoMo (dev, categories 1-4, ``contextos bench locomo --cv``) recall@10
went from 0.791 to 0.808 leave-one-conversation-out (docs/benchmarks.md).

Only the vector changes: the stored text, what search returns and what a window
shows are the turn verbatim. The facts are derived at embedding time from the
record itself, so nothing new is stored: an edited turn is re-embedded from its
new text, and a deleted one leaves nothing behind. The same facts in the lexical
context column did not help (BM25 already has the turn's words), so they are not
indexed there.
"""

from __future__ import annotations

from ..types import MemoryRecord
from .infer import SOURCE_KEY, facts_beside


def is_conversation_turn(record: MemoryRecord) -> bool:
    """Whether ``record`` is a turn of a session stored verbatim by ``Memory.add``
    (not a fact stored beside one, nor a fact written by ``add(infer=True)``)."""
    meta = record.metadata  # ``role``: set by ``Memory.add`` on the messages it stores
    return (
        record.session_id is not None
        and "role" in meta
        and SOURCE_KEY not in meta
        and "inferred" not in meta  # add(infer=True) copies the caller's metadata
    )


def expansion_facts(record: MemoryRecord) -> list[str]:
    """The offline extractor's facts of a conversation turn, to embed with it
    (none for any other record, or when the turn holds no fact beyond itself)."""
    if not is_conversation_turn(record):
        return []
    return [fact.text for fact in facts_beside([record])]
