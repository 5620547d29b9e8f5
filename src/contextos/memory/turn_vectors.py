"""The vector a memory is stored with: a conversation turn's also carries its facts'.

Why: a turn is embedded from its text followed by its extracted facts
(``render.embedding_text``, ``memory.expansion``), but in one long text MiniLM
still hears mostly the turn's chit-chat; each fact embedded on its own ("Caroline
went to a LGBTQ support group on 7 May 2023.") is a sharp point in the space.
Storing those points beside the turns as records (``Memory(turn_facts=True)``)
finds them, at about twice the search CPU. Adding them into the turn's own vector
gets much of that for nothing at query time: the stored vector is the unit
direction of

    embed(turn text + facts) + FACT_VECTOR_WEIGHT * sum(embed(fact) for each fact)

so one row and one vector per turn, the same search code and the same rows. A
question near any one of the turn's facts moves toward the turn. The cost is at
write time: the facts (about two per LoCoMo turn, each a short sentence) are
embedded too, in the same batch as the turns.

On LoCoMo (dev, categories 1-4, ``contextos bench locomo --cv``) recall@10 went from
0.813 to 0.827 leave-one-conversation-out (multi-hop 0.519 -> 0.554, open-domain 0.559
-> 0.610); recall within 1,000 tokens stayed at 0.871-0.874, adversarial questions lost
(0.709 -> 0.654), and embedding a turn costs about 3.3 texts instead of one
(docs/benchmarks.md).

Where that cost goes (LoCoMo dev, 2,760 turns): 177,650 tokens for the turns with
their facts appended and 87,291 for the facts alone, against 104,005 for the bare
turns; one thread embeds 82 turns per CPU-second this way, 122 without the facts'
own vectors and 219 for bare turns. Cheaper recipes were measured in the sixth
session and none kept its recall@10 held out (docs/benchmarks.md, "Cheaper fact
vectors", recall@10 leave-one-conversation-out against today's 0.825 by the same
protocol): the bare turn plus the facts' vectors (0.820), one pass over turn + facts
with each fact pooled from its own tokens ("late chunking", 0.819: a fact read in its
turn's context is no longer a sharp point), one pass with each fact masked off from
the turn (0.820), the facts embedded as one text (0.815), or only the first k alone
(0.817).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np

from ..embed import Embedder, Vectors
from ..text.text_cache import TextCache
from ..types import MemoryRecord
from .expansion import turn_facts
from .render import embedding_text

#: Weight of the sum of a turn's fact vectors added to the vector of its text. Chosen on
#: the LoCoMo dev split (recall@10, categories 1-4) among 0 (off), 0.25, 0.5, 0.75, 1 and
#: 2, and the same weights over the facts' mean: best over all five (0.828 against 0.816
#: off), and the choice of three of the five leave-one-conversation-out folds (the others
#: took 0.25 and 2); held out, the choice scores 0.821 (docs/benchmarks.md). 0 turns the
#: step off, and with it the facts' embedding.
FACT_VECTOR_WEIGHT = 0.5


def facts_of_turn(record: MemoryRecord) -> list[MemoryRecord]:
    """The facts of a conversation turn (``expansion.turn_facts``, at most
    ``MAX_TURN_FACTS``; none for any other record): what ``embedding_text`` appends
    and what gets a vector of its own. A turn costs at most 1 + ``MAX_TURN_FACTS``
    embeddings, however long its text."""
    return turn_facts(record)


def embedding_inputs(record: MemoryRecord) -> tuple[str, ...]:
    """The texts embedded for ``record``: its ``embedding_text`` (a turn's facts
    appended), then each of its facts' own (none for a record that is no turn with
    facts). Its stored vector is a function of these alone (``embed_inputs``). Making
    them runs the fact extractor over a turn's whole text (about 40 ms for 3,000
    characters in a review's profile), so they are made only for a record about to be
    embedded."""
    facts = facts_of_turn(record)
    main = embedding_text(record, facts=[f.text for f in facts])
    return (main, *(embedding_text(f) for f in facts))


def embed_records(
    embed: Callable[[Sequence[str]], Vectors],
    records: Sequence[MemoryRecord],
    *,
    fact_weight: float = FACT_VECTOR_WEIGHT,
) -> Vectors:
    """The vectors to store for ``records``, one per record, in one ``embed`` call.

    A record that is not a conversation turn, or a turn without facts, gets the
    vector of its ``embedding_text`` as before; a turn with facts gets the unit
    direction of its text's vector plus ``fact_weight`` times the sum of its facts'
    vectors (see the module docstring).
    """
    return embed_inputs(embed, [embedding_inputs(r) for r in records], fact_weight=fact_weight)


def embed_inputs(
    embed: Callable[[Sequence[str]], Vectors],
    inputs: Sequence[Sequence[str]],
    *,
    fact_weight: float = FACT_VECTOR_WEIGHT,
) -> Vectors:
    """``embed_records`` of records whose ``embedding_inputs`` are ``inputs``."""
    texts = [each[0] for each in inputs]
    extra = [t for each in inputs for t in each[1:]] if fact_weight else []
    vectors = np.asarray(embed(texts + extra), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts) + len(extra):
        raise ValueError(
            f"embedder returned shape {vectors.shape} for {len(texts) + len(extra)} texts"
        )
    if not extra:
        return vectors
    out = vectors[: len(texts)].copy()
    pos = len(texts)
    for i, texts_of in enumerate(inputs):
        facts = len(texts_of) - 1
        if facts:
            combined = out[i] + fact_weight * vectors[pos : pos + facts].sum(axis=0)
            norm = float(np.linalg.norm(combined))
            if norm > 0:
                out[i] = combined / norm
            pos += facts
    return out


#: How many vectors ``KEPT`` holds: 4,096 (1.5 KB each at MiniLM's 384 dimensions, ~6 MB).
KEPT_SIZE = 4096

#: Vectors computed ahead of the embedding worker: a search with ``min_score`` embeds
#: the keyword hits still waiting for their vectors (``HybridRetriever``) and keeps them
#: here, and the worker stores a kept vector rather than embedding its record again
#: (``kept_or_embedded``). Why: a later search judges the same pending memory at no
#: cost, a record is embedded once in a process (twice only when the worker's batch had
#: begun before the search), and the relevance a pending memory is judged by is the one
#: it gets once stored (embedded again, in another batch, the int8 graph's vector moved
#: by up to 0.009).
#:
#: Keyed by the digest of the record as stored (``_version``: its text, metadata, scope
#: and times), so an edited record never finds its old vector, with its tenant and id
#: (one process may serve every tenant and open several stores: a vector shared by text
#: alone made one tenant's search faster because another's had the same text pending, a
#: timing signal between them, and let a worker whose embedder was down store a vector
#: another store's search had made) and the embedder's ``model_id`` and ``dimensions``
#: (``embedder_key``). Values are vectors, no text. Why not the digest of its
#: ``embedding_inputs``, as before: finding a kept vector then ran the fact extractor
#: over the record's whole text, and a search looked up every pending keyword hit, so
#: it cost seconds over a backlog of long turns (4 of 4.2 s in a review's profile).
KEPT: TextCache[Vectors] = TextCache(KEPT_SIZE)


def embedder_key(embedder: Embedder) -> tuple[str, int]:
    """What tells one embedder's vectors from another's in ``KEPT``."""
    return (embedder.model_id, embedder.dimensions)


def _version(record: MemoryRecord) -> str:
    """What ``KEPT`` tells one version of ``record`` from another by: the record as
    stored (``to_dict``: text, metadata, scope and times, ``updated_at`` among them), of
    which its ``embedding_inputs`` are a function, with no fact extracted (a JSON dump
    and a hash: microseconds per 1,000 characters). Not ``updated_at`` alone: a
    migration rewrites metadata without moving it (``fact_of``, which decides whether
    facts are appended), and two writers' clocks need not agree. Its ``context`` is left
    out: it is not embedded, and a re-quote rewrites it."""
    return json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False, default=str)


def kept(embedder: tuple[str, int], record: MemoryRecord) -> Vectors | None:
    """The vector kept for ``record`` as it is now (a row of ``embed_inputs``), or None."""
    return KEPT.peek(_version(record), (record.tenant, record.id, *embedder))


def keep(embedder: tuple[str, int], record: MemoryRecord, vector: Vectors) -> None:
    """Keep ``vector`` (a row of ``embed_inputs``) of ``record`` as it is now, for later
    searches and the worker."""
    KEPT.put(_version(record), (record.tenant, record.id, *embedder), vector.copy())


def kept_or_embedded(
    embed: Callable[[Sequence[str]], Vectors], embedder: Embedder, records: Sequence[MemoryRecord]
) -> Vectors:
    """``embed_records(embed, records)``, taking each vector a search kept (``KEPT``) and
    embedding only the other records, in one call (none when all were kept); a kept
    record's facts are not extracted again."""
    key = embedder_key(embedder)
    found = [kept(key, r) for r in records]
    some = next((vector for vector in found if vector is not None), None)
    if some is None:
        return embed_records(embed, records)
    out = np.zeros((len(records), some.shape[-1]), dtype=np.float32)
    for i, vector in enumerate(found):
        if vector is not None:
            out[i] = vector
    missing = [i for i, vector in enumerate(found) if vector is None]
    if missing:
        out[missing] = embed_records(embed, [records[i] for i in missing])
    return out
