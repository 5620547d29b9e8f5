"""``contextos bench extract``: how fast the offline extractor runs and how much it shrinks.

Runs :class:`~contextos.memory.extract.OfflineExtractor` over every session of
the LoCoMo conversations (embedding is not part of the timing), and reports
turns per second and the token size of the extracted memories against the raw
dialogue ("Speaker: text" per turn, image captions included, as a
turn-per-memory store would keep them). LoCoMo is CC BY-NC and is never
copied into the repository: the path is an argument.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from contextos.llm.tokens import default_tokenizer
from contextos.text.temporal import parse_session_time

from ..errors import ConfigError
from ..memory.extract import Candidate, OfflineExtractor
from ..types import Message
from .locomo_data import locomo_samples, locomo_shape

DEFAULT_LOCOMO = "../shared/data/locomo/locomo-dev.json"
_DIA_ID = re.compile(r"D\d+:\d+")


@dataclass(frozen=True)
class Session:
    """One LoCoMo session as chat messages, with its timestamp."""

    conversation: str
    session_time: datetime | None
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class ExtractBenchResult:
    """What ``bench extract`` measured."""

    conversations: int
    sessions: int
    turns: int
    candidates: int
    seconds: float
    turns_per_second: float
    raw_tokens: int
    memory_tokens: int
    size_ratio: float
    by_type: dict[str, int]
    turns_with_memory: float
    evidence_coverage: float | None = None


def turn_message(turn: dict[str, object]) -> Message:
    """A LoCoMo turn as a Message: speaker in ``name``, dia_id and caption in metadata."""
    metadata = {"dia_id": str(turn.get("dia_id", ""))}
    if turn.get("blip_caption"):
        metadata["blip_caption"] = str(turn["blip_caption"])
    return Message("user", str(turn.get("text", "")), name=str(turn["speaker"]), metadata=metadata)


def _read_samples(path: str | Path) -> list[dict[str, Any]]:
    file = Path(path)
    if not file.exists():  # a folder is "cannot read ...: Is a directory", as elsewhere
        raise ConfigError(f"LoCoMo data not found at {file} (pass --data PATH to locomo-dev.json)")
    return locomo_samples(file)  # a file that is not LoCoMo data: one line naming it


def load_locomo_sessions(path: str | Path) -> list[Session]:
    """Every session of a locomo10-format file, in order.

    Raises ConfigError with a one-line message when the file is missing or unreadable.
    """
    sessions: list[Session] = []
    for i, sample in enumerate(_read_samples(path)):
        with locomo_shape(path, i, sample):
            conv = sample["conversation"]
            n = 1
            while f"session_{n}" in conv:
                when = parse_session_time(conv.get(f"session_{n}_date_time"))
                msgs = tuple(turn_message(t) for t in conv[f"session_{n}"])
                sessions.append(Session(sample.get("sample_id", ""), when, msgs))
                n += 1
    return sessions


def load_locomo_evidence(path: str | Path) -> dict[str, list[str]]:
    """Per conversation, the turn ids cited as evidence by its non-adversarial questions.

    LoCoMo's evidence lists are sometimes malformed ("D8:6; D9:17"): they are
    split on ``[;, ]`` and only ids shaped like ``D<session>:<turn>`` are kept.
    """
    out: dict[str, list[str]] = {}
    for i, sample in enumerate(_read_samples(path)):
        with locomo_shape(path, i, sample):
            ids = out.setdefault(sample.get("sample_id", ""), [])
            for qa in sample.get("qa", []):
                if qa.get("category") == 5:
                    continue
                for raw in qa.get("evidence", []):
                    ids.extend(e for e in re.split(r"[;, ]+", str(raw)) if _DIA_ID.fullmatch(e))
    return out


def _raw_text(message: Message) -> str:
    caption = message.metadata.get("blip_caption")
    extra = f" [shared {caption}]" if caption else ""
    return f"{message.name}: {message.content}{extra}"


def run_extract_bench(
    sessions: Sequence[Session],
    *,
    extractor: OfflineExtractor | None = None,
    repeat: int = 3,
    evidence: Mapping[str, Sequence[str]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractBenchResult:
    """Extract every session ``repeat`` times; the fastest pass gives turns/s.

    With ``evidence`` (see :func:`load_locomo_evidence`), also the share of
    evidence turns of the extracted conversations that left at least one memory.
    ``progress(n)`` is called after each session with its number of turns
    (``repeat`` passes in all; a call costs microseconds against milliseconds of
    extraction per session, so the timing is not disturbed).
    """
    extractor = extractor or OfflineExtractor()
    turns = sum(len(s.messages) for s in sessions)
    best = float("inf")
    found: list[Candidate] = []
    sources: dict[str, set[str]] = {}
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        found, sources = [], {}
        for session in sessions:
            got = extractor.extract(session.messages, session_time=session.session_time)
            sources.setdefault(session.conversation, set()).update(
                p for c in got for p in c.provenance
            )
            found.extend(got)
            if progress is not None:
                progress(len(session.messages))
        best = min(best, time.perf_counter() - started)
    tok = default_tokenizer()
    raw = sum(tok.count_batch([_raw_text(m) for s in sessions for m in s.messages]))
    memory = sum(tok.count_batch([c.text for c in found]))
    return ExtractBenchResult(
        conversations=len({s.conversation for s in sessions}),
        sessions=len(sessions),
        turns=turns,
        candidates=len(found),
        seconds=round(best, 4),
        turns_per_second=round(turns / best, 1) if best > 0 else float("inf"),
        raw_tokens=raw,
        memory_tokens=memory,
        size_ratio=round(memory / raw, 3) if raw else 0.0,
        by_type=dict(Counter(c.memory_type for c in found)),
        turns_with_memory=round(sum(map(len, sources.values())) / turns, 3) if turns else 0.0,
        evidence_coverage=_coverage(evidence, sources, sessions),
    )


def _coverage(
    evidence: Mapping[str, Sequence[str]] | None,
    sources: Mapping[str, set[str]],
    sessions: Sequence[Session],
) -> float | None:
    if not evidence:
        return None
    known = {(s.conversation, str(m.metadata.get("dia_id"))) for s in sessions for m in s.messages}
    cited = [(conv, i) for conv, ids in evidence.items() for i in ids if (conv, i) in known]
    if not cited:
        return None
    return round(sum(i in sources.get(conv, ()) for conv, i in cited) / len(cited), 3)
