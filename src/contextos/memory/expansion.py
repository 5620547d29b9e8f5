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
from .infer import facts_to_embed
from .render import FACT_OF


def is_conversation_turn(record: MemoryRecord) -> bool:
    """Whether ``record`` is a turn of a session stored verbatim by ``Memory.add``
    (not a fact stored beside one, nor a fact written by ``add(infer=True)``)."""
    meta = record.metadata  # ``role``: set by ``Memory.add`` on the messages it stores
    return (
        record.session_id is not None
        and "role" in meta
        and FACT_OF not in meta
        and "inferred" not in meta  # add(infer=True) copies the caller's metadata
    )


#: The most facts of one turn that are embedded with it (appended to its text, and as
#: vectors of their own in ``turn_vectors``): the first ones, in the turn's order. The
#: facts grow with the text, and without a bound one long message (the HTTP API takes
#: 100,000 characters) cost its turn over a thousand embeddings in the store's one
#: embedding worker, delaying every tenant's vectors. On the LoCoMo dev turns (2,760)
#: the most facts of any turn is 7 (99th percentile 6), so this never binds on ordinary
#: turns and their vectors are unchanged.
MAX_TURN_FACTS = 12


def turn_facts(record: MemoryRecord) -> list[MemoryRecord]:
    """The offline extractor's facts of a conversation turn, as records, at most
    ``MAX_TURN_FACTS`` (none for any other record, or when the turn holds no fact
    beyond itself): what is embedded with the turn."""
    if not is_conversation_turn(record):
        return []
    return facts_to_embed(record, MAX_TURN_FACTS)


def expansion_facts(record: MemoryRecord) -> list[str]:
    """The texts of ``turn_facts``: what ``embedding_text`` appends to a turn."""
    return [fact.text for fact in turn_facts(record)]
