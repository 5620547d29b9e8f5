"""The Memory facade: mem0-like verbs over a Store, an Embedder and a retriever.

    >>> from contextos import Memory
    >>> m = Memory("memory.db")                      # doctest: +SKIP
    >>> m.add("I'm allergic to peanuts", user_id="ana")  # doctest: +SKIP
    >>> m.search("what can't ana eat?", user_id="ana")   # doctest: +SKIP

``add`` is durable and lexically searchable when it returns; vectors are
computed in batches by a background thread (``flush()`` waits for them).
Every read is scoped: a search without user, agent or session is refused
rather than answered across users.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from contextos.llm.tokens import Tokenizer, default_tokenizer

from ..config import EMPTY_DB, Settings, check_not_folder, load_settings
from ..embed import Embedder, make_embedder
from ..engine.message_text import check_unicode
from ..errors import ConfigError, Conflict, EmbedderUnavailable, NotFound, ScopeError
from ..keyed_locks import KeyedLocks
from ..retry import wait_before_retry
from ..store import open_store
from ..store.base import (
    Derived,
    EmbeddedText,
    EmbeddingStatus,
    Newest,
    Patch,
    Quoting,
    Repeats,
    Store,
)
from ..store.pages import MemoryPage, keyed_page
from ..store.records import patched, stored_json
from ..times import opt_utc
from ..types import (
    Filter,
    HistoryEvent,
    Hit,
    MemoryRecord,
    MemoryType,
    Message,
    Scope,
    content_hash,
    scope_id,
    validate_tenant,
)
from .embedding_worker import FLUSH_POLL_S, EmbeddingWorker, embed_pending
from .ingest import (  # _context, _as_message: a reply's quote, as an add writes it
    MAX_TEXT_CHARS,
    AddOptions,
    _as_message,
    _context,
    build_records,
    check_add,
    check_metadata,
    next_seq,
    renamed_context,
)
from .record_tokens import RecordTokens
from .render import FACT_OF, TURN_FACTS, UTC_OFFSET, embedding_text
from .retrieval import TURN_FACTS_RETRIEVAL, HybridRetriever, RetrievalConfig

if TYPE_CHECKING:  # extraction is loaded by the first add(infer=True), not by import
    from .extract import Extractor
    from .reconcile import Reconciler
    from .transfer import ImportReport

MAX_LIMIT = 1000

#: Tries of an add to a session whose newest record keeps changing under it (each
#: failed try means another add to it, or an erasure in it, committed meanwhile).
ADD_TRIES = 50

#: Adds to one session through one Memory take turns (a lock per stripe of sessions):
#: its threads do not refuse each other's writes, and a slow add is not starved by fast.
#: Sessions of other users share a stripe, so it is held only to read and write, never
#: while a model is asked (an inferring add decides before it takes it, see ``_infer``).
SESSION_STRIPES = 64

log = logging.getLogger(__name__)

#: One try of an add to a session: given the session's newest record as read (what the
#: write is conditional on) and its latest turn, the records written (``Conflict``: none).
AddTry = Callable[[Newest | None, MemoryRecord | None], list[MemoryRecord]]


def _db_location(path_or_url: object) -> str:
    """``Memory``'s database argument as the path or URL string the store opens.

    Why checked here: the CLI refuses an empty ``--db``, but ``Memory("")`` (a path read
    from an unset setting) silently opened the shared default database of every app and
    of the CLI, ``Memory("  ")`` created a file named by spaces, and ``Memory(config)``
    (mem0's way to configure it) created a SQLite file named after the dict's text and
    ignored every setting in it (a review)."""
    if isinstance(path_or_url, Mapping):
        raise TypeError(
            "Memory takes a database path or a postgresql:// URL, not a dict of settings: "
            "pass the other settings as Memory(path, settings=Settings(...)) or keyword "
            "arguments (embedder=, tenant=, ...); see docs/api.md"
        )
    if not isinstance(path_or_url, (str, os.PathLike)):
        raise TypeError(
            "the database must be a path or a postgresql:// URL string, "
            f"not {type(path_or_url).__name__}"
        )
    location = os.fspath(path_or_url)
    if not isinstance(location, str):  # a bytes path
        raise TypeError("the database path must be text (str or pathlib.Path), not bytes")
    if not location.strip():
        raise ConfigError(EMPTY_DB)
    check_not_folder(location)  # "data/": a file named data was made; "data": StoreError
    return location


def _parts_checked(
    embedder: object, store: object, settings: object, tokenizer: object, retrieval: object
) -> Embedder | None:
    """Refuse a part of ``Memory(...)`` of the wrong type, naming what to pass; return
    the embedder, a name (``"minilm"``) built as ``--embedder`` and
    ``CONTEXTOS_EMBEDDER`` build it (:func:`~contextos.embed.make_embedder`).

    Why: a name, a mem0-style dict or a path string was taken as it was and failed far
    from here: the worker logged an ``AttributeError`` every second for good while
    ``add`` reported success and ``search`` raised it (a review)."""
    if isinstance(embedder, str):
        return make_embedder(embedder)
    if embedder is not None and not (
        callable(getattr(embedder, "embed", None))
        and hasattr(embedder, "model_id")
        and hasattr(embedder, "dimensions")
    ):
        raise TypeError(
            "embedder must be an Embedder (model_id, dimensions, embed) or its name "
            f"('minilm-int8', 'minilm', 'hash'), not {type(embedder).__name__}"
        )
    if isinstance(store, (str, os.PathLike)):
        raise TypeError(
            "store takes an open Store; to open a database, pass its path or URL as the "
            "first argument: Memory(path)"
        )
    if store is not None and not callable(getattr(store, "put", None)):
        raise TypeError(f"store must be a contextos Store, not {type(store).__name__}")
    if settings is not None and not isinstance(settings, Settings):
        raise TypeError(
            "settings must be a contextos.config.Settings (Settings(db=..., ...) or "
            f"load_settings(...)), not {type(settings).__name__}"
        )
    if tokenizer is not None and not callable(getattr(tokenizer, "count_messages", None)):
        raise TypeError(
            "tokenizer must be a Tokenizer (count, count_messages), e.g. "
            f"contextos.default_tokenizer(), not {type(tokenizer).__name__}"
        )
    if retrieval is not None and not isinstance(retrieval, RetrievalConfig):
        raise TypeError(
            "retrieval must be a contextos.RetrievalConfig (e.g. "
            f"RetrievalConfig(candidates=50)), not {type(retrieval).__name__}"
        )
    return embedder  # type: ignore[return-value]


class PendingWrites(Protocol):
    """Writes into a Memory still running on another thread (a wrapped client's
    background commit of its last reply), which :meth:`Memory.close` waits for."""

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the writes in flight (up to ``timeout`` seconds); raise nothing."""
        ...


def _batch(size: object) -> int | None:
    """``batch_size`` of an export or import, checked: a positive int, or None for the
    default (:data:`~contextos.memory.transfer.BATCH`, 500)."""
    if size is not None and (type(size) is not int or size < 1):
        raise ValueError(f"batch_size must be a positive integer, not {size!r}")
    return size


class Memory:
    """Long-term memory for LLM applications. See the module docstring."""

    def __init__(
        self,
        path_or_url: str | Path | None = None,
        *,
        tenant: str | None = None,
        embedder: Embedder | str | None = None,
        store: Store | None = None,
        settings: Settings | None = None,
        tokenizer: Tokenizer | None = None,
        background_embedding: bool = True,
        worker: EmbeddingWorker | None = None,
        retrieval: RetrievalConfig | None = None,
        extractor: Extractor | None = None,
        reconciler: Reconciler | None = None,
        turn_facts: bool = False,
    ) -> None:
        if path_or_url is not None:
            path_or_url = _db_location(path_or_url)
        embedder = _parts_checked(embedder, store, settings, tokenizer, retrieval)
        if settings is not None and path_or_url is not None:
            # The path given wins: Memory("b.db", settings=s) opened s.db, silently.
            settings = replace(settings, db=str(path_or_url))
        self.settings = settings or load_settings(
            db=str(path_or_url) if path_or_url is not None else None,
            tenant=tenant,
            default_db=store is None,  # a store given needs no default database
            given=("embedder",) if embedder is not None else (),
        )
        # The tenant rule here too (blank is an error, not "not given"): rows written under
        # a name the CLI and the server refuse could never be read from them.
        self.tenant = validate_tenant(tenant if tenant is not None else self.settings.tenant)
        owns_store = store is None
        if store is None:  # from CONTEXTOS_DB or settings too: "   " made a file of spaces
            _db_location(self.settings.db)
        self.store: Store = store or open_store(self.settings.db)
        try:
            self.embedder = embedder or make_embedder(self.settings.embedder)
            self.tokenizer = tokenizer or default_tokenizer()
            #: Counts each record written (stored with it, so searches need not count it).
            self.record_tokens = RecordTokens(self.tokenizer)
            self.extractor = extractor  # None: the offline extractor, for add(infer=True)
            self.reconciler = reconciler  # None: the heuristic reconciler
            #: Store the offline extractor's facts beside the turns of a session (see ``add``).
            self.turn_facts = turn_facts
            if retrieval is None and turn_facts:
                retrieval = TURN_FACTS_RETRIEVAL
            self.retriever = HybridRetriever(
                self.store, self.embedder, config=retrieval, tokenizer=self.tokenizer
            )
            #: Adds to a session take turns per stripe (see ``_after_newest``).
            self._session_locks = [threading.Lock() for _ in range(SESSION_STRIPES)]
            #: Inferring adds of one user (or agent) take turns (see ``_infer``).
            self._owner_locks = KeyedLocks()
            #: Adds of one text in one scope take turns (see ``_reuse_repeats``).
            self._repeat_locks = KeyedLocks()
            # A shared worker (one per store, e.g. in the server) is used but not owned.
            self._owns_worker = worker is None
            self._worker = worker or (
                EmbeddingWorker(
                    self.store, self.embedder, batch_size=self.settings.embed_batch_size
                )
                if background_embedding and not self.store.read_only
                else None
            )
            if self._worker is not None:
                self._worker.notify()  # embed whatever a crashed process left pending
            self._pending: weakref.WeakSet[PendingWrites] = weakref.WeakSet()
            self._finalizer = _close_when_dropped(
                self,
                self._worker if self._owns_worker else None,
                self.store if owns_store else None,
            )
        except BaseException:
            # Interrupted while it opens (Ctrl-C, or a SIGTERM a benchmark raises as
            # KeyboardInterrupt): the half-built Memory is never returned to be closed, and
            # its worker went on reading a store whose folder was removed meanwhile ("disk
            # I/O error" after "terminated", a fresh clone's suite, s56). What it opened is
            # closed here, as close() would.
            self._close_opened(owns_store)
            raise

    # -- writing ---------------------------------------------------------------
    def add(
        self,
        messages: str | Message | Mapping[str, Any] | Sequence[Any],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        event_time: datetime | str | None = None,
        memory_type: MemoryType | None = None,
        infer: bool = False,
        extractor: Extractor | None = None,
        dedupe: bool = True,
        facts: bool | None = None,
    ) -> list[MemoryRecord]:
        """Store messages as memories (one per message), durably, and return them.

        With ``Memory(turn_facts=True)`` (or ``facts=True``), each turn of a session
        is stored with its facts beside it, as the offline extractor writes them
        ("Caroline went to a support group on 7 May 2023."), pointing to it
        (``metadata["fact_of"]``); search returns one hit per turn, the turn or its
        best matching fact. On LoCoMo this finds more evidence in fewer tokens than
        the turns alone, for about twice the search CPU (docs/benchmarks.md). Only
        the turns are returned.

        With ``infer=True`` the facts of the messages are stored instead: the
        extractor (``extractor``, else the Memory's, else the offline one) proposes
        semantic/episodic/procedural facts, each is reconciled with similar stored
        memories (ADD/UPDATE/DELETE/NOOP) and the records written are returned
        (possibly none). The extractor then chooses each fact's type, so giving
        ``memory_type`` too is an error (it was silently ignored).
        A memory of facts searches best with ``retrieval=retrieval.FACT_RETRIEVAL``.

        Args:
            messages: text, a Message, a dict with role/content (and optional
                name, caption, dia_id...), or a list of those.
            user_id/agent_id/session_id: the scope; at least one is required.
                None leaves an id out; an empty or blank id is an error
                (the one rule of every scope, ``contextos.types.scope_id``).
            metadata: JSON-serialisable data kept with every record.
            event_time: when it was said or happened: a datetime or an ISO-8601
                string (naive: UTC). None: unknown, and stored as
                None (no date is rendered with the memory); a ``time_range`` search
                then places the memory by when it was added (``created_at``).
            memory_type: "episodic" (None: the default), "semantic" or
                "procedural"; not with ``infer=True`` (but "episodic", the default
                of before, which clients still send).
            infer: extract and reconcile facts instead of storing the turns verbatim.
            extractor: the Extractor for this call (with ``infer=True``).
            facts: store each session turn's extracted facts beside it (None: the
                Memory's ``turn_facts``, False by default).
            dedupe: outside a session, an exact repeat (same text, type and
                scope) returns the stored record instead of a copy, so a fact
                added twice is stored and injected once. Turns of a session
                are never merged. ``False`` stores every message.

        Raises:
            ScopeError: no user, agent or session given, or an empty or blank one.
            TypeError/ValueError: malformed messages, oversized text, a non-string id,
                ``memory_type`` with ``infer=True``.
            Conflict: the session changed under every one of ``ADD_TRIES`` tries
                (nothing was written).
            NotFound: ``infer=True`` with a caller's ``reconciler`` whose decision
                updates or deletes a memory it was not shown among ``similar`` (or one
                outside the add's owner); nothing was written.
        """
        opts, said = check_add(
            Scope(self.tenant, user_id, agent_id, session_id),
            messages,
            metadata=metadata,
            event_time=event_time,
            memory_type=memory_type,
            infer=infer,
        )
        if infer:
            return self._infer(said, opts, extractor)
        facts = self.turn_facts if facts is None else facts

        def write(newest: Newest | None, last: MemoryRecord | None) -> list[MemoryRecord]:
            return self._add_once(said, opts, dedupe, facts, newest, last)

        records = self._after_newest(opts.scope, write)
        self._embed_later()  # no lock held: an embedder may be remote
        return records

    def _after_newest(self, scope: Scope, write: AddTry) -> list[MemoryRecord]:
        """``write(newest, last)`` with the session's newest record and latest turn as
        read now, tried again while its write is refused (``Conflict``: ``Store.put``'s
        ``after`` found another newest record).

        The one rule of every add to a session, of turns or of inferred facts: its
        records are numbered after, and may quote, the latest turn as read, so they are
        written only if nothing was added or erased in the session meanwhile.

        Threads of this Memory take turns per session (a stripe lock), so they never
        refuse each other; other handles and processes are met by random, growing
        waits between tries (``wait_before_retry``)."""
        with self._session_turns(scope):
            for attempt in range(ADD_TRIES):
                newest, last = self._last_turn(scope)
                try:
                    return write(newest, last)
                except Conflict:  # an add or erasure in this session since it was read
                    wait_before_retry(attempt)
        raise Conflict(f"the session changed under each of {ADD_TRIES} tries; nothing written")

    def _add_once(
        self,
        said: list[Message],
        opts: AddOptions,
        dedupe: bool,
        facts: bool,
        newest: Newest | None,
        last: MemoryRecord | None,
    ) -> list[MemoryRecord]:
        """One try of ``add`` (turns as said) after ``last``, written only if ``newest``
        is still the session's newest record (see ``_after_newest``)."""
        records = build_records(said, opts, previous=last)
        if dedupe and opts.scope.session_id is None:
            # The look-up and the write of each text in one go, per scope and text: two
            # threads adding one text at once (a double submit) both found nothing and
            # both stored it (a review). Within this process; see _reuse_repeats.
            keys = sorted({(opts.scope, r.hash) for r in records}, key=repr)
            with ExitStack() as held:
                for key in keys:
                    held.enter_context(self._repeat_locks.held(key))
                return self._write_new(*self._reuse_repeats(records), facts, opts, newest)
        return self._write_new(records, records, (), facts, opts, newest)

    def _write_new(
        self,
        records: list[MemoryRecord],
        new: list[MemoryRecord],
        repeats: Sequence[Repeats],
        facts: bool,
        opts: AddOptions,
        newest: Newest | None,
    ) -> list[MemoryRecord]:
        """Write ``new`` (with their facts, in a session that stores them) after
        ``newest``, and only while ``repeats`` hold (``Store.put``); return
        ``records``, the written ones as stored."""
        if new and facts and opts.scope.session_id is not None:
            # Each turn's facts right after it: the session's newest record then
            # belongs to its last turn (see ``_last_turn``). The turn keeps the mark
            # that it takes facts: an update derives them again (``_derived``).
            facts_of: dict[str, list[MemoryRecord]] = {}
            for fact in _facts_beside(new):
                facts_of.setdefault(str(fact.metadata[FACT_OF]), []).append(fact)
            new = [r for turn in new for r in (_marked(turn), *facts_of.get(turn.id, ()))]
        if new:
            counted = {r.id: self.record_tokens.counted(r) for r in new}
            self.store.put(list(counted.values()), after=newest, repeats=repeats)
            records = [counted.get(r.id, r) for r in records]
        return records

    def _reuse_repeats(
        self, records: list[MemoryRecord]
    ) -> tuple[list[MemoryRecord], list[MemoryRecord], list[Repeats]]:
        """Swap each record for a stored (or earlier) one that it repeats exactly
        (:func:`_same_memory`); return the records to hand back, those still to write,
        and what their write depends on (the records with their texts as read).

        The stores look the hash up in an index (``Store.find_by_hash``). Adds of one
        text in one scope take turns within a process (``_add_once``); across
        processes the write is refused when another stored the text meanwhile
        (``Store.put``'s ``repeats``), and the add, tried again, finds that record.
        """
        out: list[MemoryRecord] = []
        new: list[MemoryRecord] = []
        # The new records by scope and hash: scanning all of them for each record made
        # one add of 20,000 messages take 57 s (50 million comparisons; a review).
        new_by: dict[tuple[Scope, str], list[MemoryRecord]] = {}
        seen: dict[tuple[Scope, str], Repeats] = {}
        for record in records:
            key = (record.scope, record.hash)
            twin = next((r for r in new_by.get(key, ()) if _same_memory(r, record)), None)
            if twin is None:
                stored = self.store.find_by_hash(record.scope, record.hash)
                twin = next((r for r in stored if _same_memory(r, record)), None)
                ids = frozenset(r.id for r in stored)
                seen.setdefault(
                    (record.scope, record.hash), Repeats(record.scope, record.hash, ids)
                )
            if twin is None:
                new.append(record)
                new_by.setdefault(key, []).append(record)
            out.append(twin or record)
        return out, new, list({(r.scope, r.hash): seen[(r.scope, r.hash)] for r in new}.values())

    def _infer(
        self, messages: list[Message], opts: AddOptions, extractor: Extractor | None
    ) -> list[MemoryRecord]:
        """``add(infer=True)``: the facts are extracted once, decided, then numbered and
        written under the rule of every add to a session (see ``_after_newest``).

        No model is asked while a lock that other users' adds wait for is held: the
        extraction and the decisions (the reconciler's model calls) run before the
        session's lock (one per stripe of sessions) is taken, and the lock is held only
        to read the session's newest record and write, the records numbered and dated
        after it. The write is conditional on what the decisions were made on
        (``Plan.commit``): when that changed meanwhile (``Plan.still_holds``: a fact of
        the user added, one shown closed, rewritten or erased) the facts are decided
        again, outside the lock; a write refused while it all still holds (another
        writer in the session) is tried again as decided, without asking the model.

        Threads of this Memory adding facts of one user (or agent) take turns from
        their first read to their write, with a lock of that user's (or agent's) alone
        (``KeyedLocks``, never shared with another): each decides on what the one
        before it wrote, instead of both deciding on one read and the second being
        refused and asking the model again. Handles in other processes take turns
        with it through the store (``Store.owner_turn``: an advisory lock on
        PostgreSQL, a lock in ``<db>-turns`` beside a SQLite file)."""
        from .infer import extract_facts, numbered, plan_facts, written
        from .reconcile import Plan, owner_scope

        facts = extract_facts(messages, opts, extractor or self.extractor)
        scope = opts.scope
        in_session = scope.session_id is not None
        plan: Plan | None = None
        records: list[MemoryRecord] | None = None
        owner = owner_scope(scope)
        with self._owner_locks.held(owner), self.store.owner_turn(owner):
            for attempt in range(ADD_TRIES):
                if plan is None:  # no session lock held: the model may take its time
                    try:
                        plan = plan_facts(
                            self.store,
                            facts,
                            scope,
                            first_seq=0 if in_session else None,  # numbered when written
                            reconciler=self.reconciler,
                            count=self.record_tokens,
                        )
                    except Conflict:  # a fact it named changed while it was decided
                        wait_before_retry(attempt)
                        continue
                with self._session_turns(scope):
                    newest, last = self._last_turn(scope)
                    if plan.still_holds():
                        try:
                            outcomes = plan.commit(
                                after=newest,
                                now=datetime.now(UTC),  # after the newest record read
                                metadata=numbered(next_seq(last)) if in_session else None,
                            )
                        except Conflict:  # another writer since the reads: try again
                            pass
                        else:
                            records = written(outcomes)
                    else:
                        plan = None  # decided on what changed since: decide again
                if records is not None:
                    break
                wait_before_retry(attempt)
        if records is None:
            raise Conflict(f"the memories changed under each of {ADD_TRIES} tries; nothing written")
        self._embed_later()  # no lock held: an embedder may be remote
        return records

    def _session_turns(self, scope: Scope) -> AbstractContextManager[object]:
        """The lock that adds to ``scope``'s session through this Memory take turns with
        (one per stripe of sessions: held only to read and write, never while a model
        is asked); none outside a session."""
        if scope.session_id is None:
            return nullcontext()
        return self._session_locks[hash(_session_of(scope)) % SESSION_STRIPES]

    def _last_turn(self, scope: Scope) -> tuple[Newest | None, MemoryRecord | None]:
        """The newest record of this session as read (what a write after it is based
        on: its id and last update), and the latest turn: a reply is indexed with what it
        answers, and numbered after it (``metadata["seq"]``) so retrieval knows
        neighbours.

        The session's, whoever added it (tenant and session id alone): in a group chat
        each user adds their own turns with their own ``user_id``, and read by the
        add's whole scope three turns took ``seq`` 1 and a user's answer was indexed
        as replying to their own earlier turn instead of the question before it (a
        review)."""
        if scope.session_id is None:
            return None, None
        flt = Filter(scope=_session_of(scope), include_invalid=True)
        last = self.store.list(flt, limit=1)
        if not last:
            return Newest(flt, None), None
        newest = Newest(flt, last[0].id, last[0].updated_at)
        source = last[0].metadata.get(FACT_OF)  # a fact stored right after its turn
        if isinstance(source, str):
            return newest, self.store.get(self.tenant, source) or last[0]
        return newest, last[0]

    def _embed_later(self) -> bool:
        """Embed what is pending (inline), or wake the worker; False when the embedder
        is down (``EmbedderUnavailable``): the records stay pending, lexically
        searchable, and the next add or flush tries again."""
        if self._worker is not None:
            self._worker.notify()
            return True
        try:
            while embed_pending(
                self.store, self.embedder, batch_size=self.settings.embed_batch_size
            ):
                pass
        except EmbedderUnavailable as exc:
            log.warning("embedder unavailable; memories stay pending: %s", exc)
            return False
        return True

    def flush(self, timeout: float | None = None, *, others: bool = True) -> bool:
        """Wait until every stored memory has its vector. False if ``timeout`` ran out,
        or (without a background worker) when the embedder is down.

        ``others=False``: only until this process has embedded what it could claim, not
        for records another process claimed (``EmbeddingWorker.flush``): what this
        process wrote has its vector then, unless another process is embedding it.

        With a background worker and no ``timeout``, this waits for as long as the
        embedder is down (an outage keeps records pending, not quarantined): pass a
        timeout where the caller must not block, e.g. at exit.

        A read-only store (``Store.read_only``) answers at once: nothing pending can be
        embedded here (search still judges such memories by meaning, embedding them
        per query), so it is True only when nothing is pending."""
        if self.store.read_only:
            return self.store.embedding_status().pending == 0
        if self._worker is None:
            return self._flush_inline(timeout, others=others)
        return self._worker.flush(timeout, others=others)

    def _flush_inline(self, timeout: float | None, *, others: bool) -> bool:
        """``flush`` without a background worker: embed what this process can claim,
        then (``others``) wait for the records another process claimed, taking them
        once their claim runs out, as the worker's flush does.

        Why: it returned True as soon as nothing was left to claim, with records still
        pending under a live process's claim or a dead one's (a review: True at once,
        20 pending, where ``timeout`` was 10 s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._embed_later():
                return False
            if not others or self.store.embedding_status().pending == 0:
                return True
            left = FLUSH_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, FLUSH_POLL_S))

    @property
    def embedding_rate(self) -> float | None:
        """Records per second the background worker embedded, timed over its own work."""
        if self._worker is None or self._worker.seconds == 0:
            return None
        return self._worker.embedded / self._worker.seconds

    def update(
        self,
        memory_id: str,
        text: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        expected_text: str | None = None,
        expected_updated_at: datetime | None = None,
    ) -> MemoryRecord:
        """Change a memory's text and/or metadata; the old text stays in ``history``.

        ``expected_text``: write only while the memory's text is still this one (a
        compare-and-set, checked in the write's own transaction), else ``Conflict`` and
        nothing is written. An edit made from a text read earlier (an agent appending to
        its core memory while an operator redacts it) then never writes over a change
        made since: it read the text again and decides anew.

        ``expected_updated_at``: the same for the whole record, text and metadata: write
        only while its ``updated_at`` is still this one (the record as read, unchanged
        since: the write's transaction checks text, metadata and event time), else
        ``Conflict``. An editor that shows both (the inspector's panel) sends what it
        loaded, so a metadata change made meanwhile is not replaced unseen either.

        ``metadata`` replaces the record's whole, except the keys the library keeps
        for a session turn: its place (``seq``) and ``role`` stay unless given (a tag
        added by replacing the metadata used to drop the turn's number, and the next
        turn started at 0). Given, the library's keys must keep their value (ValueError
        naming the key, nothing written), as ``add`` refuses them: ``role``,
        ``utc_offset``, a fact's link to its turn (``fact_of``), and in a session
        ``seq`` and ``turn_facts``. The mark of an inferred fact (``inferred``) stays
        too unless given: what later inferring adds are reconciled with.

        What is derived from the record follows it: its vector (``Store.update`` with
        ``embeds``) and the facts stored beside a turn, when the text changes or the
        metadata they read does (a speaker's name, an image caption). The facts are
        replaced in the update's own transaction: a crash leaves the old turn with its
        old facts or the new one with its new facts, never the new text with facts of
        the old. A turn takes facts when it was added with them (``add(facts=True)``
        or a ``turn_facts`` Memory: ``metadata["turn_facts"]``) or has some, whatever
        this Memory's ``turn_facts``. The reply to a session turn (and the facts beside
        the reply) quote it in their indexed context: that quote follows a new text or
        speaker too, in the same transaction (``Store.update``'s ``quotes``), so a
        search for redacted words no longer finds the reply; a new speaker's name
        replaces the old one in the turn's own context (and its facts') as well.

        Raises:
            NotFound: no such memory in this tenant.
            Conflict: another writer changed the turn under each of ``ADD_TRIES`` tries,
                or the text is not ``expected_text`` (nothing was written)."""
        _check_id(memory_id)
        if text is None and metadata is None:
            raise ValueError("update needs text or metadata")
        if text is not None:
            _check_text(text)
        if metadata is not None:
            check_metadata(metadata)
        given = metadata
        expected = opt_utc(expected_updated_at, "expected_updated_at")
        embeds = _EmbeddedTexts()  # made once per version of the record
        for attempt in range(ADD_TRIES):
            before = self._as_expected(memory_id, expected_text, expected)
            if given is not None:
                metadata = _kept_metadata(before, given)
                check_metadata(metadata)  # with the keys kept, as every memory's is
            patch = Patch(text=text, metadata=metadata)
            derived = self._derived(before, patch, embeds)
            if derived is None and (expected_text is not None or expected is not None):
                derived = Derived(based_on=before)  # the store checks it is still as read
            try:
                record = self.store.update(
                    self.tenant,
                    memory_id,
                    patch,
                    count=self.record_tokens,
                    embeds=embeds,  # a new speaker or caption is embedded again
                    derived=derived,
                    quotes=QUOTING if _is_session_turn(before) else None,
                )
            except Conflict:  # changed since it was read: its facts are derived anew
                wait_before_retry(attempt)
                continue
            self._embed_later()
            return record
        raise Conflict(f"memory {memory_id!r} changed under each of {ADD_TRIES} tries")

    def _derived(self, before: MemoryRecord, patch: Patch, embeds: EmbeddedText) -> Derived | None:
        """The facts stored beside a turn, re-derived for ``patch`` (None: it has none
        and takes none). They say what it said, who said it and what it showed (part
        of its embedded text), so they are replaced when that text changes; in the
        update's own transaction (``Store.update``'s ``derived``), which a crash
        cannot split, and only if the turn is still as read here, so the decision
        and the facts are never made from a text another writer replaced meanwhile.

        Whether a turn takes facts is the add's choice, kept with the turn (its
        :data:`TURN_FACTS` mark, or facts beside it, for a turn added before the mark),
        not this Memory's ``turn_facts``: decided by the updating Memory, a turn added
        with ``facts=True`` lost its facts for good once updated through a default
        Memory, and one added with ``facts=False`` gained some through a
        ``turn_facts`` one (a review)."""
        if not _is_session_turn(before):
            return None
        facts = self._facts_of(before)
        after = patched(before, patch)
        if not facts and after.metadata.get(TURN_FACTS) is not True:
            return None
        if embeds(before) == embeds(after):
            return Derived(based_on=before)
        # A fact copies its turn's context: the name there follows a new speaker, as
        # the turn's own does (``QUOTING``).
        turn = replace(after, context=renamed_context(before, after))
        new = [self.record_tokens.counted(r) for r in _facts_beside([turn])]
        return Derived(based_on=before, drop=[f.id for f in facts], put=new)

    def _facts_of(self, *records: MemoryRecord) -> list[MemoryRecord]:
        """The facts stored beside these turns (``metadata["fact_of"]`` is a turn's id),
        in one read a scope: a purge of a whole session's 4,000 turns looked each turn's
        facts up alone, one scan of the session each: quadratic, 38 s on SQLite)."""
        by_scope: dict[Scope, list[str]] = {}
        for record in records:
            if FACT_OF not in record.metadata:
                by_scope.setdefault(record.scope, []).append(record.id)
        return [
            f
            for scope, ids in by_scope.items()
            for f in self.store.pointing_to(scope, FACT_OF, ids)
        ]

    def delete(
        self,
        memory_id: str,
        *,
        purge: bool = False,
        expected_text: str | None = None,
        expected_updated_at: datetime | None = None,
    ) -> None:
        """Delete a memory. Its history keeps the event, and by default the text it had
        (an audit trail readable by anyone with access to the tenant). With
        ``purge=True`` the text leaves history, the search index and every copy in
        other records' reply context, and the file's write-ahead log is truncated.
        The facts stored beside a turn are deleted (and purged) with it.

        ``expected_text`` / ``expected_updated_at``: as :meth:`update` takes them,
        delete only the version the caller read; checked in the delete's transaction.

        Raises:
            NotFound: no such memory.
            Conflict: the memory changed since it was read (nothing was deleted).
        """
        _check_id(memory_id)
        if expected_text is not None or expected_updated_at is not None:
            before = self._as_expected(memory_id, expected_text, expected_updated_at)
            self._delete([memory_id], purge=purge, based_on=[before])
            return
        # A purge of a memory deleted earlier without one erases what is left of it: its
        # history's texts and their copies (``delete_many``), read here first to tell
        # an id with something left from one with nothing (NotFound, as any unknown id).
        events = self.store.history(self.tenant, memory_id) if purge else []
        if self.delete_many([memory_id], purge=purge):
            return
        texts_left = any(e.old_text or e.new_text for e in events)
        # It also takes any fact of a turn left behind (by a version that deleted them
        # one transaction at a time, and crashed). Only for an id this tenant ever had
        # (its history is one indexed read): the search for facts reads every record's
        # metadata, and any id could be sent to make each request pay for that.
        orphans = self._orphan_facts(memory_id) if events else []
        if orphans:
            self.store.delete_many(self.tenant, [f.id for f in orphans], purge=True)
        if not (texts_left or orphans):
            raise NotFound(f"no memory {memory_id!r}")

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        """Delete several memories as :meth:`delete` deletes each (the facts stored
        beside a turn with it), in one transaction; returns the ids deleted, in the
        order given, skipping those already gone (no ``NotFound``).

        Why: a purge truncates the write-ahead log and scrubs the text from every other
        record, about 40 ms each at 8,000 memories. An offload that found its turns
        erased while it archived them (a ``forget`` racing it) purged its 8,000 copies
        one at a time: 436 s during which the forgotten user's text stayed searchable
        (a review, over HTTP).
        """
        if isinstance(memory_ids, str):
            raise TypeError("delete_many() takes a sequence of ids, not one string")
        memory_ids = list(memory_ids)  # a generator, read once by the check, deleted nothing
        for memory_id in memory_ids:
            _check_id(memory_id)
        return self._delete(memory_ids, purge=purge)

    def _as_expected(
        self, memory_id: str, expected_text: str | None, expected_updated_at: datetime | None
    ) -> MemoryRecord:
        """The memory as stored now, if it has ``expected_text`` and was last changed at
        ``expected_updated_at`` (those given); else ``Conflict`` (``NotFound``: gone)."""
        expected = opt_utc(expected_updated_at, "expected_updated_at")
        before = self.store.get(self.tenant, memory_id)
        if before is None:
            raise NotFound(f"no memory {memory_id!r}")
        if expected_text is not None and before.text != expected_text:
            raise Conflict(f"memory {memory_id!r} no longer has the text expected")
        if expected is not None and before.updated_at != expected:
            raise Conflict(f"memory {memory_id!r} was changed since it was read")
        return before

    def _delete(
        self,
        memory_ids: Sequence[str],
        *,
        purge: bool,
        based_on: Sequence[MemoryRecord] = (),
    ) -> list[str]:
        """``delete_many``; ``based_on``: records as read, checked unchanged in the
        delete's transaction (``Store.delete_many``)."""
        found = self.store.get_many(self.tenant, list(dict.fromkeys(memory_ids)))
        # A turn and its facts (they repeat its text) in one transaction: a crash
        # between them left the facts, and the purged text in them, for good.
        facts = [f.id for f in self._facts_of(*found)]
        # A purge also erases what is left of those deleted earlier without one.
        present = {r.id for r in found}
        gone = [i for i in memory_ids if purge and i not in present]
        ids = list(dict.fromkeys([*(r.id for r in found), *facts, *gone]))
        deleted = set(
            self.store.delete_many(self.tenant, ids, purge=purge, derived=facts, based_on=based_on)
            if ids
            else ()
        )
        # An update that committed after the facts were read replaced them with others.
        late = [f.id for f in self._facts_of(*(r for r in found if r.id in deleted))]
        if late:
            self.store.delete_many(self.tenant, late, purge=purge, derived=late)
        return [i for i in dict.fromkeys(memory_ids) if i in deleted]

    def _orphan_facts(self, memory_id: str) -> list[MemoryRecord]:
        """Facts of this tenant that point to ``memory_id`` (``metadata["fact_of"]``),
        whatever their scope: their turn is gone, and its scope with it."""
        return self.store.pointing_to(Scope(tenant=self.tenant), FACT_OF, [memory_id])

    def forget(self, user_id: str | None = None, *, session_id: str | None = None) -> int:
        """Erase everything of one user, or of one session (exactly one of the two).

        A user: the memories, history, turns and session rows that name them, with
        the vectors; and in their sessions (``sessions(user_id=...)``: those in which
        a memory, a turn or the session's row names them) that no other user takes
        part in, also the memories and turns that name no user (the assistant's
        replies, which quote them). In a session another user takes part in (a group
        chat) those stay: the agent's replies and notes are everyone's (forget the
        session to remove them). A session: its log (turns, metadata) and every
        memory of it whoever it names, with their history and vectors (why: a log
        written with only an agent or session id named no user to forget).
        Both: copies of the erased text in other records' reply context. SQLite: no
        byte of it is left in the file or its -wal once this returns; if a reader
        still holds old pages past the busy timeout, ``ErasurePending`` (a StoreError
        carrying what was erased, ``.erased``) is raised after the commit, and the next
        write or close of any process finishes the erasure. Returns the number of
        memories removed (an ``Erasure``, which also counts session logs and turns).

        Raises:
            ScopeError: neither or both given, or an empty or blank id (see ``add``)."""
        if (user_id is None) == (session_id is None):
            raise ScopeError(
                "forget needs the user_id of the user to erase, or the session_id of the "
                "session (exactly one of the two)"
            )
        return self.store.forget(Scope(tenant=self.tenant, user_id=user_id, session_id=session_id))

    def forget_tenant(self) -> int:
        """Erase every row of this Memory's tenant: memories (of any user, agent or
        session), history, session logs, vectors, index rows, with ``forget``'s
        guarantee on the bytes left. For offboarding a customer: the per-user and
        per-session erasures cannot find records that name only an agent. API keys
        live in the server's key table (``KeyStore.delete_tenant``). Returns the
        number of memories removed."""
        return self.store.forget_tenant(self.tenant)

    def export(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every memory of a scope (with no id given: of the whole tenant), superseded
        and ended ones included, as the lines of an export: a header (``format``,
        ``version``, ``tenant``, ``scope``, ``exported_at``), then one dict a memory,
        everything :meth:`import_records` needs to store it again as it was (id, text,
        type, scope, metadata, context, creation, update and event times, validity,
        provenance), then the end line ``{"end": True, "count": N}`` (a file without it
        was cut short: :meth:`import_records` says so). Read lazily, a page at a time
        by key, so a store of any size is exported in bounded memory, all pages in one
        snapshot (``Store.list_snapshot``): the store as it was when the export began,
        whatever is written meanwhile; the snapshot is held until the iterator is read
        to the end or closed (what that holds up: docs/api.md). Not one snapshot, each
        page read on its own: a SQLite ``:memory:`` or read-only store (its reads share
        its writer's connection), and a store without ``list_snapshot``.
        ``json.dumps`` of each is a line of the file ``contextos export`` writes.
        ``batch_size``: memories read a page (default 500; at most 10,000 and 8 MiB).

        Why: a backup, a restore and a move from SQLite to PostgreSQL need every memory
        back with its id, times and validity; ``get_all`` and ``add`` lose those, and
        ``add`` refuses a session memory's library keys (a review). Not exported:
        vectors (remade on import by the embedding worker, with the target's embedder),
        history, and session logs (``Session`` turns; see docs/cli.md)."""
        from .transfer import export_records

        scope = Scope(self.tenant, user_id, agent_id, session_id)
        return export_records(self.store, scope, datetime.now(UTC), _batch(batch_size))

    def import_records(
        self,
        records: Iterable[Mapping[str, Any] | str | bytes],
        *,
        progress: Callable[[ImportReport], None] | None = None,
        batch_size: int | None = None,
    ) -> ImportReport:
        """Store the records of an export (:meth:`export`'s dicts, or the lines of its
        file, the header included or not) in this Memory's tenant exactly as they were:
        same ids, times, validity, metadata and context. Each batch of ``batch_size``
        (default 500) is one transaction; an id already stored is never overwritten:
        one stored exactly so counts as ``already`` (importing a file twice stores
        nothing the second time, and a run stopped midway is finished by running it
        again), one stored otherwise (changed since the export; on SQLite, an id of
        another tenant) as a conflict, its id listed, and left as stored. Returns an
        :class:`ImportReport`; ``progress`` is called with it after each batch.

        A line that is no record (broken JSON, an unknown field, a bad time) raises
        :class:`~contextos.memory.transfer.ImportLineError`, a ``ValueError`` naming
        the line; the batches before it are stored. Lines after a header with no end
        line after them (or one counting otherwise) are stored, then
        :class:`~contextos.memory.transfer.ImportTruncatedError` (a ``ValueError``)
        says the file was cut short. A header naming another tenant raises
        :class:`~contextos.memory.transfer.ImportTenantError` (leave the header out to
        copy an export into another tenant). The records are searchable by
        their words at once; their vectors are made by the embedding worker, as after
        ``add`` (``flush()`` waits for them)."""
        from .transfer import import_records

        def stored(report: ImportReport) -> None:
            self._embed_later()
            if progress is not None:
                progress(report)

        return import_records(
            self.store,
            self.tenant,
            records,
            counted=self.record_tokens.counted,
            stored=stored,
            batch_size=_batch(batch_size),
        )

    def vacuum(self) -> tuple[str, ...]:
        """Rewrite the database so erased rows leave no bytes and space is reclaimed.
        PostgreSQL keeps deleted rows' bytes in dead tuples and index entries until this
        runs (``VACUUM FULL``, which locks each table while it rewrites it).

        Returns notes on a step the database's role was not permitted to take (on
        PostgreSQL: the final CHECKPOINT without superuser or ``pg_checkpoint``), and
        what then still holds erased bytes until when; empty when all was done (also
        from a store written when ``Store.vacuum`` returned None: the CLI's loop over the
        notes raised TypeError on one; a review)."""
        return tuple(self.store.vacuum() or ())

    def embedding_status(self, *, all_tenants: bool = False) -> EmbeddingStatus:
        """Memories of this tenant still waiting for a vector, and those whose
        embedding failed (quarantined with the error; a text update retries them).

        ``all_tenants``: of every tenant in the store instead (one worker embeds them
        all, so a server's backlog is the whole store's)."""
        return self.store.embedding_status(None if all_tenants else self.tenant)

    # -- reading -----------------------------------------------------------------
    def get(self, memory_id: str) -> MemoryRecord:
        """One memory by id. Raises NotFound."""
        _check_id(memory_id)
        record = self.store.get(self.tenant, memory_id)
        if record is None:
            raise NotFound(f"no memory {memory_id!r}")
        return record

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        filters: Filter | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        max_bytes: int | None = None,
    ) -> MemoryPage:
        """Memories in a scope, newest first, one page: ``limit`` of them after the key
        ``after`` (the ``next_after`` of the page before; None: from the newest), from
        ``offset`` among those. The page is a list, with ``next_after``: the key of its
        last memory when more follow, None at the end.

        Why keys: paged by offset while another client adds, page 2 began with the
        memories page 1 had shown (they moved down), and a walk until a page came back
        empty might never end; a page after a key holds only memories after the last
        one shown, whatever was written or deleted since (``keyed_page``, as the CLI's
        ``--after`` and ``GET /v1/memories``'s ``after`` page). A key this store did not
        make is a ValueError.

        ``max_bytes``: a shorter page where the UTF-8 bytes of the memories' text and
        metadata would pass it (at least one memory): what a server sets so that a
        page of large memories cannot fill its memory. The next page starts after
        ``next_after`` (or at ``offset + len(page)``)."""
        flt = self._filter(filters, user_id, agent_id, session_id, None, None, None)
        _check_limit(limit)
        _check_offset(offset)
        if after is not None and not isinstance(after, str):
            raise TypeError(f"after must be a string (a next_after), not {type(after).__name__}")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError("max_bytes must be a positive integer")
        records, next_after = keyed_page(
            self.store, flt, after=after, offset=offset, limit=limit, max_bytes=max_bytes
        )
        return MemoryPage(records, next_after)

    def sessions(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        order: Literal["oldest", "newest", "id"] = "oldest",
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[str]:
        """Ids of this tenant's session logs, of one user and/or agent when given, one
        page at a time: least recently active first, or with ``order="newest"`` most
        recently active first (so the newest are on the first page however many there
        are), or with ``order="id"`` in id order. What ``GET /v1/sessions`` and
        ``contextos session list`` page through; open one with ``Session(memory,
        session_id)``.

        ``after``: the sessions whose id sorts after this one, in id order (the last id
        of the page before; ``order="id"`` implied, no ``offset``): a page key no write
        moves. Why: activity order moves a session to the end at each turn, so paging it
        by offset while the app logged skipped as many sessions as moved and listed those
        twice (a review: 10 of 250 never listed); a job that visits every session (an
        export, a retention script) pages with ``order="id"`` and then ``after``.

        A user's (or agent's) sessions are those in which a turn, a memory or the
        session's row names them, whoever logged the first turn (a group chat is each
        participant's); with both, the sessions of each. ``forget`` of the user
        reaches these sessions (and those holding only memories of theirs, no log)."""
        if order not in ("oldest", "newest", "id"):
            raise ValueError(
                f"order must be 'oldest' or 'newest' (by activity) or 'id', not {order!r}"
            )
        _check_limit(limit)
        _check_offset(offset)
        if after is not None:
            scope_id(after, "after")
            if offset or order == "newest":
                raise ValueError("after pages in id order: give no offset and no other order")
        scope = Scope(tenant=self.tenant, user_id=user_id, agent_id=agent_id)
        ids = self.store.sessions(scope)
        if order == "id" or after is not None:
            ordered = sorted(i for i in ids if after is None or i > after)
        else:
            ordered = ids if order == "oldest" else ids[::-1]
        return list(ordered[offset : offset + limit])

    def history(
        self, memory_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[HistoryEvent]:
        """Every change to a memory, oldest first. Kept after ``delete``, texts and all;
        after ``delete(purge=True)`` the events stay without their texts (``None``);
        after ``forget`` they are gone.

        ``offset``/``limit``: the events from number ``offset`` (the first is 0), at most
        ``limit`` of them (None: all). A number is a stable key (a history only grows
        at its end), so a long history is read page by page without holding it whole.

        Raises:
            NotFound: this tenant has no history of ``memory_id`` (an unknown id, one
                of another tenant, or one erased), as ``get``, ``update`` and ``delete``
                raise for an unknown id; it returned [] and the CLI, the server and
                Python disagreed.
            ValueError: a negative ``offset``, or a ``limit`` out of 1..``MAX_LIMIT``."""
        _check_id(memory_id)
        _check_offset(offset)
        if limit is not None:
            _check_limit(limit)
        events = self.store.history(self.tenant, memory_id, offset=offset, limit=limit)
        if not events and (not offset or not self.store.history(self.tenant, memory_id, limit=1)):
            self.get(memory_id)  # NotFound, unless the memory exists with no events logged
        return events

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        filters: Filter | None = None,
        limit: int = 10,
        token_budget: int | None = None,
        memory_types: Sequence[MemoryType] | None = None,
        as_of: datetime | None = None,
        time_range: tuple[datetime | None, datetime | None] | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Hybrid search in a scope, best first, cut to ``limit`` and ``token_budget``.

        ``min_score`` is a relevance floor on one scale for every query: the cosine of
        the query and the memory (``Hit.relevance``, -1..1). Hits below it are left
        out, so a query about nothing stored can return no hit at all (docs/benchmarks.md
        gives the values measured on LoCoMo to choose it from). None: no floor. A
        memory added a moment before, whose vector the background worker has not
        stored yet, is judged by the cosine of the vector it will get.

        Raises:
            ScopeError: neither a user, agent nor session (nor a scoped filter) is
                given, or one is given empty or blank.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        check_unicode(query, "query")
        _check_limit(limit)
        if token_budget is not None and (not isinstance(token_budget, int) or token_budget < 1):
            raise ValueError("token_budget must be a positive integer")
        flt = self._filter(filters, user_id, agent_id, session_id, memory_types, as_of, time_range)
        return self.retriever.search(
            query[:MAX_TEXT_CHARS],
            flt,
            limit=limit,
            token_budget=token_budget,
            min_score=min_score,
        )

    def _filter(
        self,
        filters: Filter | None,
        user_id: str | None,
        agent_id: str | None,
        session_id: str | None,
        memory_types: Sequence[MemoryType] | None,
        as_of: datetime | None,
        time_range: tuple[datetime | None, datetime | None] | None,
    ) -> Filter:
        base = filters or Filter()
        if not isinstance(base, Filter):
            raise TypeError("filters must be a contextos.Filter")
        scope = Scope(
            tenant=self.tenant,  # the tenant is ours, never the caller's
            # None is "not given"; "" is an error (types.scope_id), not a fallback.
            user_id=base.scope.user_id if user_id is None else user_id,
            agent_id=base.scope.agent_id if agent_id is None else agent_id,
            session_id=base.scope.session_id if session_id is None else session_id,
        )
        scope.for_reading()
        if isinstance(memory_types, str):  # tuple("episodic") is its letters
            raise ValueError(
                f"memory_types must be a sequence such as ['episodic'], not {memory_types!r}"
            )
        # One ``replace`` with every field: this runs on every search and list.
        event_after, event_before = base.event_after, base.event_before
        if time_range is not None:
            if not isinstance(time_range, tuple) or len(time_range) != 2:
                raise TypeError("time_range must be a (start, end) tuple")
            event_after, event_before = time_range
        return replace(
            base,
            scope=scope,
            memory_types=tuple(memory_types) if memory_types else base.memory_types,
            event_after=opt_utc(event_after, "time_range start"),
            event_before=opt_utc(event_before, "time_range end"),
            created_after=opt_utc(base.created_after, "created_after"),
            created_before=opt_utc(base.created_before, "created_before"),
            as_of=opt_utc(base.as_of if as_of is None else as_of, "as_of"),
        )

    def wait_on_close(self, writes: PendingWrites) -> None:
        """Have :meth:`close` wait for ``writes`` before it closes the store (held
        weakly: a writer dropped is forgotten). A wrapped client registers its
        background commits here.

        Why: ``with Memory(...) as memory:`` ending right after a wrapped call closed
        the store under the commit of its reply, which was lost.
        """
        self._pending.add(writes)

    def _close_opened(self, owns_store: bool) -> None:
        """What an interrupted ``__init__`` opened: its own worker (stopped), the store it
        opened, and the finalizer that would close them again."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        worker = getattr(self, "_worker", None)
        if worker is not None and getattr(self, "_owns_worker", False):
            worker.close()
        if owns_store:
            self.store.close()

    def close(self) -> None:
        """Wait for the writes registered by :meth:`wait_on_close`, stop the embedding
        thread (pending work resumes on next open) and close the store.

        A Memory dropped without it is closed once collected, with a ``ResourceWarning``
        (see :func:`_close_when_dropped`)."""
        if self._finalizer is not None:
            self._finalizer.detach()  # closed here: nothing to do once collected
        for writes in list(self._pending):
            writes.drain()
        if self._worker is not None and self._owns_worker:
            self._worker.close()
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_when_dropped(
    memory: Memory, worker: EmbeddingWorker | None, store: Store | None
) -> weakref.finalize[Any, Any] | None:
    """Have what ``memory`` owns (its embedding worker, the store it opened) closed once
    it is collected without :meth:`Memory.close`, with a ``ResourceWarning``, as an
    unclosed file is; None when it owns neither (the server's Memories share both).

    Why: a Memory opened per request and dropped kept its thread, its connections and
    its indexes for the life of the process (200 requests: 204 threads, 807 file
    descriptors, 239 MB). Nothing here refers to the Memory, so it can be collected: the
    worker's thread holds only the worker (its store and embedder).

    What is owned is closed on :data:`_CLOSER`'s thread, not in the finalizer: that runs
    wherever the garbage collector does, on any thread, perhaps one inside this very
    store or worker holding a lock that closing takes; a ``SimpleQueue.put`` is safe
    there. The worker first embeds what is pending (``EmbeddingWorker.release``), then
    its thread closes the store. Not at interpreter exit (``atexit`` False): what is
    alive then is left to the process's end, as before (the workers are stopped by
    ``embedding_worker``'s own exit hook; pending records wait for the next open)."""
    if worker is None and store is None:
        return None
    _CLOSER.start()  # here, not in the finalizer: starting a thread takes locks
    path = getattr(store, "path", None)  # never a URL: it may hold a password
    what = f"Memory({str(path)!r})" if path is not None else "Memory"
    finalizer = weakref.finalize(memory, _dropped, what, worker, store)
    finalizer.atexit = False
    return finalizer


def _dropped(what: str, worker: EmbeddingWorker | None, store: Store | None) -> None:
    """A Memory was collected unclosed (the finalizer): hand what it owned to the closer,
    then warn (an ``error`` warnings filter raises here, after the hand-over). No warning
    when the store it wrote to is closed already (by hand, or a test's simulated crash):
    nothing leaks then but a worker about to notice it, which is only woken to stop."""
    written = store if store is not None else worker.store if worker is not None else None
    if written is not None and written.closed:
        if worker is not None and worker.running:
            _CLOSER.put(worker, None)
        return
    _CLOSER.put(worker, store)
    warnings.warn(
        f"unclosed {what}: call close() or use `with Memory(...)`; its embedding thread and "
        "store are closed now",
        ResourceWarning,
        stacklevel=2,
    )


class _Closer:
    """One daemon thread per process that closes what dropped Memories owned, handed
    over through a ``SimpleQueue`` (its ``put`` is reentrant: safe in a finalizer)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[EmbeddingWorker | None, Store | None]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread unless it runs (from ``Memory.__init__``, never a finalizer)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="contextos-closer", daemon=True
                    )
                    thread.start()
                    self._thread = thread

    def put(self, worker: EmbeddingWorker | None, store: Store | None) -> None:
        self._queue.put((worker, store))

    def _run(self) -> None:
        while True:
            worker, store = self._queue.get()
            try:
                if worker is not None:  # it closes the store once it has stopped
                    worker.release(then=None if store is None else store.close)
                elif store is not None:
                    store.close()
            except Exception as exc:  # noqa: BLE001 - the next dropped Memory still closes
                log.warning("closing a dropped Memory failed: %s", exc)
            del worker, store  # hold nothing while waiting


_CLOSER = _Closer()


def _closer_after_fork() -> None:
    """A fork's child has no closer thread (only the forking one is copied), and its
    lock may have been held: a new one, started by the child's first Memory."""
    global _CLOSER
    _CLOSER = _Closer()


os.register_at_fork(after_in_child=_closer_after_fork)


class _EmbeddedTexts:
    """``embedding_text`` for the versions of one record in one update, each computed
    once (an :data:`~contextos.store.base.EmbeddedText`).

    Why: ``update`` compares the record's embedded text before and after the patch (do
    the facts beside a turn change?), and the store compares them again in its
    transaction, on the rows as stored (``Store.update``'s ``embeds``): the same two
    versions unless another writer came in between. Each computation runs the
    extractor over the turn (``memory.expansion``), so each was paid twice."""

    def __init__(self) -> None:
        self._seen: list[tuple[MemoryRecord, str]] = []

    def __call__(self, record: MemoryRecord) -> str:
        # What the store writes beside the patch (the time of the write, the text's
        # hash) is not part of what is embedded.
        key = replace(record, updated_at=None, hash="")
        for seen, text in self._seen:
            if seen == key:
                return text
        text = embedding_text(record)
        self._seen.append((key, text))
        return text


def _same_memory(a: MemoryRecord, b: MemoryRecord) -> bool:
    """An exact repeat: the same text, scope and type, and the same event time and
    metadata. Why the last two: "I went to the gym" on 1 May and again on 8 May are
    two events; the second add handed back the first record and stored nothing, so a
    search of 8 May found no gym. Without an event time, the zone each add kept
    (``utc_offset``: the calendar its process was on) is left out: the same text added
    from a laptop in New York and a server in UTC, or by one app either side of a
    daylight-saving change, was stored twice (a review)."""
    if a.event_time is None:
        a, b = _without_zone(a), _without_zone(b)
    return (
        a.hash == b.hash
        and a.scope == b.scope
        and a.memory_type == b.memory_type
        and a.event_time == b.event_time
        # As stored: a tuple the caller passes reads back as a list.
        and (a.metadata == b.metadata or stored_json(a.metadata) == stored_json(b.metadata))
    )


def _without_zone(record: MemoryRecord) -> MemoryRecord:
    meta = {k: v for k, v in record.metadata.items() if k != UTC_OFFSET}
    return replace(record, metadata=meta)


def _check_limit(limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer between 1 and {MAX_LIMIT}")


def _check_offset(offset: object) -> None:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("offset must be a non-negative integer")


#: Metadata the library writes and keeps through an update that does not name them: a
#: turn's place in its session, who said it and whether it takes facts, and the mark of
#: a fact an inferring add wrote (``reconcile.INFERRED``: what later inferring adds are
#: reconciled with), and the zone its time was given in (``render.UTC_OFFSET``: its dates).
KEPT_KEYS = ("seq", "role", TURN_FACTS, UTC_OFFSET, "inferred")


def _session_of(scope: Scope) -> Scope:
    """The whole session of ``scope`` (its tenant and session id alone): what a turn's
    number and quote follow, whoever of its users added it."""
    return Scope(scope.tenant, session_id=scope.session_id)


def _is_session_turn(record: MemoryRecord) -> bool:
    """Whether ``record`` is a turn of a session (not a fact stored beside one)."""
    return record.scope.session_id is not None and FACT_OF not in record.metadata


def _quote_of(turn: MemoryRecord) -> str:
    """The reply part (``replying to Ann: ...``) of the context of the turn answering
    ``turn``, as an add writes it (``ingest._context`` of a reply with nothing else
    to index): what an update of ``turn`` rewrites its quotes to (``Store.update``)."""
    return _context(Message(role="user", content=""), None, _as_message(turn))


#: How a session turn is written into contexts, as an add writes it: what an update of
#: it (its text, its speaker) writes anew in the update's transaction (``Store.update``).
QUOTING = Quoting(reply=_quote_of, own=renamed_context)


def _marked(turn: MemoryRecord) -> MemoryRecord:
    """``turn`` with the mark that it takes facts (:data:`TURN_FACTS`)."""
    return replace(turn, metadata={**turn.metadata, TURN_FACTS: True})


def _facts_beside(turns: Sequence[MemoryRecord]) -> list[MemoryRecord]:
    """The facts stored beside ``turns`` (``infer.facts_beside``), without the turns'
    mark (:data:`TURN_FACTS`): a fact takes no facts of its own."""
    from .infer import facts_beside

    return [
        replace(f, metadata={k: v for k, v in f.metadata.items() if k != TURN_FACTS})
        if TURN_FACTS in f.metadata
        else f
        for f in facts_beside(turns)
    ]


def _kept_metadata(record: MemoryRecord, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """New metadata for ``record`` (metadata is replaced whole): its :data:`KEPT_KEYS`
    stay unless given, and the library's keys (:func:`_fixed_keys`: the reserved
    ``fact_of`` link of a fact stored beside a turn too) may not be set or changed by
    hand (ValueError naming the key; the same value, metadata copied from the record,
    is let through)."""
    old = record.metadata
    for key, (value, why) in _fixed_keys(record).items():
        if key in metadata and (value is _ABSENT or not _same(metadata[key], value)):
            raise ValueError(f"metadata key {key!r} is reserved{why}; give your key another name")
    link = old.get(FACT_OF)
    kept = {k: old[k] for k in KEPT_KEYS if k in old and k not in metadata and _kept(record, k)}
    return {**metadata, **kept, **({FACT_OF: link} if link is not None else {})}


def _kept(record: MemoryRecord, key: str) -> bool:
    """Whether ``record``'s ``key`` (one of :data:`KEPT_KEYS`) is the library's, kept
    through an update that does not name it. :data:`TURN_FACTS` is only on a session
    turn, and only as the library writes it (``True``): outside a session the key is
    the caller's (``add`` takes it there), and replacing the metadata must drop it as
    it drops any other (a review: it stayed for good)."""
    if key != TURN_FACTS:
        return True
    return _is_session_turn(record) and record.metadata[key] is True


#: :func:`_fixed_keys`' value of a library key ``record`` does not hold: any value
#: given for it is refused. Not None: ``{"fact_of": None}`` was taken for "the same as
#: stored" on a turn, which then stopped being one (nothing re-quoted it, and a
#: redaction left its old text in the reply's context: a review).
_ABSENT: Any = object()


def _fixed_keys(record: MemoryRecord) -> dict[str, tuple[Any, str]]:
    """The metadata keys of ``record`` that only the library writes, each with its
    value (:data:`_ABSENT` where the record has none: any value given is refused, as
    ``add`` refuses it) and why, in the words of ``add``'s refusal of them.

    Why: ``update(turn, metadata={"seq": 0, "role": "tool"})`` (metadata copied from
    another turn in an editor) was written as given, where ``add`` refuses both; the
    session's next turn was then numbered from it, and two turns had each number (a
    review). ``add`` refuses these keys; so does an update that changes one."""
    old = record.metadata
    fixed: dict[str, tuple[Any, str]] = {
        FACT_OF: (old.get(FACT_OF, _ABSENT), ": it marks a fact stored beside a turn"),
        UTC_OFFSET: (
            old.get(UTC_OFFSET, 0),
            ": the library keeps there the zone of the memory's time (event_time as given; "
            "without one, when it was added), in minutes east of UTC",
        ),
    }
    if "role" in old:
        fixed["role"] = (old["role"], ": the library stores who said each memory there")
    if record.scope.session_id is not None:
        fixed["seq"] = (
            old.get("seq", _ABSENT),
            " in a session: the library numbers the session's turns there",
        )
        fixed[TURN_FACTS] = (
            old.get(TURN_FACTS, _ABSENT),
            " in a session: the library marks a turn stored with its facts (add(facts=True)) there",
        )
    return fixed


def _same(given: object, stored: object) -> bool:
    """Whether a metadata value given is the one stored, type included (JSON's ``true``
    is no ``1``, nor ``1.0`` a seq)."""
    return type(given) is type(stored) and given == stored


def _check_id(memory_id: object) -> None:
    """A memory id is a string: ``get(5)`` answered "no memory 5" (NotFound), hiding
    the caller's mistake behind an answer about the data. One with a lone surrogate is
    a ValueError naming it, as ``add`` answers: the store's codec raised a
    UnicodeEncodeError naming no argument (a review)."""
    if not isinstance(memory_id, str):
        raise TypeError(f"memory_id must be a string, not {type(memory_id).__name__}")
    check_unicode(memory_id, "memory_id")


def _check_text(text: object) -> None:
    """A memory's new text (``update``): checked as ``add`` checks its messages, a lone
    surrogate included (it raised the codec's UnicodeEncodeError; a review)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"a memory may hold at most {MAX_TEXT_CHARS:,} characters")
    check_unicode(text, "text")


__all__ = ["Memory", "PendingWrites", "content_hash"]
