"""Hybrid retrieval: BM25 and dense vectors, fused by reciprocal rank, then
shaped for a conversation memory (speaker named, neighbouring turns, session
focus, time cues) and cut to a token budget.

Plain reciprocal-rank fusion of BM25 and MiniLM does not beat BM25 on LoCoMo,
so contextos adds steps measured to help on conversational memory (LoCoMo dev
split, categories 1-4, recall@10; ``contextos bench locomo``):

- each turn is indexed with its speaker, date, image caption and the turn it
  replies to (a second FTS column at half weight): plain BM25 0.61 -> 0.72;
- each turn of a session is embedded together with the offline extractor's facts
  of it (third person, dates resolved; ``memory.expansion``), so MiniLM sees what
  the turn says, not how: dense alone 0.57 -> 0.68, and with the two constants
  below re-chosen the hybrid goes 0.791 -> 0.813 leave-one-conversation-out, with
  the same rows and the same search;
- and each such turn's stored vector also carries its facts' own vectors (the unit
  direction of the text's vector plus half the sum of its facts' vectors,
  ``memory.turn_vectors``): a question near any one fact moves toward the turn, at
  no cost per search (docs/benchmarks.md has the leave-one-conversation-out gain);
- MiniLM is fused at the weight of BM25 (1) with a sharp RRF constant (k=10), both
  re-chosen after the expansion (they were 0.6 and 20 on bare turns);
- with ``Memory(turn_facts=True)`` a session's turns are stored with the offline
  extractor's facts beside them; a turn and its facts are one unit, found by
  whichever matches best and returned once (``by_source``), as the best matching
  text. Searched with ``TURN_FACTS_RETRIEVAL`` (dense weight 1: the short
  third-person facts embed well): recall@10 0.791 -> 0.804 and recall within
  1,000 tokens 0.850 -> 0.907 (leave-one-conversation-out, against bare turns,
  before the expansion above), for about twice the search CPU, since the memory
  holds three records per turn;
- a question that names one of the speakers ("What does Melanie do to relax?")
  favours what that speaker said, three times over (``speaker_weight=3``): 96%
  of such questions' evidence on the dev split was said by the speaker named (a
  name that only addresses someone, "Thanks, Ana!", does not count: ``named_speaker``);
- a turn borrows a quarter of the score of its best neighbour in the same
  session and a fifth of its session's strength, because answers are spread
  over a question and its reply, and topics over a session;
- for a question with a time cue ("When did ...", "in May 2023"), memories that
  name a time, or are dated inside the asked period, count double
  (``temporal_weight=1``).

These are a handful of global constants, never per question. They were chosen
on the 5 dev conversations and are checked by leave-one-conversation-out
(``contextos bench locomo --cv``: each constant re-chosen on four conversations,
scored on the fifth); what each step contributes is pinned by
tests/test_retrieval_quality.py, and docs/benchmarks.md has the figures.

``Hit.relevance`` is the cosine of query and memory: unlike the fused score it
is on one scale for every query, so ``min_score`` can say "nothing relevant".
"""

from __future__ import annotations

import functools
import logging
import numbers
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import numpy as np

from contextos.llm.tokens import Tokenizer
from contextos.text.temporal import TimeRange, question_time_cues, resolve
from contextos.text.text_cache import TextCache

from ..embed import Embedder, Vectors, checked_vectors, normalize
from ..errors import EmbedderOutputError, EmbedderSetupError, EmbedderUnavailable
from ..store.base import Ranked, Store, Vector
from ..times import local_now
from ..types import Filter, Hit, MemoryRecord
from .record_tokens import RecordTokens
from .render import FACT_OF
from .turn_vectors import embed_inputs, embedder_key, embedding_inputs, keep, kept

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetrievalConfig:
    """Knobs of the hybrid retriever (defaults chosen on the LoCoMo dev split)."""

    rrf_k: float = 10.0
    lexical_weight: float = 1.0
    dense_weight: float = 1.0
    candidates: int = 100
    recency_weight: float = 0.0
    mode: str = "hybrid"  # "hybrid", "bm25" or "dense"
    #: BM25 weight of the context column (speaker, date, caption, the turn replied to);
    #: 0 makes the lexical side plain BM25 over the memory text alone.
    context_weight: float = 0.5
    #: Share of the best neighbouring turn's score a turn borrows (same session).
    neighbour_weight: float = 0.25
    #: Weight of the session's strength (sum of its best three turns) added to each turn.
    session_weight: float = 0.2
    #: How many fused candidates are loaded and re-ranked (LoCoMo dev recall was the same
    #: at 50 and 200; fewer rows to decode per search).
    rerank_depth: int = 50
    #: For questions with a time cue ("when", "in May 2023", "last year"): a memory's
    #: score is multiplied by (1 + temporal_weight) when it names a time ("when"
    #: questions) or is dated inside the asked period. 0 turns the step off.
    temporal_weight: float = 1.0
    #: For a question that names exactly one of the speakers among the candidates
    #: ("What does Melanie do to relax?"), that speaker's memories count
    #: (1 + speaker_weight) times: on the LoCoMo dev split 96% of the evidence for
    #: such questions was said by the speaker named. 0 turns the step off.
    speaker_weight: float = 3.0


#: Settings for a memory of extracted facts (``Memory.add(infer=True)``): short,
#: self-contained sentences embed far better than raw turns (dense-only recall@10
#: on LoCoMo 0.67 against 0.57), so MiniLM gets more weight than BM25. Chosen on
#: the LoCoMo dev split with ``--memory extracted``: dense_weight 0.3 / 1 / 1.5 / 2 / 3
#: gave recall within 1,000 tokens 0.816 / 0.849 / 0.863 / 0.860 / 0.856. The other
#: constants stay at the values that were measured with it (the raw-turn defaults
#: moved since; the fact memory has not been re-tuned).
FACT_RETRIEVAL = RetrievalConfig(
    rrf_k=20.0, dense_weight=1.5, neighbour_weight=0.5, session_weight=0.1, speaker_weight=0.0
)


#: Settings for a memory of turns with their facts beside them (``Memory(turn_facts=True)``):
#: dense weight 1 (LoCoMo dev, recall@10 over all five: 0.6 / 0.8 / 1 / 1.5 gave
#: 0.802 / 0.809 / 0.809 / 0.787; leave-one-conversation-out kept 1 in four folds),
#: at the RRF constant it was measured with (20; not re-tuned since).
TURN_FACTS_RETRIEVAL = RetrievalConfig(rrf_k=20.0, dense_weight=1.0)


class Candidate(NamedTuple):
    """A fused memory id before its record is read (a tuple: ``fuse`` makes one for
    each of up to 2 x ``candidates`` ids on every search, and a frozen dataclass
    cost five times as much to build)."""

    id: str
    score: float
    lexical_rank: int | None
    dense_rank: int | None
    cosine: float | None = None


#: Past its first ``UNEMBEDDED_ROWS`` hits, at most this many texts in all are embedded
#: by one search with ``min_score`` for the keyword hits still waiting for their vectors
#: (``HybridRetriever._pending_vectors``), best hit first: a plain memory is one text, a
#: conversation turn one plus its facts (3.3 on average on LoCoMo's turns, at most 1 +
#: ``MAX_TURN_FACTS``). Why 64: the worker's batch (``embed_batch_size``), so a backlog
#: of one batch of plain memories is judged whole.
#: Each vector made is kept (``turn_vectors.KEPT``): the next search judges those hits
#: at no cost and embeds the next ones, and the worker stores them as they are.
#: A hit beyond the bound has no cosine yet, and a floor leaves it out until a later
#: search or the worker makes its vector.
UNEMBEDDED_TEXTS = 64

#: However many texts they take, the best this many keyword hits waiting for their
#: vectors are embedded by a search with ``min_score`` (then more, up to
#: ``UNEMBEDDED_TEXTS`` texts). Why: a fact-rich turn is 1 + 12 texts, and 64 texts alone
#: judged 4-7 such turns where 16 were judged before, so a floor dropped pending turns it
#: used to keep (a review: 10 hits became 5-7). 16 rows cost what they cost then, at most
#: 16 x 13 texts (0.1-0.6 s for turns on this project's busy 2-core machine:
#: /work/notes/s40/relevance; 16 turns of 20,000 characters, ~4 s, as before).
UNEMBEDDED_ROWS = 16

#: How many of the best keyword hits are read while the query's embedding runs
#: (``HybridRetriever._scan_while_embedding``), in store calls of ``EARLY_FETCH_CHUNK``
#: (small, to stop soon after the vector is ready). Why 20: over 300 searches of
#: ``bench scale``'s 10k store, keyword ranks 1-20 were all among the 50 fused
#: candidates, ranks 21-30 only 58% of the time (``/work/notes/s32/overlap.py``); a
#: hit read here and then not fused is work added to the search.
EARLY_FETCH = 20
EARLY_FETCH_CHUNK = 10

#: How many of the best keyword hits are checked for the query's identifiers
#: (``HybridRetriever._exact_hits``): a memory holding a rare code is at the top of the
#: keyword ranking, where BM25 puts the rarest term's holders.
EXACT_DEPTH = 20

#: A token as identifiers are written: letters and digits, joined by ``-``, ``_``,
#: ``.``, ``/`` or ``#`` ("INV-96456", "v2.3.1", "AB12/7").
_TOKEN = re.compile(r"[^\W_](?:[\w\-./#]*[^\W_])?")


#: What joins the parts of an identifier ("INV-96456" holds "96456").
_SEPARATORS = re.compile(r"[\-./#]")


def _tokens_and_parts(text: str) -> set[str]:
    """``text``'s tokens (casefolded), and the parts of each between its separators."""
    tokens = {t.casefold() for t in _TOKEN.findall(text)}
    return tokens | {p for t in tokens for p in _SEPARATORS.split(t) if p}


def identifiers(query: str) -> set[str]:
    """The tokens of ``query`` that read as identifiers (casefolded): a number of five
    digits or more ("96456"), or letters and at least two digits in five characters or
    more ("INV-96456", "A1B2C3", "COVID-19"). Not a year ("2023"), a date ("7/5/2023"),
    a time ("10am") or a short code ("MP3"): those a question names for their meaning,
    which the embedding model reads as well as BM25 does."""
    found = set()
    for token in _TOKEN.findall(query):
        digits = sum(c.isdigit() for c in token)
        has_letter = any(c.isalpha() for c in token)
        if len(token) >= 5 and (token.isdigit() or (has_letter and digits >= 2)):
            found.add(token.casefold())
    return found


def _order(score: float, cosine: float | None, record_id: str) -> tuple[float, float, str]:
    """Sort key of a ranked memory: the higher score first; on an exact tie (common in
    rank fusion: ranks 1 and 3 score as 3 and 1 do) the higher cosine, so the order
    depends on the data and not on the ids, which are random (the same conversation
    stored twice ranks the same); the id only when both tie."""
    return (-score, -(cosine if cosine is not None else -2.0), record_id)


def _cosine(value: float) -> float:
    """A cosine as a number in [-1, 1]: float32 vectors of unit length give 1.0000003
    for a text against itself, and ``Hit.relevance`` is documented as a cosine."""
    return min(1.0, max(-1.0, value))


def hit_order(hit: Hit) -> tuple[float, float, str]:
    """``_order`` of a hit (the reranks keep the fused order's tie-break)."""
    return _order(hit.score, hit.relevance, hit.record.id)


def fuse(
    lexical: Sequence[Ranked],
    dense: Sequence[Ranked],
    cfg: RetrievalConfig,
    unembedded: Collection[str] = (),
    exact: Collection[str] = (),
) -> list[Candidate]:
    """Reciprocal-rank fusion: score = sum of weight / (k + rank) over the retrievers.

    ``unembedded``: keyword hits that have no vector yet (``Store.without_vectors``:
    pending behind ``Memory.add``, or quarantined). The dense retriever could not rank
    them at all, so each gets the dense term of its lexical rank, as if the dense
    retriever agreed with BM25 (its ``dense_rank`` stays None). Without it a fact just
    added, the only match of a word, scored its lexical term alone: with
    ``FACT_RETRIEVAL`` (k=20, dense weight 1.5) its 1/21 lost to each of the dense ranks
    1 to 11 (at least 1.5/31), and ``add``'s promise (searchable by keyword when it
    returns) failed until the worker embedded it. A hit
    that has a vector but ranks beyond the dense list's depth gets nothing: there the
    dense retriever did judge it, and judged it worse. Once embedded, a memory takes
    its true dense rank.

    ``exact``: keyword hits holding an identifier the query names (an order, ticket or
    invoice number: ``HybridRetriever._exact_hits``). The dense term of their lexical rank, when it
    is more than their own: an embedding model barely tells "INV-96456" from
    "INV-57541", so its rank says nothing there, and a search for a code answered with
    its memory first while the memory waited for its vector (the rule above), then
    ranked it 2nd to 8th once the vector was stored (a review: 8 of 20 codes)."""
    # One dict of [score, lexical rank, dense rank, cosine] per id: this runs on every
    # search over up to 2 x ``candidates`` ids, so it does one lookup per ranked id.
    k = cfg.rrf_k
    fused: dict[str, list[Any]] = {}
    for rank, r in enumerate(lexical, start=1):
        entry = fused.setdefault(r.id, [0.0, None, None, None])
        entry[0] += cfg.lexical_weight / (k + rank)
        entry[1] = rank
    for rank, r in enumerate(dense, start=1):
        entry = fused.setdefault(r.id, [0.0, None, None, None])
        entry[0] += cfg.dense_weight / (k + rank)
        entry[2] = rank
        entry[3] = _cosine(r.score)
    for memory_id in unembedded:
        held = fused.get(memory_id)
        if held is not None and held[1] is not None and held[2] is None:
            held[0] += cfg.dense_weight / (k + held[1])
    for memory_id in exact:
        held = fused.get(memory_id)
        if held is not None and held[1] is not None and (held[2] is None or held[2] > held[1]):
            own = 0.0 if held[2] is None else cfg.dense_weight / (k + held[2])
            held[0] += cfg.dense_weight / (k + held[1]) - own
    ordered = sorted(fused.items(), key=lambda kv: _order(kv[1][0], kv[1][3], kv[0]))
    return [Candidate(i, *entry) for i, entry in ordered]


def checked_floor(min_score: object) -> float:
    """``min_score`` as a float, refused unless a real number in [-1, 1]: a NumPy number
    is one (cosines computed with NumPy are ``float32``, which was refused as "not a
    number", a review), a bool is not (``True`` read as a floor of 1.0 finds nothing)
    and neither is a text; the server's ``schemas.MinScore`` has the same rule."""
    if isinstance(min_score, bool) or not isinstance(min_score, numbers.Real):
        raise TypeError(
            "min_score must be a number (a cosine between -1 and 1), "
            f"not {type(min_score).__name__}"
        )
    floor = float(min_score)
    if not -1.0 <= floor <= 1.0:  # NaN fails both
        raise ValueError("min_score is a cosine similarity: between -1 and 1")
    return floor


def above_floor(candidates: Sequence[Candidate], min_score: float) -> list[Candidate]:
    """The candidates whose query-memory cosine is known and at least ``min_score``.

    Why cosine: fused scores are built from ranks, so the best hit of a query about
    nothing stored scores as high as the best hit of a query with a perfect answer;
    the cosine of MiniLM vectors is on one scale for every query (see
    docs/benchmarks.md for where LoCoMo's evidence and off-topic hits fall on it).
    Why a candidate without one is dropped: ``search`` fills in every cosine it can
    (the stored vectors of every keyword hit); one still unknown belongs to a memory
    the embedder refused, or to one of more pending rows than a search embeds. Kept, a
    keyword hit unrelated to the question came back with ``relevance=None`` under a
    floor it missed (a review).
    Why a memory holding the code a query names is held to it too: MiniLM reads no
    meaning in a bare code (the only memory holding an invoice number scored 0.30 for
    it), but a number of five digits or more is also a step count or an amount, and a
    floor that let such hits through returned "The stadium seats 15000 people." for
    "What did I buy for 15000?" (two reviews): a lookup by code is a search without one.
    """
    return [c for c in candidates if c.cosine is not None and c.cosine >= min_score]


def _checked_embed(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """``embedder``'s vectors of ``texts``, refused (``EmbedderOutputError``) when of the
    wrong shape or not finite: a NaN vector gave its memory a cosine of -1."""
    return checked_vectors(embedder, embedder.embed(texts), len(texts))


def _batch_then_each(records: list[T]) -> Iterator[list[T]]:
    """``records`` as one batch, then (the caller stops after a batch that worked)
    each record alone: one record an embedder refuses does not fail the others."""
    if records:
        yield records
    if len(records) > 1:
        yield from ([r] for r in records)


@functools.lru_cache(maxsize=1)
def _query_pool() -> ThreadPoolExecutor:
    """Threads that embed queries while the lexical search runs (created on first use;
    a fork's child makes its own: the parent's pool counted a thread idle that the
    child does not have, and every search in the child waited on it forever)."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="contextos-query")


os.register_at_fork(after_in_child=_query_pool.cache_clear)


#: Characters of a long query its vector is made of: its last ones (:func:`dense_text`).
#: About 200 English words: what MiniLM reads of a text (256 word pieces).
QUERY_TAIL_CHARS = 1000


def dense_text(query: str) -> str:
    """The part of ``query`` its vector is made of: the whole query, or, past
    :data:`QUERY_TAIL_CHARS`, its last that many characters, from the start of a word.

    Why the end: MiniLM reads a text's first 256 word pieces (about 200 words), and a
    window searches with the whole last user message: one that pasted a document and
    asked about it at its end was searched, by meaning, for the document's opening.
    The question counted for nothing (a review: relevance 0.82 for "what is Ana
    allergic to?" alone, -0.01 after 264 words of preamble, so any floor dropped the
    answer). A message asks at its end; the keyword search still reads all of it."""
    if len(query) <= QUERY_TAIL_CHARS:
        return query
    tail = query[-QUERY_TAIL_CHARS:]
    space = next((i for i, ch in enumerate(tail[:100]) if ch.isspace()), None)
    return tail[space + 1 :] if space is not None else tail  # no spaces (CJK): as cut


def _keep_query_vector(
    cache: TextCache[Vectors], query: str, tenant: str, done: Future[Vectors]
) -> None:
    """Keep a query's vector once its embedding succeeded (see ``_query_vector``)."""
    if not done.cancelled() and done.exception() is None:
        cache.put(query, tenant, done.result().copy())


class HybridRetriever:
    """Retrieves memories for a query from a Store with an Embedder."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        config: RetrievalConfig | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or RetrievalConfig()
        #: Counts hits' renderings (``Hit.tokens``, the token budget); none: 0 tokens.
        self._tokens = RecordTokens(tokenizer) if tokenizer is not None else None
        #: The "now" relative time cues in questions ("last year") resolve against: on
        #: this process's calendar (``TZ``), as an add without a time is dated.
        self.now: Callable[[], datetime] = local_now

    def search(
        self,
        query: str,
        flt: Filter,
        *,
        limit: int,
        token_budget: int | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The best ``limit`` memories for ``query`` within ``token_budget`` tokens;
        with ``min_score``, only memories whose cosine with the query (``Hit.relevance``)
        reaches it, so a query about nothing stored returns nothing."""
        cfg = self.config
        if min_score is not None:
            min_score = checked_floor(min_score)
            if cfg.mode == "bm25":
                raise ValueError("min_score needs the dense retriever (mode 'bm25' has none)")
        n = max(cfg.candidates, limit)
        # The query embedding overlaps with the BM25 query (see ``_query_vector``).
        pending = self._query_vector(query, flt.scope.tenant) if cfg.mode != "bm25" else None
        lexical = (
            self.store.keyword_search(flt, query, limit=n, context_weight=cfg.context_weight)
            if cfg.mode != "dense"
            else []
        )
        cue = question_time_cues(query, self.now()) if cfg.temporal_weight else None
        self._scan_while_embedding(flt, lexical, pending, cue)
        dense: list[Ranked] = []
        unembedded: set[str] = set()
        vector = self._usable_query_vector(pending, min_score) if pending is not None else None
        if vector is not None:
            ids = [r.id for r in lexical]
            unembedded = self._without_vectors(flt, ids, len(vector))  # before: see there
            dense = self.store.vector_search(flt, vector, limit=n)
            in_dense = {r.id for r in dense}
            missing = [i for i in ids if i not in in_dense and i not in unembedded]
            unembedded |= self._without_vectors(flt, missing, len(vector))  # and after
            unembedded -= in_dense  # embedded meanwhile, and ranked
        exact = self._exact_hits(flt, query, lexical) if dense else set()
        fused = fuse(lexical, dense, cfg, unembedded - exact, exact)
        if min_score is not None and vector is not None:  # (no vector: refused above)
            if unembedded:
                fused = self._with_cosines_of_unembedded(flt, fused, unembedded, vector)
            fused = self._with_stored_cosines(flt, fused, unembedded, vector)
            fused = above_floor(fused, min_score)
        depth = max(cfg.rerank_depth, limit)
        while True:
            hits = self._reranked(query, flt, fused[:depth], cue)
            if len(hits) >= limit or depth >= len(fused):
                break
            # Fewer hits than asked while candidates remain: a turn and its facts stored
            # beside it (``turn_facts``) are one hit, and memories erased since the
            # indexes were read are none. Deeper, so a page is full when it can be (a
            # review: limit 50 gave 40 hits, limit 100 gave 90).
            depth *= 2
        return self._cut(hits, limit, token_budget)

    def _reranked(
        self, query: str, flt: Filter, fused: Sequence[Candidate], cue: TimeRange | None
    ) -> list[Hit]:
        """The records of ``fused``, reranked (speaker, time, conversation), one per
        source turn (:func:`by_source`)."""
        cfg = self.config
        # Defense in depth: every record is re-checked against the whole filter at fetch
        # time, whatever the store's indexes said. All in one read, so in one snapshot:
        # records read in two statements could straddle a commit that closed one fact
        # and wrote its successor, and show both as current (a review: 9 searches in
        # 44,000 beside an inferring add).
        now = datetime.now(UTC)
        fetched = {r.id: r for r in self.store.get_many(flt.scope.tenant, [c.id for c in fused])}
        records = {c.id: r for c in fused if (r := fetched.get(c.id)) and flt.matches(r, now)}
        hits = [
            Hit(records[c.id], c.score, c.lexical_rank, c.dense_rank, relevance=c.cosine)
            for c in fused
            if c.id in records
        ]
        if cfg.speaker_weight:
            hits = speaker_rerank(hits, query, cfg.speaker_weight)
        if cfg.temporal_weight:
            hits = temporal_rerank(hits, cue, cfg.temporal_weight)
        if cfg.neighbour_weight or cfg.session_weight:
            hits = conversational_rerank(hits, cfg)
        return by_source(hits)

    def _exact_hits(self, flt: Filter, query: str, lexical: Sequence[Ranked]) -> set[str]:
        """The best keyword hits (``EXACT_DEPTH``) whose text holds one of the query's
        identifiers (:func:`identifiers`), any case, as a token or a part of one ("96456"
        is in "INV-96456"); none (and no read) for a query that names no identifier, as
        nearly every question does."""
        wanted = identifiers(query)
        if not wanted or not lexical:
            return set()
        ids = [r.id for r in lexical[:EXACT_DEPTH]]
        return {
            r.id
            for r in self.store.get_many(flt.scope.tenant, ids)
            if not wanted.isdisjoint(_tokens_and_parts(r.text))
        }

    def _scan_while_embedding(
        self,
        flt: Filter,
        lexical: Sequence[Ranked],
        pending: Future[Vectors] | None,
        cue: TimeRange | None,
    ) -> None:
        """For a question with a time cue: the times the best keyword hits' texts name,
        resolved (``_times_named``) while the query's embedding is still running.

        Why: the embedding runs on another thread (onnxruntime leaves the GIL), and the
        keyword search finishes first: this thread waited ~1-2 ms a search for the
        vector, then scanned the fused candidates' texts for times. The best keyword
        hits are among the fused candidates (``EARLY_FETCH``), so scanning them in that
        wait moves work off the search's path. It stops as soon as the vector is ready
        (a kept query vector: at once). The times are kept in ``TIMES_NAMED``, where
        ``temporal_rerank`` finds them. The records read here are not the ones returned:
        ``search`` reads every fused candidate again in one statement (one snapshot; see
        there)."""
        if pending is None or cue is None:
            return
        ids = [r.id for r in lexical[:EARLY_FETCH]]
        for start in range(0, len(ids), EARLY_FETCH_CHUNK):
            if pending.done():
                break
            for record in self.store.get_many(
                flt.scope.tenant, ids[start : start + EARLY_FETCH_CHUNK]
            ):
                _times_named(record.text, _anchor(record))

    def _usable_query_vector(
        self, pending: Future[Vectors], min_score: float | None
    ) -> Vector | None:
        """The query's vector, checked as the worker checks stored ones; None when the
        embedder's answer breaks its protocol (wrong size, NaN) or the embedder fails
        (a remote service down), and no ``min_score`` needs it: the search then ranks by
        keywords alone, and the fault is logged.

        Why not raise: an embedder that divides by a zero norm answers NaN for a query
        of no word it knows, and the search that returned the right keyword hit failed
        (the server blamed the client with a 400: a review); with a remote embedding
        service down, every call of a wrapped client failed before it reached the model,
        though the adds of that time were kept for the worker to embed later (a review).
        Why not use it: a vector of the wrong size searched an empty index, a NaN one
        ranked arbitrary memories.

        Raises:
            EmbedderOutputError: the answer is unusable and ``min_score`` asks for a
                cosine no hit can then have.
            EmbedderUnavailable: the embedder failed and ``min_score`` asks for one.
            EmbedderSetupError: the embedder cannot run on this install (its message
                names the command that mends it; waiting mends nothing)."""
        try:
            vector: Vector = checked_vectors(self.embedder, pending.result(), 1)[0]
            return vector
        except EmbedderOutputError as exc:
            if min_score is not None:
                raise
            log.warning("the query's vector is unusable, keyword hits only: %s", exc)
            return None
        except EmbedderSetupError:
            raise
        except Exception as exc:  # any failure of the embedder's own code or service
            if min_score is not None:
                raise EmbedderUnavailable(
                    f"the query could not be embedded, so min_score has no cosine to "
                    f"compare: {type(exc).__name__}: {exc}"
                ) from exc
            log.warning(
                "the query could not be embedded, keyword hits only: %s: %s",
                type(exc).__name__,
                exc,
            )
            return None

    def _query_vector(self, query: str, tenant: str) -> Future[Vectors]:
        """The query's vector, awaited after the keyword search: kept from an earlier
        search in the embedder's ``query_cache`` (when it has one, as MiniLM does), else
        queued to an embedder that batches (the server's, ``submit``) or embedded on a
        thread of the query pool, then kept there.

        Why keep it: the same question asked again (a retry, the next page of a search,
        an agent repeating itself) costs a forward pass, ~2-5 ms of a search's CPU. A
        query is embedded alone, so its vector is a pure function of its text. Why the
        tenant in the key: a server process serves every tenant with one embedder, and
        a shared entry would answer one tenant's query faster because another tenant
        asked it first, a timing signal between tenants. A long query is embedded by its
        end (:func:`dense_text`)."""
        query = dense_text(query)
        cache: TextCache[Vectors] | None = getattr(self.embedder, "query_cache", None)
        if cache is not None and (kept := cache.peek(query, tenant)) is not None:
            done: Future[Vectors] = Future()
            done.set_result(kept.copy())  # the caller's; the kept one stays as computed
            return done
        submit = getattr(self.embedder, "submit", None)
        pending: Future[Vectors] = (
            submit([query]) if submit else _query_pool().submit(self.embedder.embed, [query])
        )
        if cache is not None:
            pending.add_done_callback(functools.partial(_keep_query_vector, cache, query, tenant))
        return pending

    def _with_cosines_of_unembedded(
        self, flt: Filter, fused: list[Candidate], unembedded: set[str], query: Vectors
    ) -> list[Candidate]:
        """``fused`` with the query's cosine filled in for keyword hits that have no
        vector yet, from the vector the embedding worker will store for them.

        Why: ``min_score`` compares cosines, and such a hit had none, so a memory
        added a moment before was dropped by any floor (``add`` promises it is
        searchable when it returns). Only a search with a floor pays for this: pending
        rows exist between an ``add`` and the worker's next batch. Bounded by
        ``UNEMBEDDED_ROWS`` and ``UNEMBEDDED_TEXTS``: with 16 rows alone, a memory just
        added behind a bulk import of plain memories was dropped by the floor though
        its cosine passed; with 64 texts alone, a backlog of fact-rich turns was judged
        4-7 turns deep (two reviews). Every pending hit is read (a vector a search kept
        is found from the record, at no cost), only the bounded ones embedded. A row the
        embedder refuses (quarantined) keeps no cosine, and the floor's rule for hits
        without one; it does not cost the others theirs (``_pending_vectors``)."""
        wanted = [c.id for c in fused if c.id in unembedded]
        now = datetime.now(UTC)
        found = {
            r.id: r for r in self.store.get_many(flt.scope.tenant, wanted) if flt.matches(r, now)
        }
        vectors = self._pending_vectors([found[i] for i in wanted if i in found])
        if not vectors:
            return fused
        ids = list(vectors)
        scores = (normalize(np.stack([vectors[i] for i in ids])) @ query).tolist()
        cosines = {i: _cosine(c) for i, c in zip(ids, scores, strict=True)}
        return [c._replace(cosine=cosines[c.id]) if c.id in cosines else c for c in fused]

    def _pending_vectors(self, records: Sequence[MemoryRecord]) -> dict[str, Vectors]:
        """The vectors the worker will store for ``records`` (waiting for theirs, best
        hit first): those a search kept (``turn_vectors.KEPT``), then the others',
        made by the worker's recipe (``turn_vectors.embed_inputs``) in one ``embed``
        call, and kept: the best ``UNEMBEDDED_ROWS`` records', then more up to
        ``UNEMBEDDED_TEXTS`` texts. A record's texts are made (its facts extracted) only
        when it is to be embedded: making them for every pending hit cost seconds over a
        backlog of long turns (a review). When that call fails, each record is embedded
        alone, as the worker does: one the embedder refuses gets no vector and costs the
        others nothing."""
        key = embedder_key(self.embedder)
        vectors: dict[str, Vectors] = {}
        todo: list[tuple[MemoryRecord, tuple[str, ...]]] = []
        texts, full = 0, False
        for record in records:
            vector = kept(key, record)
            if vector is not None:
                vectors[record.id] = vector
                continue
            if full:
                continue  # a worse hit is not embedded; it may still have a kept vector
            more = len(todo) >= UNEMBEDDED_ROWS
            if more and texts >= UNEMBEDDED_TEXTS:
                full = True  # no record's texts are made to learn that none fits
                continue
            inputs = embedding_inputs(record)
            if more and texts + len(inputs) > UNEMBEDDED_TEXTS:
                full = True
                continue
            todo.append((record, inputs))
            texts += len(inputs)
        embed = functools.partial(_checked_embed, self.embedder)
        for batch in _batch_then_each(todo):
            try:
                found = embed_inputs(embed, [inputs for _, inputs in batch])
            except Exception:  # an embedder that fails here fails in the worker too
                continue
            for (record, _), vector in zip(batch, found, strict=True):
                keep(key, record, vector)
                vectors[record.id] = vector
            if len(batch) == len(todo):
                break
        return vectors

    def _with_stored_cosines(
        self, flt: Filter, fused: list[Candidate], unembedded: set[str], query: Vectors
    ) -> list[Candidate]:
        """``fused`` with the query's cosine filled in, from their stored vectors, for the
        keyword hits the vector search did not return (``Store.vector_scores``).

        Why: such a hit may pass ``min_score`` or not, and only its vector tells; one
        unrelated to the question came back with no cosine under the floor (a review).
        Why for every floor search, not only when the whole dense list passes (so that
        one beyond it might too): that shortcut holds for an exact vector search, and
        PostgreSQL's HNSW index is approximate. It missed the rank-1 keyword hit, cosine
        0.82, of a user whose texts another user had stored too, and the floor then
        dropped it: a search that found nothing relevant (a review). One store call for
        at most ``candidates`` ids (SQLite reads its in-memory index)."""
        wanted = [c.id for c in fused if c.cosine is None and c.id not in unembedded]
        if not wanted:
            return fused
        scores = self.store.vector_scores(flt.scope.tenant, wanted, query)
        return [c._replace(cosine=_cosine(scores[c.id])) if c.id in scores else c for c in fused]

    def _without_vectors(self, flt: Filter, ids: Sequence[str], dimensions: int) -> set[str]:
        """Which of the keyword hits ``ids`` have no vector yet (see ``fuse``); no store
        call for none.

        ``search`` asks before the vector search and again, about the hits the dense
        list lacks, after it, and takes either answer: a hit is then known to have had no
        vector when the vector search ran, or was judged by it. Asked only after, on
        PostgreSQL, where each read sees the table as it is then, a vector that another
        process's worker wrote between the two (a memory just added or updated there)
        made the hit one the dense search had never seen and that had a vector: it kept
        its keyword term alone, and a search for the exact new text of a memory just
        updated through the server missed it. (SQLite's answer comes from its in-process
        index as the vector search synced it: the second answer.)"""
        if not ids:
            return set()
        return set(self.store.without_vectors(flt.scope.tenant, ids, dimensions=dimensions))

    def _cut(self, hits: list[Hit], limit: int, token_budget: int | None) -> list[Hit]:
        out: list[Hit] = []
        used = 0
        for hit in hits:
            if len(out) >= limit:
                break
            tokens = self._tokens.tokens(hit.record) if self._tokens else 0
            if token_budget is not None and used + tokens > token_budget:
                continue  # a shorter memory further down may still fit
            used += tokens
            out.append(replace(hit, tokens=tokens))
        return out


def _position(record: MemoryRecord) -> tuple[str, int] | None:
    seq = record.metadata.get("seq")
    if record.session_id is None or not isinstance(seq, int):
        return None
    return record.session_id, seq


def conversational_rerank(hits: Sequence[Hit], cfg: RetrievalConfig) -> list[Hit]:
    """Let turns borrow relevance from their neighbours and their session.

    An answer in a conversation is often split over a question and its reply,
    and the session where a topic was discussed holds several relevant turns.
    """
    by_pos: dict[tuple[str, int], float] = {}
    for h in hits:  # facts extracted from one turn share its position: keep the best
        if (p := _position(h.record)) is not None and h.score > by_pos.get(p, 0.0):
            by_pos[p] = h.score
    session_best: dict[str, list[float]] = defaultdict(list)
    for (session, _seq), score in by_pos.items():
        session_best[session].append(score)
    session_strength = {s: sum(sorted(v, reverse=True)[:3]) for s, v in session_best.items()}
    rescored = []
    for h in hits:
        pos = _position(h.record)
        if pos is not None:
            session, seq = pos
            neighbour = max(
                by_pos.get((session, seq - 1), 0.0), by_pos.get((session, seq + 1), 0.0)
            )
            score = h.score + (
                cfg.neighbour_weight * neighbour + cfg.session_weight * session_strength[session]
            )
        else:
            score = h.score * (1 + cfg.session_weight)
        rescored.append(_rescored(h, score))
    rescored.sort(key=hit_order)
    return rescored


def _rescored(hit: Hit, score: float) -> Hit:
    """``hit`` with a new score (``dataclasses.replace`` looks the fields up on every
    call: the reranks rescore 50 hits on every search)."""
    return Hit(hit.record, score, hit.lexical_rank, hit.dense_rank, hit.tokens, hit.relevance)


def source_of(record: MemoryRecord) -> str:
    """The id of the turn a memory stands for: its source turn for a fact stored beside
    a turn (``metadata["fact_of"]``), else its own."""
    source = record.metadata.get(FACT_OF)
    return source if isinstance(source, str) else record.id


def by_source(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per source turn: its best scored member, the turn or one of its facts.

    Why the best member: whichever text matched the question best is the one worth
    its tokens in a window (a fact is about a third of its turn), and the hit still
    points to its turn (``source_of``, ``provenance``). Summing the members instead
    favours long turns with many facts: on LoCoMo (dev, categories 1-4) adding half
    the other members' scores lost 0.016 recall@10.
    """
    seen: set[str] = set()
    out: list[Hit] = []
    for h in hits:
        key = source_of(h.record)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


_WORDS = re.compile(r"\w+")

#: Words a name follows when it addresses someone ("Thanks Ana", "Hi, Ben").
_GREETINGS = (
    r"hi|hey|hello|thanks|thank\s+you|thx|cheers|dear|bye|goodbye|congrats|congratulations"
    r"|sorry|welcome|morning|evening|night"
)

#: A word used to address someone rather than to speak of them: after a greeting or thanks
#: ("Thanks, Ana!"), opening a sentence before a comma ("Ana, did you ...?"), or set off by
#: a comma at a sentence's end ("..., Ana!"). One group per form, each the word.
_ADDRESSED = re.compile(
    rf"\b(?:{_GREETINGS})\b[\s,]+(\w+)|(?:^|[.!?]\s+)(\w+)\s*,|,\s*(\w+)\s*(?:[.!?]|$)",
    re.IGNORECASE,
)


def named_speaker(query: str, hits: Sequence[Hit]) -> str | None:
    """The one speaker among ``hits`` whose name the query contains (as whole words,
    case-insensitive), or None when it names none or several.

    A name the query only addresses someone by (``_ADDRESSED``: "Thanks for the tip,
    Ana!") does not count. Why: a chat app or a wrapper searches with the user's message,
    and messages address people by name; the step then raised everything the person
    addressed had said fourfold, and the turn whose exact words were the query fell
    from the top 5 behind that person's unrelated turns (a review). LoCoMo's questions
    name speakers as what they ask about ("What did Melanie paint?"), which still counts."""
    folded = query.casefold()
    counts = Counter(_WORDS.findall(folded))
    for match in _ADDRESSED.finditer(folded):
        counts[next(word for word in match.groups() if word)] -= 1
    words = {word for word, n in counts.items() if n > 0}
    named = set()
    for h in hits:
        speaker = h.record.metadata.get("speaker")
        if isinstance(speaker, str) and speaker and speaker not in named:
            parts = _WORDS.findall(speaker.casefold())
            if parts and (parts[0] in words or all(p in words for p in parts)):
                named.add(speaker)
    return named.pop() if len(named) == 1 else None


def speaker_rerank(hits: Sequence[Hit], query: str, weight: float) -> list[Hit]:
    """Raise what the speaker a question is about said (see ``RetrievalConfig.speaker_weight``)."""
    speaker = named_speaker(query, hits)
    if speaker is None:
        return list(hits)
    rescored = [
        _rescored(h, h.score * (1 + weight)) if h.record.metadata.get("speaker") == speaker else h
        for h in hits
    ]
    rescored.sort(key=hit_order)
    return rescored


def temporal_match(record: MemoryRecord, cue: TimeRange) -> bool:
    """Whether ``record`` answers the time cue of a question.

    A bounded cue ("in May 2023") matches a memory dated inside it or naming a
    time inside it; a bare "when" matches a memory that names a time at all
    ("yesterday", "on 7 May 2023"), since that is where the answer is.
    """
    spans = list(_times_named(record.text, _anchor(record)))
    if cue.start is None and cue.end is None:
        return bool(spans)
    if record.event_time is not None:
        spans.append((record.event_time, record.event_time))
    return any(_overlaps(a, b, cue) for a, b in spans)


#: ``_times_named``'s results by the text's digest: no text is kept (``text_cache``), and
#: at most 262,144 entries and spans in all (~40 MB, however long the texts).
TIMES_NAMED: TextCache[tuple[tuple[datetime, datetime], ...]] = TextCache(
    65_536, weigh=lambda spans: 1 + len(spans), max_weight=262_144
)


def _anchor(record: MemoryRecord) -> datetime:
    """What the relative times a memory names ("yesterday") are counted from."""
    return record.event_time or record.created_at or datetime.now(UTC)


def _times_named(text: str, anchor: datetime) -> tuple[tuple[datetime, datetime], ...]:
    """The intervals ``text`` names (cached: resolving costs ~0.3 ms for a long turn)."""
    return TIMES_NAMED.get(
        text, anchor, lambda: tuple((m.start, m.end) for m in resolve(text, anchor))
    )


def _overlaps(start: datetime, end: datetime, cue: TimeRange) -> bool:
    """Whether ``[start, end)`` (an instant when the two are equal) meets the cue's
    ``[start, end)``. Why half-open on both sides: "30 April" (30 Apr to 1 May) counted
    as inside "in May" and "after April", and got the time boost (a review)."""
    try:
        before_end = cue.end is None or start < cue.end
        after_start = cue.start is None or end > cue.start or start == end == cue.start
        return before_end and after_start
    except TypeError:  # a naive date against an aware one: no comparison possible
        return False


def temporal_rerank(hits: Sequence[Hit], cue: TimeRange | None, weight: float) -> list[Hit]:
    """Raise memories that match the question's time cue (see ``temporal_match``)."""
    if cue is None:
        return list(hits)
    rescored = [
        _rescored(h, h.score * (1 + weight)) if temporal_match(h.record, cue) else h for h in hits
    ]
    rescored.sort(key=hit_order)
    return rescored
