"""What ``contextos bench locomo --memory MODE`` stores for a conversation.

- ``default``: what a plain ``Memory.add`` per turn stores: every turn verbatim,
  indexed with its speaker, date, image caption and the turn it answers.
- ``beside``: the same turns, each with the offline extractor's facts of it stored
  beside it (``Memory.add(..., facts=True)``, as ``Memory(turn_facts=True)`` does).
- ``extracted``: the offline extractor's facts, one ``Memory.add(infer=True)``
  per session (facts reconciled against what earlier sessions stored).
- ``observations``: LoCoMo's own ``observation`` facts, written by an LLM for
  the dataset, stored as semantic memories with ``provenance=(dia_id,)`` and
  the session date: a reference point for what model-made facts achieve.

Questions are scored by the turns a hit stands for (``record.provenance``), so
all four are measured against the same evidence. ``memory_tokens`` counts
everything stored and searched, the rendered memory *and* the context indexed
with it (for turns, the turn each one replies to), against ``raw_tokens``,
the conversation's turns rendered once each.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..memory import Memory
from ..memory.render import render
from ..types import Filter, MemoryRecord, Scope, content_hash
from .locomo_data import LocomoConversation, LocomoTurn

MEMORY_MODES = ("default", "beside", "extracted", "observations")


def session_id(conv: LocomoConversation, session: int) -> str:
    return f"{conv.sample_id}/S{session}"


def turn_message(turn: LocomoTurn) -> dict[str, object]:
    """A LoCoMo turn as ``Memory.add`` takes it (speaker, dia_id, caption)."""
    message: dict[str, object] = {
        "role": "user",
        "content": turn.text,
        "name": turn.speaker,
        "dia_id": turn.dia_id,
    }
    if turn.caption:
        message["caption"] = turn.caption
    return message


def ingest_default(memory: Memory, conv: LocomoConversation, add_times: list[float]) -> None:
    """Add every turn of a conversation, one plain ``add`` call per turn (as an app would)."""
    _add_turns(memory, conv, add_times, facts=None)


def ingest_beside(memory: Memory, conv: LocomoConversation, add_times: list[float]) -> None:
    """Add every turn, one ``add(..., facts=True)`` per turn: each turn and its facts."""
    _add_turns(memory, conv, add_times, facts=True)


def _add_turns(
    memory: Memory, conv: LocomoConversation, add_times: list[float], *, facts: bool | None
) -> None:
    for turn in conv.turns:
        start = time.perf_counter()
        memory.add(
            turn_message(turn),
            user_id=conv.sample_id,
            session_id=session_id(conv, turn.session),
            event_time=turn.time,
            facts=facts,
        )
        add_times.append(time.perf_counter() - start)


def sessions(conv: LocomoConversation) -> dict[int, list[LocomoTurn]]:
    out: dict[int, list[LocomoTurn]] = defaultdict(list)
    for turn in conv.turns:
        out[turn.session].append(turn)
    return dict(out)


def ingest_extracted(memory: Memory, conv: LocomoConversation, add_times: list[float]) -> None:
    """One ``add(infer=True)`` per session: extract, reconcile, store the facts."""
    for number, turns in sessions(conv).items():
        messages = [{**turn_message(t), "event_time": t.time} for t in turns]
        start = time.perf_counter()
        memory.add(
            messages,
            user_id=conv.sample_id,
            session_id=session_id(conv, number),
            event_time=turns[0].time,
            infer=True,
        )
        add_times.append(time.perf_counter() - start)


def ingest_observations(memory: Memory, conv: LocomoConversation, add_times: list[float]) -> None:
    """LoCoMo's observation facts as semantic memories, dated by their session."""
    by_id = {t.dia_id: t for t in conv.turns}
    firsts = {n: turns[0].time for n, turns in sessions(conv).items()}
    seqs: dict[int, int] = defaultdict(int)
    records = []
    now = datetime.now(UTC)
    for speaker, fact, dia_id in conv.observations:
        turn = by_id.get(dia_id)
        if turn is None or not fact.strip():
            continue
        when = firsts[turn.session]
        records.append(
            MemoryRecord(
                id=str(uuid.uuid4()),
                text=fact.strip(),
                memory_type="semantic",
                scope=Scope(
                    tenant=memory.tenant,
                    user_id=conv.sample_id,
                    session_id=session_id(conv, turn.session),
                ),
                metadata={"speaker": speaker, "seq": seqs[turn.session], "dia_id": dia_id},
                created_at=now,
                updated_at=now,
                event_time=when,
                valid_from=when,
                provenance=(dia_id,),
                hash=content_hash(fact.strip()),
            )
        )
        seqs[turn.session] += 1
    start = time.perf_counter()
    memory.store.put(records)
    add_times.append(time.perf_counter() - start)
    memory.flush(timeout=0)  # wake the embedding worker


INGESTERS = {
    "default": ingest_default,
    "beside": ingest_beside,
    "extracted": ingest_extracted,
    "observations": ingest_observations,
}


def ingest(mode: str, memory: Memory, conv: LocomoConversation, add_times: list[float]) -> None:
    """Store ``conv`` in ``memory`` the way ``mode`` says (see the module docstring)."""
    if mode not in INGESTERS:
        raise ValueError(f"memory mode must be one of {MEMORY_MODES}, not {mode!r}")
    INGESTERS[mode](memory, conv, add_times)


def stored_records(memory: Memory, conv: LocomoConversation) -> list[MemoryRecord]:
    """Everything stored for ``conv``, closed (superseded) records included."""
    flt = Filter(scope=Scope(tenant=memory.tenant, user_id=conv.sample_id), include_invalid=True)
    out: list[MemoryRecord] = []
    while batch := memory.store.list(flt, limit=1000, offset=len(out)):
        out.extend(batch)
    return out


def memory_tokens(memory: Memory, records: Sequence[MemoryRecord]) -> int:
    """Tokens of the stored memory: each record rendered plus the context indexed with it."""
    count = memory.tokenizer.count
    return sum(count(render(r)) + (count(r.context) if r.context else 0) for r in records)


def raw_tokens(memory: Memory, conv: LocomoConversation) -> int:
    """Tokens of the conversation's turns rendered once each, as a raw turn renders."""
    count = memory.tokenizer.count
    total = 0
    for t in conv.turns:
        line = f"[{t.time.date().isoformat()}] {t.speaker}: {t.text}"
        total += count(f"{line} (image: {t.caption})" if t.caption else line)
    return total


def size_report(memory: Memory, convs: Sequence[LocomoConversation], mode: str) -> dict[str, Any]:
    """``memory_mode``, ``memory_tokens``, ``raw_tokens`` and record counts for the report."""
    records = [r for c in convs for r in stored_records(memory, c)]
    mem = memory_tokens(memory, records)
    raw = sum(raw_tokens(memory, c) for c in convs)
    types: dict[str, int] = defaultdict(int)
    for r in records:
        types[r.memory_type] += 1
    return {
        "memory_mode": mode,
        "memory_tokens": mem,
        "raw_tokens": raw,
        "memory_to_raw": round(mem / raw, 3) if raw else None,
        "records": len(records),
        "records_closed": sum(r.valid_to is not None for r in records),
        "records_by_type": dict(types),
    }
