"""LLM-backed extraction: the same :class:`~contextos.memory.extract.Extractor` protocol,
with a model writing the facts (prompt ``extract@1``).

A model writes better facts than rules do, but it can answer with something
that is not the JSON asked for, or with facts no memory can hold (longer than
``MAX_TEXT_CHARS``, holding a NUL, dated outside years 1-9999 in UTC). Then the
turns go through the offline extractor instead (or a ProviderError is raised, if
asked), so a bad reply never loses a turn's facts. Provenance is checked against
the turns actually sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from contextos.llm.prompts import EXTRACT_V1, Prompt
from contextos.text import sentences as S
from contextos.text.temporal import parse_session_time

from ..errors import ProviderError
from ..llm import LLM, parse_json_reply, schema_errors
from ..times import opt_utc
from ..types import Message
from .extract import Candidate, Extractor, OfflineExtractor, speaker_of, turn_ids
from .ingest import MAX_TEXT_CHARS
from .render import caption_of

log = logging.getLogger(__name__)


def model_text(text: str) -> str:
    """``text``, written by a model for a memory, if a memory can hold it: at most
    ``MAX_TEXT_CHARS`` characters and no NUL (no store keeps one); else ValueError,
    which the callers treat as an invalid reply (the fallback runs).

    Why: ``add`` and ``update`` refuse such a text from the caller, but a model's went
    straight to the store, which stored a 5 MB fact or raised out of ``add``."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"a fact of {len(text):,} characters (at most {MAX_TEXT_CHARS:,})")
    if "\x00" in text:
        raise ValueError("a fact holds a NUL character")
    return text


class LLMExtractor:
    """Extraction by ``llm``; ``fallback`` (offline by default) when its reply is unusable."""

    def __init__(
        self,
        llm: LLM,
        *,
        prompt: Prompt = EXTRACT_V1,
        fallback: Extractor | None = None,
        on_invalid: Literal["fallback", "raise"] = "fallback",
        confidence: float = 0.8,
    ) -> None:
        if on_invalid not in ("fallback", "raise"):
            raise ValueError(f"on_invalid must be fallback or raise, not {on_invalid!r}")
        self.llm = llm
        self.prompt = prompt
        self.fallback = fallback or OfflineExtractor()
        self.on_invalid = on_invalid
        self.confidence = confidence

    def extract(
        self, turns: Sequence[Message], *, session_time: datetime | None = None
    ) -> list[Candidate]:
        """Candidates from ``turns``, written by the model."""
        if not turns:
            return []
        lines, ids, speakers = [], [], []
        for i, turn in enumerate(turns):
            tid = (turn_ids(turn) or (str(i),))[0]
            ids.append(tid)
            speakers.append(speaker_of(turn))
            caption = caption_of(turn.metadata)
            shared = f" [shares a photo: {caption}]" if caption else ""
            lines.append(f"[{tid}] {speakers[-1]}: {turn.content}{shared}")
        when = session_time.isoformat(sep=" ", timespec="minutes") if session_time else "unknown"
        user = self.prompt.render(session_time=when, conversation="\n".join(lines))
        reply = self.llm.complete(
            self.prompt.system, [Message("user", user)], json_schema=self.prompt.schema
        )
        try:
            return self._candidates(reply, ids, speakers)
        except ValueError as exc:
            if self.on_invalid == "raise":
                raise ProviderError(f"invalid extraction reply from the model: {exc}") from None
            log.warning("invalid extraction reply (%s); using the fallback extractor", exc)
            return self.fallback.extract(turns, session_time=session_time)

    def _candidates(
        self, reply: str, ids: Sequence[str], speakers: Sequence[str]
    ) -> list[Candidate]:
        data: Any = parse_json_reply(reply)
        errors = schema_errors(data, self.prompt.schema or {})
        if errors:
            raise ValueError("; ".join(errors))
        out = []
        for fact in data["facts"]:
            text = model_text(fact["text"].strip())
            if not text:
                continue
            when = parse_session_time(fact.get("date"))
            opt_utc(when, "date")  # ValueError outside years 1-9999 in UTC
            source = fact.get("source")
            provenance = (source,) if source in ids else tuple(dict.fromkeys(ids))
            speaker = next((s for s in dict.fromkeys(speakers) if text.startswith(s)), None)
            out.append(
                Candidate(
                    text=text,
                    memory_type=fact["type"],
                    event_time=when,
                    provenance=provenance,
                    speaker=speaker,
                    entities=tuple(dict.fromkeys(S.entities(text) + S.numbers(text))),
                    confidence=self.confidence,
                )
            )
        return out
