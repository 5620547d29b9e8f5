"""Reconciliation: what to do with a new candidate fact given the similar facts stored.

Four outcomes, as in mem0's design: ADD a new memory, UPDATE an existing one
(the old record's validity is closed and a new record supersedes it, so history
is kept), DELETE one (its validity is closed: it stops being true but is not
erased), or NOOP (already known). A :class:`Decision` is a plain value; the
deciders are pure (given the candidate and its neighbours). A :class:`Plan` reads
the :class:`~contextos.store.base.Store` to decide a batch and writes nothing until
:func:`commit` (:func:`apply` does both for one decision, :func:`reconcile` for a batch).

:class:`HeuristicReconciler` decides offline from exact/near duplicates,
attribute claims ("lives in Paris" vs "lives in Berlin") and negation.
:class:`LLMReconciler` asks a model through the :class:`~contextos.llm.LLM`
seam, validates its JSON reply, and never lets a malformed reply destroy a memory.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from contextos.llm.prompts import RECONCILE_V2, Prompt, as_data, speaker_label
from contextos.text.canonical import canonical
from contextos.text.claims import (
    affirm,
    claim,
    claim_memo,
    is_negated,
    jaccard,
    stem_tokens,
    subject_of,
    told_of,
)
from contextos.text.temporal import describe

from ..embed import Embedder
from ..errors import Conflict, NotFound, ProviderError, ReplyTruncated
from ..llm import LLM, parse_json_reply, schema_errors
from ..store.base import Close, Derived, Newest, Patch, Ranked, Store, TokenCounter
from ..store.records import patched
from ..times import opt_utc
from ..types import Filter, MemoryRecord, MemoryType, Message, Scope, TokenCount, content_hash
from .extract import Candidate, is_position_id, stored_entities
from .extract_llm import model_text
from .ingest import RECORD_METADATA, check_metadata

log = logging.getLogger(__name__)

Action = Literal["ADD", "UPDATE", "DELETE", "NOOP"]
ACTIONS: tuple[Action, ...] = ("ADD", "UPDATE", "DELETE", "NOOP")


@dataclass(frozen=True)
class Decision:
    """What to do with ``candidate``. UPDATE and DELETE name the ``target_id`` they close.

    ``text`` overrides the candidate's text for the record an ADD or UPDATE
    writes (an LLM may merge old and new into one sentence).
    """

    action: Action
    candidate: Candidate
    target_id: str | None = None
    text: str | None = None
    reason: str = ""
    decided_by: str = "heuristic"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {ACTIONS}")
        if self.action in ("UPDATE", "DELETE") and not self.target_id:
            raise ValueError(f"{self.action} needs the id of the memory it changes")

    @property
    def new_text(self) -> str:
        """The text of the record an ADD or UPDATE writes."""
        return self.text or self.candidate.text


@runtime_checkable
class Reconciler(Protocol):
    """Decides the fate of a candidate given the most similar stored memories."""

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        """One decision; ``similar`` is best first and may be empty. An UPDATE or a
        DELETE names (``target_id``) an open memory of ``similar``: one it was not shown
        makes ``Memory.add`` raise NotFound, writing nothing."""
        ...


def _normal(text: str) -> str:
    """``text`` as the exact-duplicate test compares it: as the library compares texts
    (``canonical``: an invisible zero-width space is no difference), lower case, its
    spaces and end marks aside."""
    return " ".join(canonical(text).lower().split()).strip(" .!")


class HeuristicReconciler:
    """Offline decisions, checked in order against each similar (still valid) memory.

    1. Same text -> NOOP. 2. Same words, opposite polarity -> DELETE (the new
    fact negates the old) or UPDATE (the old one was a negation). 3. Same
    subject and attribute, different value -> UPDATE; same value and the new
    claim negated -> DELETE; same value, neither negated, and no word of the new fact
    new but those of its claim -> NOOP (the claim said again in other words: "is living
    in Lisbon" after "lives in Lisbon"). 4. Content words overlap >=
    ``duplicate_threshold`` -> NOOP; the old words all inside a longer new fact ->
    UPDATE (more detail). Otherwise ADD. 2 leaves to 3 a fact whose claim is negated
    in its own clause otherwise than the whole text ("Always answer in English, never
    in French" asks for English). 1 and 4 never take an event for one told
    on another day, or told to have happened again (:func:`_another_occasion`): it is
    a new event, an ADD.

    Why 3 decides a restated claim: its words differ too much for 4 to call it a
    duplicate, so it was added beside the fact it repeats, and a later change of the
    attribute closed only one of the two, leaving the old value current beside the
    new one.
    """

    def __init__(self, *, duplicate_threshold: float = 0.8) -> None:
        if not 0 < duplicate_threshold <= 1:
            raise ValueError("duplicate_threshold must be in (0, 1]")
        self.duplicate_threshold = duplicate_threshold

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        live = [r for r in similar if r.valid_to is None]
        for check in (self._exact, self._polarity, self._claims, self._overlap):
            for record in live:
                decision = check(candidate, record)
                if decision is not None:
                    return decision
        return Decision("ADD", candidate, reason="no similar memory")

    def _exact(self, cand: Candidate, record: MemoryRecord) -> Decision | None:
        if _another_occasion(cand, record):
            return None
        if content_hash(cand.text) == record.hash or _normal(cand.text) == _normal(record.text):
            return Decision("NOOP", cand, record.id, reason="exact duplicate")
        return None

    def _polarity(self, cand: Candidate, record: MemoryRecord) -> Decision | None:
        new_neg, old_neg = is_negated(cand.text), is_negated(record.text)
        if new_neg == old_neg or not _same_subject(cand, record):
            return None
        if _negates_elsewhere(cand.text, cand.speaker, new_neg) or _negates_elsewhere(
            record.text, _speaker(record), old_neg
        ):
            return None  # "Always answer in English, never in French": the claim decides
        if new_neg and _NO_LONGER.search(cand.text) is not None:
            if not _denies_whole(cand, record):
                return None  # "Marco doesn't play tennis anymore", "... golf anymore"
            if record.memory_type != "episodic":  # an event is ended only as below
                return Decision("DELETE", cand, record.id, reason="it holds no longer")
        if jaccard(stem_tokens(cand.text), stem_tokens(record.text)) < 0.75:
            return None
        if new_neg:
            return Decision("DELETE", cand, record.id, reason="new fact negates it")
        return Decision("UPDATE", cand, record.id, reason="new fact reverses a negation")

    def _claims(self, cand: Candidate, record: MemoryRecord) -> Decision | None:
        new = claim(cand.text, cand.speaker)
        old = claim(record.text, _speaker(record))
        if new is None or old is None or (new.subject, new.slot) != (old.subject, old.slot):
            return None
        if old.negated:
            return None
        if new.negated:
            if new.value == old.value:
                return Decision("DELETE", cand, record.id, reason=f"{new.slot} no longer true")
            return None
        if new.value != old.value:
            return Decision(
                "UPDATE", cand, record.id, reason=f"{new.slot} changed: {old.value} -> {new.value}"
            )
        if stem_tokens(cand.text) - stem_tokens(record.text) <= stem_tokens(new.said):
            return Decision("NOOP", cand, record.id, reason=f"same claim restated: {new.slot}")
        return None

    def _overlap(self, cand: Candidate, record: MemoryRecord) -> Decision | None:
        if not _same_subject(cand, record) or _another_occasion(cand, record):
            return None
        new, old = stem_tokens(cand.text), stem_tokens(record.text)
        if jaccard(new, old) >= self.duplicate_threshold:
            return Decision("NOOP", cand, record.id, reason="near duplicate")
        if len(old) >= 3 and old < new and len(cand.text) > len(record.text):
            return Decision("UPDATE", cand, record.id, reason="same fact with more detail")
        return None


_NO_LONGER = re.compile(r"\b(?:anymore|any\s+more|no\s+longer)\b", re.IGNORECASE)
_DAYS = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_PARTS = r"(?:day|morning|afternoon|evening|night|week|weekend|weekday|month|year)"
#: Adverbials of time or frequency ("every morning", "at night", "on weekends", "twice
#: a week", "usually"): a fact holds without them, so "I don't drink coffee anymore"
#: denies "I drink coffee every morning" whole (and "... at night anymore" does not: the
#: denial's own words must all be the fact's).
_WHEN = re.compile(
    rf"\b(?:(?:every|each)\s+(?:other\s+|single\s+)?(?:{_DAYS}|{_PARTS})"
    rf"|(?:in|on|at|during)\s+(?:the\s+)?(?:{_PARTS}s?|{_DAYS}s?)"
    rf"|on\s+{_DAYS}s?|{_DAYS}s|(?:once|twice|\w+\s+times)\s+(?:a|per|every)\s+{_PARTS}"
    r"|everyday|daily|nightly|weekly|monthly|yearly|usually|often|always|sometimes"
    r"|regularly|normally|generally|mostly|typically)\b",
    re.IGNORECASE,
)
#: Words joining two things a fact tells: denying one of them leaves the other.
_JOINED = re.compile(r"\b(?:and|or|as\s+well\s+as|plus|both|either|nor)\b|&", re.IGNORECASE)


def _denies_whole(cand: Candidate, record: MemoryRecord) -> bool:
    """Whether ``cand``, a denial with "anymore" or "no longer", denies the whole of what
    ``record`` states, so that it may end it (a fact; an event only when their words are
    alike, as any negation): its subject is the record's (:func:`told_of`: the speaker's
    own fact only for the speaker's denial); the record joins no two things ("tennis and
    golf") that the denial does not; and what ``cand`` denies (its words, the negation
    taken away) are the record's words, and the record's words, less its adverbials of
    time or frequency (:data:`_WHEN`), are all denied.

    Why: "doesn't drink coffee anymore" shares too few words with "drinks coffee every
    morning" for the polarity test (Jaccard 0.75), so both stayed open (a review, s45);
    then, denied as any part of the record, "Marco doesn't play tennis anymore" ended
    the user's "I play tennis with Marco every Friday" and "I don't play golf anymore"
    ended "I play tennis and golf every weekend" (a review, s45: data lost)."""
    speaker = cand.speaker or ""
    if told_of(cand.text, cand.speaker) != told_of(record.text, _speaker(record)):
        return False
    if _JOINED.search(record.text) and not _JOINED.search(cand.text):
        return False
    name = stem_tokens(speaker)
    denied = stem_tokens(affirm(cand.text)) - name
    held = stem_tokens(record.text) - name
    whole = stem_tokens(_WHEN.sub(" ", record.text)) - name
    return bool(denied) and bool(whole) and denied <= held and whole <= denied


_AGAIN = re.compile(r"\bagain\b", re.IGNORECASE)
#: How far apart two tellings of an event are dated for it to be two events. A day, not
#: two calendar dates: an app that adds its last messages again each turn told the same
#: event at 23:58 and at 00:01, and stored it twice (a review); events dated by their
#: text ("yesterday") fall at midnight, a day apart.
ANOTHER_DAY = timedelta(days=1)


def _another_occasion(cand: Candidate, record: MemoryRecord) -> bool:
    """Whether ``cand`` tells of another event than ``record``, however alike their
    words: both are events (episodic), and they are dated a day or more apart, or
    the new one says it happened again and the stored one does not.

    Why: "I visited my mom in Lyon", told on 2 and 9 March, was one event, and the
    second visit was dropped as known (a NOOP: no record, no date, no history); "I met
    Tom at the cafe again" was too, and a longer telling of an earlier event on another
    day closed it as "more detail" (a review). The same event told again on its day (a
    conversation imported twice) is still known."""
    if cand.memory_type != "episodic" or record.memory_type != "episodic":
        return False
    new, old = opt_utc(cand.event_time), opt_utc(record.event_time)
    if new is not None and old is not None and abs(new - old) >= ANOTHER_DAY:
        return True
    return _AGAIN.search(cand.text) is not None and _AGAIN.search(record.text) is None


def _negates_elsewhere(text: str, speaker: str | None, negated: bool) -> bool:
    """Whether ``text`` holds a claim whose own clause is not negated as the whole text
    is (a rule: :mod:`~contextos.text.claims` reads its negation in its clause)."""
    held = claim(text, speaker)
    return held is not None and held.negated != negated


def _same_subject(cand: Candidate, record: MemoryRecord) -> bool:
    return subject_of(cand.text, cand.speaker) == subject_of(record.text, _speaker(record))


def _speaker(record: MemoryRecord) -> str | None:
    value = record.metadata.get("speaker")
    return value if isinstance(value, str) else None


OnInvalid = Literal["noop", "raise", "fallback"]

#: The most characters of one stored memory the model is shown; the rest is cut and
#: marked (:data:`CUT_MARK`). Why: the model judges whether the new fact is one it knows,
#: changes or ends, which a fact's first sentence shows; shown whole, five stored
#: 99,000-character memories made a 495,000-character prompt (243k tokens) that the
#: provider refused ("prompt is too long") on every later inferring add of that user.
#: An extracted fact is one sentence, far shorter; only a long fact is cut.
MAX_SHOWN_CHARS = 1_000

#: The most characters of the new fact shown (cut and marked beyond). A fact cut in the
#: prompt keeps its own text when written: a text the model merged from the cut one
#: would lose its end.
MAX_FACT_CHARS = 4_000

#: The most memories shown in one prompt (the first, best ones; the others are not
#: offered). With the limits above, what a prompt is filled with stays under about
#: 25,000 characters whatever the store holds: see :data:`MAX_PROMPT_VALUES_CHARS`.
MAX_SHOWN = 20

#: The most characters of the speaker's name shown.
MAX_SPEAKER_CHARS = 200

#: What ends a text cut for the prompt, so the model knows it saw only its start.
CUT_MARK = " [...cut]"

#: The most characters of JSON around each value of a version 2 prompt's data (keys,
#: quotes, an index, the spaces that lay it out).
_DATA_OVERHEAD = 40

#: The bound on what :meth:`LLMReconciler._render` fills into the prompt's template
#: (fact, speaker, date and the numbered memories, cut marks included; in a version 2
#: prompt each as a JSON string, its escapes counted: :func:`_cut`).
MAX_PROMPT_VALUES_CHARS = (
    MAX_FACT_CHARS
    + MAX_SPEAKER_CHARS
    + 100  # the date
    + MAX_SHOWN * (MAX_SHOWN_CHARS + len(f"[{MAX_SHOWN}] \n"))
    + (MAX_SHOWN + 2) * len(CUT_MARK)
    + (MAX_SHOWN + 4) * _DATA_OVERHEAD
)


def _cut(text: str, limit: int, escaped: bool = False) -> str:
    """``text``, cut to ``limit`` characters and marked (:data:`CUT_MARK`) if longer;
    ``escaped``: to ``limit`` characters as a JSON string (:func:`as_data`, quotes
    aside), so that escapes (a control character is 6) do not pass the bound."""
    cut = text[:limit]
    if escaped:
        while (over := len(as_data(cut)) - 2 - limit) > 0:
            cut = cut[: len(cut) - over]  # each character is at least one of the JSON
    return text if len(cut) == len(text) else cut + CUT_MARK


def _data(fact: str, speaker: str, when: str, similar: Sequence[MemoryRecord]) -> str:
    """A version 2 reconciliation prompt's data: the new fact and the shown memories as
    one JSON object, one value a line (``reconcile@2``), each text cut (:func:`_cut`)."""
    new = (
        f'{{"said_by": {as_data(_cut(speaker, MAX_SPEAKER_CHARS, True))}, '
        f'"when": {as_data(when)}, "fact": {as_data(_cut(fact, MAX_FACT_CHARS, True))}}}'
    )
    shown = ",\n".join(
        f'  {{"index": {i}, "memory": {as_data(_cut(r.text, MAX_SHOWN_CHARS, True))}}}'
        for i, r in enumerate(similar[:MAX_SHOWN])
    )
    return f'{{"new": {new},\n "existing": [\n{shown}\n ]}}'


class LLMReconciler:
    """Asks ``llm`` to decide, with ``prompt`` (default RECONCILE_V2) and its JSON schema.

    Existing memories are shown numbered, so the model answers with an index
    and cannot invent an id; at most :data:`MAX_SHOWN` of them, each cut to
    :data:`MAX_SHOWN_CHARS` (the new fact to :data:`MAX_FACT_CHARS`), so the prompt
    stays small whatever the store holds. With no similar memories the answer is
    ADD and the model is not called. A reply that is not valid JSON of the schema,
    points at a memory that was not shown or writes a text no memory can hold, and a
    reply cut at the model's output limit (the LLM raising
    :class:`~contextos.errors.ReplyTruncated`), are handled by ``on_invalid``:
    ``"fallback"`` (default: ``fallback`` decides, the heuristic decider by default,
    so the new fact is not lost), ``"noop"`` (store nothing, change nothing, log a
    warning) or ``"raise"`` (ProviderError; ``ReplyTruncated`` for a cut reply).
    Any other error of the model (unreachable, refused) is raised.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        prompt: Prompt = RECONCILE_V2,
        on_invalid: OnInvalid = "fallback",
        fallback: Reconciler | None = None,
    ) -> None:
        if on_invalid not in ("noop", "raise", "fallback"):
            raise ValueError(f"on_invalid must be noop, raise or fallback, not {on_invalid!r}")
        self.llm = llm
        self.prompt = prompt
        self.on_invalid = on_invalid
        self.fallback = fallback or HeuristicReconciler()

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        # Closed facts are history; the best MAX_SHOWN are offered.
        similar = [r for r in similar if r.valid_to is None][:MAX_SHOWN]
        if not similar:
            return Decision("ADD", candidate, reason="no similar memory", decided_by="rule")
        try:
            reply = self.llm.complete(
                self.prompt.system,
                [Message("user", self._render(candidate, similar))],
                json_schema=self.prompt.schema,
            )
        except ReplyTruncated as exc:
            if self.on_invalid == "raise":
                raise
            return self._invalid(f"reply cut at the output limit: {exc}", candidate, similar)
        try:
            return self._parse(reply, candidate, similar)
        except ValueError as exc:
            return self._invalid(str(exc), candidate, similar)

    def _render(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> str:
        """The prompt's user message: what it fills in is at most
        :data:`MAX_PROMPT_VALUES_CHARS` characters (see :data:`MAX_SHOWN_CHARS`).

        A version 2 prompt (``data="json"``) gets it as one JSON object (``data``), one
        value a line, each text a JSON string; a version 1 prompt as written."""
        when = describe(candidate.event_time, "day") if candidate.event_time else "date unknown"
        speaker = speaker_label(candidate.speaker or "unknown")
        if self.prompt.data == "json":
            return self.prompt.render(data=_data(candidate.text, speaker, when, similar))
        existing = "\n".join(
            f"[{i}] {_cut(r.text, MAX_SHOWN_CHARS)}" for i, r in enumerate(similar[:MAX_SHOWN])
        )
        return self.prompt.render(
            speaker=_cut(speaker, MAX_SPEAKER_CHARS),
            when=when,
            fact=_cut(candidate.text, MAX_FACT_CHARS),
            existing=existing,
        )

    def _parse(self, reply: str, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        data: Any = parse_json_reply(reply)
        errors = schema_errors(data, self.prompt.schema or {})
        if errors:
            raise ValueError("; ".join(errors))
        action: Action = data["action"]
        target = data.get("target")
        shown = isinstance(target, int) and 0 <= target < len(similar)
        if action in ("UPDATE", "DELETE") and not shown:
            raise ValueError(f"{action} names memory {target!r}, not one of 0..{len(similar) - 1}")
        target_id = similar[target].id if shown and action != "ADD" else None
        text = data.get("text") if action in ("ADD", "UPDATE") else None
        if text is not None and not text.strip():
            text = None  # blank: the record gets the candidate's text
        if text is not None:
            model_text(text)  # ValueError (too long, NUL, lone surrogate): an invalid reply
            if len(candidate.text) > MAX_FACT_CHARS:
                text = None  # merged from the cut fact it was shown: it would lose the end
        return Decision(
            action,
            candidate,
            target_id,
            text,
            reason=str(data.get("reason", "")),
            decided_by=self.prompt.id,
        )

    def _invalid(
        self, problem: str, candidate: Candidate, similar: Sequence[MemoryRecord]
    ) -> Decision:
        if self.on_invalid == "raise":
            raise ProviderError(f"invalid reconciliation reply from the model: {problem}")
        log.warning(
            "invalid reconciliation reply (%s); %s",
            problem,
            "using the fallback decider" if self.on_invalid == "fallback" else "NOOP",
        )
        if self.on_invalid == "fallback":
            return self.fallback.decide(candidate, similar)
        return Decision(
            "NOOP", candidate, reason=f"invalid model reply: {problem}", decided_by=self.prompt.id
        )


# -- applying decisions ------------------------------------------------------------
#: The metadata key (``True``) of a fact: a record a reconciliation decision wrote (an
#: ADD's or an UPDATE's, :func:`new_record`; every fact of ``add(infer=True)``). Facts,
#: and only facts, are what later candidates are reconciled with (:func:`find_similar`):
#: never a conversation turn or a text added verbatim, which say what was said, not
#: what is believed, and must not be closed by a fact.
INFERRED = "inferred"


def valid_since(candidate: Candidate, now: datetime) -> datetime:
    """When a fact starts to hold (its ``valid_from``; for a fact it replaces or ends, that
    one's ``valid_to``): the time its text gives, else its turn's (``event_time``), but
    never after it was said (its turn's time, ``said_at``, when known) nor after ``now``.

    Why: ``as_of`` asks what held at a time (valid time; ``created_before`` asks what
    was written by then). Dated ``now``, the facts of a conversation imported later
    held from the import on, so ``as_of`` any date of the conversation missed them (and
    its turns, dated by their time, were there); a fact about a later date ("moves to
    Berlin on 1 March") holds from when it was said, not hidden until then: said live,
    from now; in an imported turn, from the turn's time. Clamped to ``now`` only, "on
    vacation until 20 March", said on 4 March and imported later, held from 20 March,
    the day it ended (a review)."""
    when, said = opt_utc(candidate.event_time), opt_utc(candidate.said_at)
    start = now if when is None else min(when, now)
    return start if said is None else min(start, said)


def new_record(
    decision: Decision,
    scope: Scope,
    now: datetime,
    metadata: Mapping[str, Any] | None = None,
    contexts: Mapping[str, str] | None = None,
    memory_type: MemoryType | None = None,
) -> MemoryRecord:
    """The record an ADD or UPDATE writes, with the candidate's provenance and metadata.

    ``contexts`` maps a source turn id to the text a record from that turn is indexed
    with (``MemoryRecord.context``: e.g. the question the turn answers). ``memory_type``
    overrides the candidate's (an UPDATE's, :func:`replacing_type`). Its metadata keeps
    at most :data:`~.extract.MAX_ENTITIES` of the candidate's entities, and is checked
    as every memory's is (ValueError: :func:`~.ingest.check_metadata`)."""
    cand = decision.candidate
    meta: dict[str, Any] = {"confidence": cand.confidence, "decided_by": decision.decided_by}
    if cand.speaker:
        meta["speaker"] = cand.speaker
    entities = stored_entities(cand.entities)
    if entities:
        meta["entities"] = entities
    if cand.extracted_by:
        meta["extracted_by"] = cand.extracted_by
    meta.update(metadata or {})
    meta[INFERRED] = True  # what makes it a fact later adds are reconciled with
    # The rule of every memory's metadata (the library's keys not counted), as written:
    # a record that breaks it could not be updated with its own metadata or imported.
    check_metadata(meta, RECORD_METADATA)
    text = decision.new_text
    return MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=scope,
        memory_type=memory_type or cand.memory_type,
        metadata=meta,
        created_at=now,
        updated_at=now,
        event_time=cand.event_time,
        valid_from=valid_since(cand, now),
        provenance=tuple(p for p in cand.provenance if not is_position_id(p)),
        context=(contexts or {}).get(cand.provenance[0], "") if cand.provenance else "",
        hash=content_hash(text),
    )


def apply(
    decision: Decision,
    store: Store,
    *,
    scope: Scope,
    now: datetime | None = None,
    actor: str = "reconcile",
    metadata: Mapping[str, Any] | None = None,
    contexts: Mapping[str, str] | None = None,
    count: TokenCounter | None = None,
) -> MemoryRecord | None:
    """Carry out ``decision`` on ``store`` within ``scope``; returns the record written or closed.

    ADD inserts a record. UPDATE inserts the new record and closes the old one's
    ``valid_to`` (linking both ways in metadata), in one transaction. DELETE closes
    ``valid_to`` without erasing. NOOP changes nothing and returns None.
    A target outside ``scope`` (another tenant, user or agent) raises NotFound; one
    that ended already, or changes before the write, ``errors.Conflict``.
    ``count`` gives each record written its token count (``Memory`` passes its own).
    """
    now = now or datetime.now(UTC)
    closes = decision.action in ("UPDATE", "DELETE")
    old = store.get(scope.tenant, decision.target_id or "") if closes else None
    step = plan_step(decision, old, scope, now, metadata, contexts, count)
    return commit([step], store, actor=actor, count=count)[0].record


@dataclass(frozen=True)
class Step:
    """A decision and the writes it needs, not made yet: ``record`` to insert (an ADD's,
    an UPDATE's new side) and ``close``, the patch of ``target``, the record it closes
    (an UPDATE's old side, a DELETE's target) as read."""

    decision: Decision
    record: MemoryRecord | None = None
    target: MemoryRecord | None = None
    close: Patch | None = None


def plan_step(
    decision: Decision,
    old: MemoryRecord | None,
    scope: Scope,
    now: datetime,
    metadata: Mapping[str, Any] | None = None,
    contexts: Mapping[str, str] | None = None,
    count: TokenCounter | None = None,
    *,
    said_now: bool = False,
) -> Step:
    """The writes of ``decision`` (see :func:`apply`); ``old`` is its target as read (None
    for ADD and NOOP). Raises NotFound for a target that is gone or outside ``scope``.

    ``said_now``: the candidate was said now (its add was given no time), so it is the
    newest statement and replaces ``old`` even when the event it tells of is older than
    ``old``'s start ("I moved to Paris last week" after an undated "I live in Berlin"
    written yesterday kept Berlin: a review). Only a statement said at an earlier time
    (a chat log imported late, its session dated) can be the older one."""
    if decision.action == "NOOP":
        return Step(decision)
    if decision.action == "ADD":
        return Step(decision, counted(new_record(decision, scope, now, metadata, contexts), count))
    if old is None or not _within(old.scope, scope):
        raise NotFound(f"no memory {decision.target_id!r} to {decision.action.lower()}")
    began = None if said_now else _began_later(decision.candidate, old, now)
    kind = replacing_type(decision.candidate, old) if decision.action == "UPDATE" else None
    scope = replacing_scope(scope, old)
    if decision.action == "UPDATE" and began is not None:
        # An older statement written after the fact that replaced it (a chat log
        # imported late): the new fact held until the stored one began, which stays.
        # It replaced the stored one, closed the moment it began, and ``as_of`` any
        # time after the old statement answered with it (a review).
        earlier = {**(metadata or {}), "superseded_by": old.id}
        record = new_record(decision, scope, now, earlier, contexts, kind)
        return Step(decision, counted(replace(record, valid_to=began), count))
    until = _until(decision.candidate, old, now)
    if decision.action == "DELETE":
        return Step(decision, target=old, close=Patch(valid_to=until))
    linked = {**(metadata or {}), "supersedes": old.id}
    record = counted(new_record(decision, scope, now, linked, contexts, kind), count)
    closed = {**old.metadata, "superseded_by": record.id}
    return Step(decision, record, old, Patch(valid_to=until, metadata=closed))


def replacing_scope(scope: Scope, old: MemoryRecord) -> Scope:
    """Where the record that replaces ``old`` (an UPDATE's new record) goes: ``scope``
    (the add's: its user and session), under ``old``'s agent when ``scope`` names none.

    Why: an add that names a user but no agent is reconciled with the user's facts of
    every agent; written outside the agent, the replacement of an agent's fact left that
    agent's view of the user without it ("I live in Rome", added for the user alone,
    closed agent A's "I live in Berlin", and A found neither: a review, s58). The
    session stays the add's: the statement was made there, and it is numbered there
    (``seq``)."""
    if scope.agent_id is None and old.scope.agent_id is not None:
        return replace(scope, agent_id=old.scope.agent_id)
    return scope


def replacing_type(candidate: Candidate, old: MemoryRecord) -> MemoryType:
    """The type of the record that replaces ``old`` (an UPDATE's new record, whoever
    decided it): ``old``'s when the candidate is a dated event (``episodic``) and
    ``old`` a standing fact or rule (``semantic`` or ``procedural``) holding a one-value
    attribute (:func:`_attribute`), else the candidate's own.

    Why: that record is the attribute's new value, and the attribute keeps one type.
    Typed as told, "I moved to Paris last week" (dated, so ``episodic``) replaced the
    semantic "I live in Berlin", and ``memory_types=["semantic"]`` then found no home, or
    the sister's (a review); its ``event_time`` still keeps the date. An ``episodic``
    record (an event: "I moved to Berlin in 2020") passes no type on: "I live in Paris",
    said later, is a state (``semantic``), and another dated move stays an event. A
    candidate typed a state or a rule keeps its type: a model that merged "from now on
    always answer in German" into an update of "I live in Berlin" made the new rule a
    fact, never pinned as a rule (a review)."""
    if (
        candidate.memory_type == "episodic"
        and old.memory_type != "episodic"
        and _attribute(old) is not None
    ):
        return old.memory_type
    return candidate.memory_type


#: How much earlier than the fact it would replace a statement must be dated to be taken
#: for an older one (see :func:`_began_later`).
OLDER_BY = timedelta(days=1)


def _began_later(candidate: Candidate, old: MemoryRecord, now: datetime) -> datetime | None:
    """When ``old`` began, if ``candidate`` starts to hold at least :data:`OLDER_BY`
    before; else None.

    Why a day: a statement the caller or its text dates (a session's date, "in 2020")
    is dated to the day, while one dated by no one takes its add's clock: two adds
    racing (the second decided again after the first wrote) differ by seconds or
    minutes, and the one decided last replaces the other, as it always did."""
    began = opt_utc(old.valid_from)
    if began is None or valid_since(candidate, now) > began - OLDER_BY:
        return None
    return began


def _until(candidate: Candidate, old: MemoryRecord, now: datetime) -> datetime:
    """When ``old`` stops holding, replaced or ended by ``candidate``: when the new
    statement starts to (not before ``old`` began: a statement dated earlier than the
    fact it replaces closes it at once), never after ``now``."""
    return min(max(valid_since(candidate, now), opt_utc(old.valid_from) or now), now)


def commit(
    steps: Sequence[Step],
    store: Store,
    *,
    actor: str = "reconcile",
    count: TokenCounter | None = None,
    after: Newest | Sequence[Newest] | None = None,
    unchanged: Mapping[str, str] | None = None,
) -> list[Outcome]:
    """Write ``steps`` in one ``put``: their new records, and the closes of the stored
    records they end, each only if still open and as read (``Store.put``'s ``closes``);
    with ``after``, only if the newest records it names are still the newest; with
    ``unchanged``, only if the stored records the decisions were made on are all still
    there, open, as read; else ``errors.Conflict`` and nothing is written. A record
    planned and closed by a later step of the same batch is written closed. Returns
    each decision with the record it wrote or closed.

    Why one ``put``: an inferring add numbers its facts after the session's newest
    record, as a plain add numbers its turns, and must be refused as a whole, as a plain
    add is, if another add or an erasure came in between. The closes are in it too: made
    after it, unconditionally, two adds that replaced one fact both kept their
    replacement (the second close overwrote the first), and a close of a fact rewritten
    meanwhile ended the new text."""
    written = {s.record.id: s.record for s in steps if s.record is not None}
    closes: list[Close] = []
    closed: dict[str, MemoryRecord] = {}
    for step in steps:
        if step.target is None or step.close is None:
            continue
        if step.target.id in written:  # planned in this batch: written closed
            ended = counted(_ended(written[step.target.id], step.close), count)
            written[step.target.id] = closed[step.target.id] = ended
            continue
        ended = _ended(step.target, step.close)
        closes.append(_close(step.target, step.close, count(ended) if count else None))
        closed[step.target.id] = ended
    store.put(list(written.values()), actor=actor, after=after, unchanged=unchanged, closes=closes)
    return [Outcome(s.decision, _outcome(s, written, closed)) for s in steps]


@dataclass(frozen=True)
class _Shorten(Close):
    """A close of a fact that is closed already: its ``valid_to`` moved earlier (see
    :meth:`Plan._in_history`), in the put's transaction, only if the stored row is
    still closed when it was read, with the text, metadata and event time read."""

    def matches(self, stored: MemoryRecord) -> bool:
        return stored.valid_to == self.based_on.valid_to and Derived(self.based_on).matches(stored)


def _close(target: MemoryRecord, patch: Patch, tokens: TokenCount | None = None) -> Close:
    """The :class:`Close` that ends ``target`` as read (a :class:`_Shorten` for one closed
    already)."""
    kind = Close if target.valid_to is None else _Shorten
    return kind(target, patch, tokens)


def _ended(record: MemoryRecord, close: Patch) -> MemoryRecord:
    """``record`` as ``close`` leaves it."""
    return replace(patched(record, close), valid_to=close.valid_to or record.valid_to)


def _outcome(
    step: Step, written: Mapping[str, MemoryRecord], closed: Mapping[str, MemoryRecord]
) -> MemoryRecord | None:
    """The record ``step`` wrote (an ADD's, an UPDATE's new one; as written), else the
    record it closed (a DELETE's), else None."""
    if step.record is not None:
        return written[step.record.id]
    return closed.get(step.target.id) if step.target is not None else None


def counted(record: MemoryRecord, count: TokenCounter | None) -> MemoryRecord:
    """``record`` with ``count``'s token count (as it is without ``count``)."""
    return record if count is None else replace(record, token_count=count(record))


def _within(owner: Scope, scope: Scope) -> bool:
    """True when a record owned by ``owner`` may be changed by someone acting in ``scope``:
    one of the scope's user (under its agent, when it names one), or, acting without a
    user, a record of no user: the agent's own, or, acting with neither user nor agent,
    one of the session's: the owner :func:`owner_scope` reconciles with (and
    :func:`find_similar` shows).

    Why the session: a session-only add checked only user and agent, and a caller's
    reconciler naming a fact it was never shown closed an agent's facts outside the
    session and another session's (a review, s58)."""
    if scope.user_id is None and owner.user_id is not None:
        return False
    if scope.user_id is None and scope.agent_id is None:
        return owner.session_id == scope.session_id
    return all(
        mine is None or mine == theirs
        for mine, theirs in ((scope.user_id, owner.user_id), (scope.agent_id, owner.agent_id))
    )


def find_similar(
    store: Store,
    scope: Scope,
    text: str,
    *,
    k: int = 5,
    embedder: Embedder | None = None,
) -> list[MemoryRecord]:
    """The ``k`` stored facts of ``scope`` most like ``text`` (BM25, plus ``k`` by vector
    if ``embedder`` is given): what a candidate is reconciled with.

    Facts only (:data:`INFERRED`: records a reconciliation decision wrote), never a
    conversation turn or a text added verbatim. In the scope's owner exactly: with a
    user, that user's (under the scope's agent, when it names one); without one, only
    records of no user (an agent's own facts, never those of the agent's users), which
    the filter asks for (``no_user``): searched wide and kept after, an agent's own fact
    ranked below a thousand of its users' was not found, and the candidate was added
    beside it."""
    flt = Filter(scope=scope, metadata={INFERRED: True}, no_user=scope.user_id is None)
    searches: list[Callable[[int], list[Ranked]]] = [
        lambda n: store.keyword_search(flt, text, limit=n)
    ]
    if embedder is not None:
        vector = embedder.embed([text])[0]
        searches.append(lambda n: store.vector_search(flt, vector, limit=n))
    ranked: list[str] = []
    for search in searches:
        ranked += [h.id for h in search(k) if h.id not in ranked]
    return store.get_many(scope.tenant, ranked[: 2 * k])


@dataclass(frozen=True)
class Outcome:
    """A decision and the record it wrote or closed (None for NOOP)."""

    decision: Decision
    record: MemoryRecord | None


def reconcile(
    candidates: Sequence[Candidate],
    store: Store,
    *,
    scope: Scope,
    reconciler: Reconciler | None = None,
    embedder: Embedder | None = None,
    k: int = 5,
    now: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
    contexts: Mapping[str, str] | None = None,
    count: TokenCounter | None = None,
) -> list[Outcome]:
    """Decide each candidate in turn against what ``scope`` already holds, then apply
    the decisions (a :class:`Plan`, committed).

    Every record written gets ``metadata`` and the context of its first source turn
    (``contexts``, see :func:`new_record`). The reconciler defaults to
    :class:`HeuristicReconciler`. ``count`` gives each record written its token count.
    An UPDATE of an attribute is followed by a DELETE outcome for each other open fact
    that held it, a DELETE by one for each other open fact that gave it the value denied
    (:meth:`Plan._closes_too`).
    """
    plan = Plan(
        store,
        scope,
        reconciler=reconciler,
        embedder=embedder,
        k=k,
        now=now,
        contexts=contexts,
        count=count,
    )
    plan.decide(candidates, metadata)
    return plan.commit()


class Plan:
    """Decisions on batches of candidates, and the writes they need, made before any
    is written (:meth:`commit` writes them).

    Similar memories are looked up across the user's (or agent's) sessions, not only
    ``scope.session_id``: a fact said in one session can update one said in another.
    A later candidate sees what an earlier one decided: the records the plan will
    write are shown to the reconciler beside the stored ones, and those it will close
    are shown no more.

    Why decide first: the new records and the closes go in one ``put`` (one
    transaction instead of one per fact), which an inferring add makes conditional on
    its session's newest record, as a plain add's is (``commit``'s ``after``); refused,
    it plans again on what the store holds then, and nothing of the refused plan was
    written.

    The write is conditional on what the decisions were made on, too:

    - the newest record of the user (or agent) across sessions, read before anything
      else (``newest``): an add of the same fact that committed while this one decided
      would otherwise go unseen, and the fact be stored twice;
    - the stored records the reconciler is shown (``read``, id to content hash): each
      must still be stored, open, with the text it was shown with. A model may merge a
      shown fact into the one it adds, and a ``forget`` or ``delete`` that committed
      while it thought would otherwise see that text written again after it; a fact
      another add closed meanwhile is no longer there to replace;
    - each record it closes, as read (``Close``): a fact rewritten meanwhile is not
      ended for the text it no longer has.

    A shown record gone, closed or rewritten by the time a decision names it raises
    ``errors.Conflict`` at once (the caller decides again, without it)."""

    def __init__(
        self,
        store: Store,
        scope: Scope,
        *,
        reconciler: Reconciler | None = None,
        embedder: Embedder | None = None,
        k: int = 5,
        now: datetime | None = None,
        contexts: Mapping[str, str] | None = None,
        count: TokenCounter | None = None,
        said_now: bool = False,
    ) -> None:
        self.store, self.scope, self.embedder, self.k = store, scope, embedder, k
        self.decider = reconciler or HeuristicReconciler()
        self.now = now or datetime.now(UTC)
        self.contexts, self.count = contexts, count
        #: The candidates were said now (no time given to their add): see plan_step.
        self.said_now = said_now
        self.across = owner_scope(scope)
        self.steps: list[Step] = []
        #: The records the steps will write, by id, and the ids of those they close.
        self._planned: dict[str, MemoryRecord] = {}
        self._closed: set[str] = set()
        #: The planned records still open, by word (``_shown`` asks it for each candidate).
        self._pending = _Pending()
        #: The planned records that hold an attribute (:func:`_attribute`), open or
        #: closed, by attribute, with when each holds (``_in_history`` asks them).
        self._spans: dict[tuple[str, str], _Spans] = {}
        #: Where each record of ``_spans`` is in it, by id.
        self._span_at: dict[str, tuple[_Spans, int]] = {}
        #: The planned records still open (not closed, no ``valid_to``) that hold an
        #: attribute, by attribute (subject, slot) and by attribute and value (subject,
        #: slot, value: :func:`_held`), in the order planned: ``_closes_too`` reads these
        #: only (see :meth:`_add`).
        self._open: dict[tuple[str, ...], dict[str, MemoryRecord]] = {}
        #: What each record of ``_open`` gives (attribute and value), by id.
        self._gives: dict[str, tuple[str, str, str]] = {}
        #: When each record the plan closes stops holding, by id.
        self._ends: dict[str, datetime] = {}
        #: The stored records shown to the reconciler or closed: id -> content hash.
        self.read: dict[str, str] = {}
        #: The newest record of ``across`` before anything was read (see the class).
        self.newest = _newest(store, self.across)

    @claim_memo()  # each text is parsed once per batch, and no parse outlives it
    def decide(
        self, candidates: Sequence[Candidate], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Decide each of ``candidates`` in turn; the records they write get ``metadata``."""
        for candidate in candidates:
            shown = self._shown(candidate)
            decision = self.decider.decide(candidate, shown)
            step = plan_step(
                decision,
                self._target(decision),
                self.scope,
                self.now,
                metadata,
                self.contexts,
                self.count,
                said_now=self.said_now,
            )
            step, shortened = self._in_history(step)
            self._add(step)
            for also in (*shortened, *self._closes_too(step, shown)):
                self._add(also)

    def _add(self, step: Step) -> None:
        """Append ``step``, keeping the plan's indexes of what it writes and closes.

        A record closed leaves the indexes of open records (``_pending``, ``_open``)
        at once. Why: an add whose facts each update one attribute ("I live in City1. I
        live in City2. ...") closes every fact it planned before; walked by each later
        fact and skipped one by one, they made the add cost time in the square of its
        facts (4,500 facts: 9.5 s, 18,000: 88 s; a review, s49)."""
        self.steps.append(step)
        record = step.record
        if record is not None:
            self._planned[record.id] = record
            self._pending.add(record)
            gives = _held(record)
            if gives is not None:
                held = (gives[0], gives[1])
                spans = self._spans.setdefault(held, _Spans())
                self._span_at[record.id] = (spans, spans.add(record))
                if record.valid_to is None:  # one planned closed already is never closed
                    for key in (held, gives):
                        self._open.setdefault(key, {})[record.id] = record
                    self._gives[record.id] = gives
        if step.target is not None:
            self._closed.add(step.target.id)
            self._pending.close(step.target.id)
            self._drop_open(step.target.id)
            if step.close is not None and step.close.valid_to is not None:
                self._ends[step.target.id] = step.close.valid_to
                at = self._span_at.get(step.target.id)
                if at is not None:
                    at[0].ends(at[1], opt_utc(step.close.valid_to))

    def _drop_open(self, record_id: str) -> None:
        """Take a planned record the plan closes out of ``_open`` (nothing for a stored
        one, or one not there)."""
        gives = self._gives.pop(record_id, None)
        if gives is None:
            return
        for key in (gives[:2], gives):
            bucket = self._open[key]
            del bucket[record_id]
            if not bucket:
                del self._open[key]

    def commit(
        self,
        *,
        after: Newest | None = None,
        now: datetime | None = None,
        metadata: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> list[Outcome]:
        """Write what was decided (see :func:`commit`), if ``after`` (a session's newest
        record as read) and the plan's own ``newest`` are still the newest.

        ``now`` dates the records written (their ``created_at``; the plan's ``now`` if
        None) and ``metadata`` maps each one's metadata to what is written: an add
        that decides before it reads its session's newest record (so that no lock of
        the session is held while a model thinks) dates and numbers its records after
        that record only when it writes them, as the newest of the session.

        Refused because the user's newest record moved, and every record added since is
        one no inferring add wrote (a chat turn, a plain add), nothing the plan decided
        on changed: it is written again after them, without deciding again. Otherwise a
        user chatting while a fact was decided refused it every time (each try calling
        the model again), and the add failed after ``ADD_TRIES``."""
        steps = self._stamped(now, metadata)
        for _ in range(CATCH_UPS):
            checks = [self.newest]
            if after is not None and after.filter != self.newest.filter:
                checks.append(after)
            try:
                return commit(
                    steps, self.store, count=self.count, after=checks, unchanged=self.read
                )
            except Conflict:
                newest = _past_plain_records(self.store, self.newest)
                if newest is None:
                    raise  # a fact was added meanwhile, or another check refused
                self.newest = newest
        raise Conflict("the user's memories kept changing while the facts were written")

    def still_holds(self) -> bool:
        """Whether what the decisions were made on is still as read (reads only, no
        write): the user's newest record (moved past records no inferring add wrote:
        the plan is based on the newest of those now), each stored record shown, open
        with its text, and each record to close, open and as read. What the write
        checks in its transaction, but for the session's newest record (the caller's):
        a plan that still holds is written as it is, without asking the model again;
        one that does not is decided again."""
        newest = _newest(self.store, self.across)
        if newest.id != self.newest.id:
            caught_up = _past_plain_records(self.store, self.newest)
            if caught_up is None:
                return False
            self.newest = caught_up
        stored = {r.id: r for r in self.store.get_many(self.scope.tenant, list(self.read))}
        for record_id, hash_ in self.read.items():
            now = stored.get(record_id)
            if now is None or now.valid_to is not None or now.hash != hash_:
                return False
        return all(
            _close(step.target, step.close).matches(stored[step.target.id])
            for step in self.steps
            if step.target is not None and step.close is not None and step.target.id in stored
        )

    def _stamped(
        self,
        now: datetime | None,
        metadata: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None,
    ) -> list[Step]:
        """The steps with their new records dated ``now`` and their metadata mapped by
        ``metadata`` (a planned record closed by a later step, as that step closes it);
        the steps as planned when neither is given."""
        if now is None and metadata is None:
            return self.steps
        when = now or self.now
        planned: dict[str, MemoryRecord] = {}
        out: list[Step] = []
        for step in self.steps:
            record, target, close = step.record, step.target, step.close
            if record is not None:
                meta = record.metadata if metadata is None else dict(metadata(record.metadata))
                record = replace(
                    record,
                    created_at=when,
                    updated_at=when,
                    valid_from=valid_since(step.decision.candidate, when),
                    metadata=meta,
                )
                planned[record.id] = record
            if target is not None and close is not None and target.id in planned:
                target = planned[target.id]  # closed in this batch: as it is written
                linked = None
                if close.metadata is not None:
                    linked = {**target.metadata, "superseded_by": close.metadata["superseded_by"]}
                valid_to = _until(step.decision.candidate, target, when)
                close = replace(close, valid_to=valid_to, metadata=linked)
            out.append(Step(step.decision, record, target, close))
        return out

    def _shown(self, candidate: Candidate) -> list[MemoryRecord]:
        """The planned records like ``candidate``, then the stored ones; none the plan
        closes (as a closed record is not shown once written)."""
        stored = find_similar(
            self.store, self.across, candidate.text, k=self.k, embedder=self.embedder
        )
        shown = [r for r in stored if r.id not in self._closed]
        for record in shown:
            if record.valid_to is None:  # a closed one is history: no decision reads it
                self.read.setdefault(record.id, record.hash)
        return self._pending.like(stem_tokens(candidate.text), self.k) + shown

    def _in_history(self, step: Step) -> tuple[Step, list[Step]]:
        """``step``, its new record fitted into the history of the attribute it holds
        (:func:`_attribute`), and the closes that fitting it needs.

        A statement said at a given time (an import, not one said now) may fall inside
        the time a closed fact of the attribute held: that fact now holds until the new
        one begins (a close of a closed fact, ``superseded_by`` the new record); and the
        new record holds until the first fact of the attribute that began after it (its
        ``valid_to``, ``superseded_by`` that fact), if that is earlier than the plan's.
        The facts are those of the owner like the new one (open or closed, to
        :data:`HISTORY_DEPTH`) and the plan's own (found through :class:`_Spans`, in the
        order planned, as a walk of them all would find them).

        Why: the attribute holds one value at a time. Paris (2020, closed in 2024 by
        Berlin) stayed valid to 2024 when "I live in Rome", said in 2022, was imported
        after both: ``as_of`` 2023 answered Paris and Rome (a review)."""
        new = step.record
        if self.said_now or new is None or step.decision.action not in ("ADD", "UPDATE"):
            return step, []
        held = _attribute(new)
        begins = opt_utc(new.valid_from)
        if held is None or begins is None:
            return step, []
        ends, after = opt_utc(new.valid_to), None
        shortened: list[str] = []
        steps: list[Step] = []
        later, holding = self._around(held, new, step.target, begins)
        for start, record in later:
            if ends is None or start < ends:
                ends, after = start, record
        for record in holding:
            shortened.append(record.id)
            steps += self._shortened(record, new, step.decision.candidate)
        if after is None and not shortened:
            return step, []
        meta = dict(new.metadata)
        if after is not None:
            meta["superseded_by"] = after.id
        if shortened and "supersedes" not in meta:
            meta["supersedes"] = shortened[0]
        fitted = counted(replace(new, valid_to=ends, metadata=meta), self.count)
        return replace(step, record=fitted), steps

    def _around(
        self,
        held: tuple[str, str],
        new: MemoryRecord,
        target: MemoryRecord | None,
        begins: datetime,
    ) -> tuple[list[tuple[datetime, MemoryRecord]], list[MemoryRecord]]:
        """The facts of the attribute ``held`` beside ``new`` (not it, nor ``target``)
        that begin after ``begins`` (each with its begin; of the plan's, only the first
        to begin), and those that hold at ``begins`` (begin before, end after: an end
        known), each in the order a walk of the plan's (``_spans``), then of the stored
        (:meth:`_history`), meets them."""
        later: list[tuple[datetime, MemoryRecord]] = []
        holding: list[MemoryRecord] = []
        spans = self._spans.get(held)
        if spans is not None:
            skip = {new.id} | ({target.id} if target is not None else set())
            first = spans.first_after(begins, skip)
            later += [first] if first is not None else []
            holding += spans.holding(begins, skip)
        for record in self._history(held, new, target):
            start = opt_utc(record.valid_from)
            stop = opt_utc(self._ends.get(record.id, record.valid_to))
            if start is None:
                continue
            if start > begins:
                later.append((start, record))
            elif start < begins and stop is not None and begins < stop:
                holding.append(record)
        return later, holding

    def _shortened(self, record: MemoryRecord, new: MemoryRecord, cand: Candidate) -> list[Step]:
        """The close that ends ``record`` when ``new`` begins, ``superseded_by`` it: a step
        of its own (a DELETE outcome), or, for a stored record the plan closes already,
        that step's close moved (a stored row is closed once in a write)."""
        begins = new.valid_from
        linked = {**record.metadata, "superseded_by": new.id}
        if record.id in self._closed and record.id not in self._planned:
            for i, earlier in enumerate(self.steps):
                if (
                    earlier.close is not None
                    and earlier.target is not None
                    and earlier.target.id == record.id
                ):
                    moved = replace(earlier.close, valid_to=begins, metadata=linked)
                    self.steps[i] = replace(earlier, close=moved)
            self._ends[record.id] = opt_utc(begins) or self.now
            return []
        reason = f"held what {new.id} holds when that began"
        decision = Decision("DELETE", cand, record.id, reason=reason, decided_by="rule")
        return [Step(decision, None, record, Patch(valid_to=begins, metadata=linked))]

    def _history(
        self, held: tuple[str, str], new: MemoryRecord, target: MemoryRecord | None
    ) -> list[MemoryRecord]:
        """The stored facts of the owner that hold the attribute ``held`` beside ``new``
        (open or closed), like ``new`` (to :data:`HISTORY_DEPTH`); not ``new``, nor the
        ``target`` its step closes. (The plan's own: ``_spans``.)"""
        flt = Filter(scope=self.across, metadata={INFERRED: True}, include_invalid=True)
        hits = self.store.keyword_search(flt, new.text, limit=HISTORY_DEPTH)
        stored = self.store.get_many(self.scope.tenant, [h.id for h in hits])
        seen = {new.id} | ({target.id} if target is not None else set())
        out: list[MemoryRecord] = []
        for record in stored:
            if record.id in seen or _attribute(record) != held:
                continue
            seen.add(record.id)
            if _within(record.scope, self.scope):
                out.append(record)
        return out

    def _closes_too(self, step: Step, shown: Sequence[MemoryRecord]) -> list[Step]:
        """The closes of the other open facts of the owner that an UPDATE or a DELETE of
        an attribute ends too, among the records the candidate was shown, the planned
        ones and the stored facts like the target:

        - an UPDATE ends every fact holding the attribute its new record and its target
          hold (:func:`_attribute`: same subject, same slot, not negated), whatever its
          value; each closes as a DELETE, superseded by the UPDATE's new record;
        - a DELETE ends every fact giving the attribute the value its target gives
          (:func:`_held`): "I no longer live in Lisbon" ends "lives in Lisbon" and "is
          living in Lisbon", not "lives in Porto".

        Why: the attributes ``claim`` reads hold one value at a time (a new place to live
        replaces the old one). A store holding two facts of one (written before restated
        claims were NOOPs, or by a model's ADD) kept the old value current beside the new
        one when an UPDATE or DELETE closed only one of them, and search returned it."""
        target, new = step.target, step.record
        if target is None or step.decision.action not in ("UPDATE", "DELETE"):
            return []
        # What a record must share with the target to end with it: the attribute
        # (an UPDATE), or the attribute and its value (a DELETE).
        same: Callable[[MemoryRecord], tuple[str, ...] | None]
        if step.decision.action == "UPDATE":
            same, reason = _attribute, f"held what {target.id} held, which was updated"
            if new is None or _attribute(new) != _attribute(target):
                return []
        else:
            same, reason = _held, f"said what {target.id} said, which is no longer true"
        wanted = same(target)
        if wanted is None:
            return []
        # The open planned records that hold it (those closed are skipped below anyway).
        holders = tuple(self._open.get(wanted, {}).values())
        like_target = find_similar(
            self.store, self.across, target.text, k=self.k, embedder=self.embedder
        )
        cand = step.decision.candidate
        out: list[Step] = []
        seen = {target.id} | ({new.id} if new is not None else set())
        for record in (*shown, *holders, *like_target):
            if record.id in seen or record.id in self._closed or record.valid_to is not None:
                continue
            seen.add(record.id)
            if same(record) != wanted:
                continue
            if record.id not in self._planned:
                if not _within(record.scope, self.scope):
                    continue
                self.read.setdefault(record.id, record.hash)  # closed only as read
            until = _until(cand, record, self.now)
            decision = Decision("DELETE", cand, record.id, reason=reason, decided_by="rule")
            if new is None:
                out.append(Step(decision, None, record, Patch(valid_to=until)))
            else:
                closed = {**record.metadata, "superseded_by": new.id}
                out.append(Step(decision, None, record, Patch(valid_to=until, metadata=closed)))
        return out

    def _target(self, decision: Decision) -> MemoryRecord | None:
        """The record an UPDATE or DELETE closes: a planned one, else as stored now,
        which must be as it was shown (``Conflict`` if it is gone, closed or rewritten
        since). None (NotFound, by ``plan_step``) for one the plan closes already, or
        one the decider was never shown (nor planned).

        Why refuse one never shown: a caller's :class:`Reconciler` named an open fact
        of another scope by its id, and it was closed (a review, s58); what a decider
        may change is what it was shown."""
        if decision.action not in ("UPDATE", "DELETE"):
            return None
        target = decision.target_id or ""
        if target in self._closed:
            return None
        found = self._planned.get(target)
        if found is not None:
            return found
        shown = self.read.get(target)
        if shown is None:
            return None  # never shown: no decision may close it (NotFound)
        stored = self.store.get(self.scope.tenant, target)
        if stored is None or stored.hash != shown or stored.valid_to is not None:
            raise Conflict(f"memory {target!r} changed, ended or was erased since it was shown")
        return stored


#: How many of the owner's facts like a dated statement (open or closed) are read to fit
#: it into the history of the attribute it holds (:meth:`Plan._in_history`).
HISTORY_DEPTH = 20


def _attribute(record: MemoryRecord) -> tuple[str, str] | None:
    """The attribute ``record`` gives a value of (subject and slot of its
    :func:`~contextos.text.claims.claim`), None when it holds none or denies one."""
    held = claim(record.text, _speaker(record))
    return None if held is None or held.negated else (held.subject, held.slot)


def _held(record: MemoryRecord) -> tuple[str, str, str] | None:
    """The attribute and the value ``record`` gives it (subject, slot, value of its
    :func:`~contextos.text.claims.claim`), None when it holds none or denies one."""
    held = claim(record.text, _speaker(record))
    return None if held is None or held.negated else (held.subject, held.slot, held.value)


def owner_scope(scope: Scope) -> Scope:
    """The scope whose facts an add in ``scope`` is reconciled with: its user's (or
    agent's) in every session, or the session's when it names neither; without a
    user, only the records of no user in it (:func:`find_similar`)."""
    return replace(scope, session_id=None) if scope.user_id or scope.agent_id else scope


#: How many times a plan is written again after records no inferring add wrote
#: (:meth:`Plan.commit`) before it is decided again.
CATCH_UPS = 8

#: How far back :func:`_past_plain_records` looks for the newest record a plan read.
_CATCH_UP_DEPTH = 64


def _past_plain_records(store: Store, seen: Newest) -> Newest | None:
    """The newest record of ``seen.filter`` now, when every record after ``seen.id`` is
    one no inferring add wrote (neither ``decided_by`` nor :data:`INFERRED` in its
    metadata: nothing a plan could have been shown): a plan based on ``seen`` may be
    written after them. None when one of them is such a fact, none came, or ``seen``
    is further back than ``_CATCH_UP_DEPTH`` records."""
    newer = store.list(seen.filter, limit=_CATCH_UP_DEPTH)
    ids = [r.id for r in newer]
    if not ids or ids[0] == seen.id:
        return None
    cut = ids.index(seen.id) if seen.id in ids else None
    if cut is None and (seen.id is not None or len(ids) == _CATCH_UP_DEPTH):
        return None
    if any("decided_by" in r.metadata or INFERRED in r.metadata for r in newer[:cut]):
        return None
    return Newest(seen.filter, ids[0])


def _newest(store: Store, scope: Scope) -> Newest:
    """The newest record of ``scope`` (closed ones too), as a ``put`` is based on it."""
    flt = Filter(scope=scope, include_invalid=True)
    last = store.list(flt, limit=1)
    return Newest(flt, last[0].id if last else None)


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class _Spans:
    """A plan's records that hold one attribute (open or closed), in the order planned,
    with when each begins (``valid_from``) and ends (``valid_to``, or the plan's close of
    it: :meth:`ends`), for :meth:`Plan._in_history`: the first to begin after a time
    (:meth:`first_after`) and those holding at it (:meth:`holding`), each as a walk of
    them all in the order planned finds them, without the walk.

    Why: a dated add whose facts each update one attribute ("I live in City1. I live in
    City2. ...", given a time) walked every fact planned before for each: 4,500 facts
    took 20 s (a review, s49). A tree over the order planned keeps, under each node, the
    earliest begin and the latest end, so :meth:`holding` reads only the branches that
    can hold a record holding at the time; :meth:`first_after` bisects the begins."""

    def __init__(self) -> None:
        self.records: list[MemoryRecord] = []
        #: (begin, position) of each record that has a begin, ascending.
        self.begins: list[tuple[datetime, int]] = []
        self.size = 1
        #: Node -> the earliest begin / the latest end under it (``_LATEST`` / ``_EARLIEST``
        #: for none); node 1 is the root, leaves are ``size + position``.
        self.low: list[datetime] = [_LATEST, _LATEST]
        self.high: list[datetime] = [_EARLIEST, _EARLIEST]

    def add(self, record: MemoryRecord) -> int:
        """Append ``record``; its position."""
        pos = len(self.records)
        if pos == self.size:
            self._grow()
        self.records.append(record)
        begin = opt_utc(record.valid_from)
        if begin is not None:
            bisect.insort(self.begins, (begin, pos))
        end = opt_utc(record.valid_to)
        self._set(pos, _LATEST if begin is None else begin, _EARLIEST if end is None else end)
        return pos

    def ends(self, pos: int, end: datetime | None) -> None:
        """The record at ``pos`` holds until ``end`` (None: no end known)."""
        self._set(pos, self.low[self.size + pos], _EARLIEST if end is None else end)

    def first_after(self, time: datetime, skip: set[str]) -> tuple[datetime, MemoryRecord] | None:
        """The record that begins first after ``time`` (the first planned of those that
        begin then), not one of ``skip``, with its begin."""
        i = bisect.bisect_right(self.begins, time, key=lambda entry: entry[0])
        for begin, pos in self.begins[i : i + len(skip) + 1]:
            if self.records[pos].id not in skip:
                return begin, self.records[pos]
        return None

    def holding(self, time: datetime, skip: set[str]) -> list[MemoryRecord]:
        """The records that begin before ``time`` and end after it (an end known), in the
        order planned, but those of ``skip``."""
        out: list[MemoryRecord] = []
        nodes = [1]
        while nodes:
            node = nodes.pop()
            if self.low[node] >= time or self.high[node] <= time:
                continue
            if node >= self.size:
                record = self.records[node - self.size]
                if record.id not in skip:
                    out.append(record)
                continue
            nodes += (2 * node + 1, 2 * node)  # the left one popped first
        return out

    def _set(self, pos: int, begin: datetime, end: datetime) -> None:
        node = self.size + pos
        self.low[node], self.high[node] = begin, end
        node //= 2
        while node:
            left, right = 2 * node, 2 * node + 1
            self.low[node] = min(self.low[left], self.low[right])
            self.high[node] = max(self.high[left], self.high[right])
            node //= 2

    def _grow(self) -> None:
        """Twice the room: the leaves kept, the nodes above worked out again."""
        old, self.size = self.size, 2 * self.size
        low = [_LATEST] * (2 * self.size)
        high = [_EARLIEST] * (2 * self.size)
        low[self.size : self.size + old] = self.low[old : 2 * old]
        high[self.size : self.size + old] = self.high[old : 2 * old]
        for node in range(self.size - 1, 0, -1):
            low[node] = min(low[2 * node], low[2 * node + 1])
            high[node] = max(high[2 * node], high[2 * node + 1])
        self.low, self.high = low, high


class _Pending:
    """A plan's records not yet written and not closed, in the order planned, indexed by
    content word (:func:`~contextos.text.claims.stem_tokens`, each text read once).

    Why: each candidate is shown the newest ``k`` of them that share at least two words
    with it. Found by scanning them all, each text's words read again on each scan, one
    add took time in the square of its facts, all of it holding its user's turn: 5,738
    facts took 65 s (4.7 s this way). ``like`` reads only records that hold a word of
    the candidate, newest first, and stops at the ``k``-th that shares two."""

    def __init__(self) -> None:
        self.records: list[MemoryRecord] = []
        self.words: list[frozenset[str]] = []
        #: word -> the positions (in ``records``) of the open records that hold it, as
        #: the keys of a dict, ascending (added in order): a closed record's position
        #: is taken out of each of its words' lists, so that no search walks it again.
        #: Why: an add whose facts each close the one before ("I live in City1. I live
        #: in City2. ...") kept every closed fact in the lists of "user" and "live", and
        #: each later fact walked them all (a review, s49: time in the square).
        self.postings: dict[str, dict[int, None]] = {}
        self.at: dict[str, int] = {}
        self.closed: set[int] = set()

    def add(self, record: MemoryRecord) -> None:
        pos = len(self.records)
        words = stem_tokens(record.text)
        self.records.append(record)
        self.words.append(words)
        self.at[record.id] = pos
        for word in words:
            self.postings.setdefault(word, {})[pos] = None

    def close(self, record_id: str) -> None:
        pos = self.at.get(record_id)
        if pos is None or pos in self.closed:
            return
        self.closed.add(pos)
        for word in self.words[pos]:
            held = self.postings[word]
            del held[pos]
            if not held:
                del self.postings[word]

    def like(self, words: frozenset[str], k: int) -> list[MemoryRecord]:
        """The newest ``k`` open records sharing at least two of ``words`` (all of them
        for ``k`` <= 0), oldest first.

        A record that shares two words holds one besides the word whose list is longest,
        so that list is never walked: the others are merged newest first (each a record
        that holds a word of them), and each record met is checked on its whole word set."""
        lists = sorted((self.postings[w] for w in words if w in self.postings), key=len)
        if len(lists) < 2:
            return []
        found: list[int] = []
        last = -1
        for pos in heapq.merge(*(reversed(p) for p in lists[:-1]), reverse=True):
            if pos == last:
                continue
            last = pos
            if len(words & self.words[pos]) < 2:
                continue
            found.append(pos)
            if len(found) == k:
                break
        return [self.records[pos] for pos in reversed(found)]
