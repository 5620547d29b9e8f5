"""LLM-backed extraction: the same :class:`~contextos.memory.extract.Extractor` protocol,
with a model writing the facts (prompt ``extract@2``: each turn a JSON object on its
line, so a turn's text cannot write lines of other turns; ``extract@1`` wrote them as
``[id] speaker: text``, and a newline in a text forged turns with other ids and
speakers: a review, s58).

A model writes better facts than rules do, but it can answer with something
that is not the JSON asked for, with facts no memory can hold (longer than
``MAX_TEXT_CHARS``, holding a NUL, dated outside years 1-9999 in UTC), or stop
at its output limit (:class:`~contextos.errors.ReplyTruncated`). Then the turns
of that request go through the offline extractor instead (or a ProviderError is
raised, if asked), so a bad reply never loses a turn's facts.

The turns go to the model in chunks (:data:`EXTRACT_CHUNK_TOKENS` of conversation
each, fewer if the model's window is smaller), one request per chunk, and the
facts come back in turn order. Provenance is checked against the turns actually
sent in that request, and a fact's speaker is its source turn's.

Relative dates are the model's to resolve, against the "Session time" of its request:
each turn's own time (as the offline extractor reads it, ``metadata["event_time"]`` and
the like, else the call's ``session_time``). A chunk holds the turns of one day only, so
its session time is every turn's: their time when they share it, else their day.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from contextos.llm.prompts import EXTRACT_V2, Prompt, as_data, speaker_label
from contextos.llm.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY, Tokenizer, default_tokenizer
from contextos.text import sentences as S
from contextos.text.temporal import parse_session_time

from ..engine.message_text import lone_surrogate_at
from ..errors import ConfigError, ProviderError, ReplyTruncated
from ..llm import LLM, parse_json_reply, schema_errors
from ..text.claims import starts_with_name
from ..times import opt_utc
from ..types import Message
from .extract import Candidate, Extractor, OfflineExtractor, _turn_time, speaker_of, turn_ids
from .ingest import MAX_TEXT_CHARS
from .render import CAPTION_KEYS, caption_of

log = logging.getLogger(__name__)

#: Tokens of conversation (the turns' lines; the prompt's own text comes on top) sent in
#: one extraction request. Why 800: the reply has to fit the model's output cap, 2,048
#: tokens in the shipped clients, and the facts' JSON is longer than the turns it comes
#: from: on the 128 LoCoMo sessions, the offline extractor's facts (one per sentence) as
#: JSON of the prompt's schema came to 1.6 times the turns' tokens (median), 2.06 at
#: most (cl100k counts); 800 x 2.06 is 1,650, which
#: leaves room for a tokenizer that counts a fifth more than cl100k does (Claude's). A
#: median LoCoMo session (720 tokens) is one request. A larger cap: pass ``chunk_tokens``.
EXTRACT_CHUNK_TOKENS = 800

#: Share of the window (less the output cap) a request fills at most: counts are the
#: offline cl100k tokenizer's, estimates for models that count more (Claude).
WINDOW_SHARE = 0.8


@dataclass(frozen=True)
class ChunkLine:
    """One line of the conversation sent: a turn (or a part of a long one) and its text;
    ``when`` is the turn's time as the prompt writes it (``"unknown"`` without one), and
    ``day`` its date there (a chunk holds one day's lines)."""

    turn: Message
    tid: str
    speaker: str
    text: str
    tokens: int
    when: str = "unknown"
    day: str = "unknown"


def anchor_of(turn: Message, session_time: datetime | None) -> tuple[str, str]:
    """The time ``turn`` was said as the prompt writes it, and its date: the turn's own
    (the offline extractor's ``_turn_time``: ``metadata["event_time"]`` and the like),
    else ``session_time``; ``("unknown", "unknown")`` when neither gives one.

    Why: a model told the add's time (now, for an import) dated "yesterday" of a turn
    said in 2023 as yesterday (a review, s41); each turn's relative dates are its own."""
    when = _turn_time(turn, session_time)
    if when is None:
        return "unknown", "unknown"
    return when.isoformat(sep=" ", timespec="minutes"), when.date().isoformat()


def session_time_of(chunk: Sequence[ChunkLine]) -> str:
    """The "Session time" of a request: its turns' time when they share one, else their
    day (a chunk holds one day's turns: :meth:`LLMExtractor.chunks`)."""
    times = {line.when for line in chunk}
    return chunk[0].when if len(times) == 1 else chunk[0].day


def model_text(text: str) -> str:
    """``text``, written by a model for a memory, if a memory can hold it: at most
    ``MAX_TEXT_CHARS`` characters, no NUL (no store keeps one) and no lone surrogate
    (no store can encode one); else ValueError, which the callers treat as an invalid
    reply (the fallback runs).

    Why: ``add`` and ``update`` refuse such a text from the caller, but a model's went
    straight to the store, which stored a 5 MB fact or raised out of ``add``. A lone
    surrogate comes from a model that writes ``\\ud83c`` (half an emoji) in its JSON:
    Python's parser takes it, and the content hash then raised UnicodeEncodeError out of
    ``add``, losing the add's facts (a review, s36)."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"a fact of {len(text):,} characters (at most {MAX_TEXT_CHARS:,})")
    if "\x00" in text:
        raise ValueError("a fact holds a NUL character")
    at = lone_surrogate_at(text)
    if at is not None:
        raise ValueError(f"a fact holds a lone surrogate {text[at]!r} (not valid Unicode)")
    return text


class LLMExtractor:
    """Extraction by ``llm``; ``fallback`` (offline by default) when its reply is unusable."""

    def __init__(
        self,
        llm: LLM,
        *,
        prompt: Prompt = EXTRACT_V2,
        fallback: Extractor | None = None,
        on_invalid: Literal["fallback", "raise"] = "fallback",
        confidence: float = 0.8,
        chunk_tokens: int = EXTRACT_CHUNK_TOKENS,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if on_invalid not in ("fallback", "raise"):
            raise ValueError(f"on_invalid must be fallback or raise, not {on_invalid!r}")
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, not {chunk_tokens}")
        self.llm = llm
        self.prompt = prompt
        self.fallback = fallback or OfflineExtractor()
        self.on_invalid = on_invalid
        self.confidence = confidence
        #: Most tokens of conversation per request (:data:`EXTRACT_CHUNK_TOKENS`).
        self.chunk_tokens = chunk_tokens
        self.tokenizer: Tokenizer = tokenizer or default_tokenizer()

    def extract(
        self, turns: Sequence[Message], *, session_time: datetime | None = None
    ) -> list[Candidate]:
        """Candidates from ``turns``, written by the model: one request per chunk of
        turns (:meth:`chunks`), the facts in turn order. Relative dates are read from
        each turn's own time, else ``session_time`` (:func:`anchor_of`).

        A chunk whose reply is invalid or cut (ReplyTruncated) goes through the fallback
        extractor (``on_invalid="fallback"``) or raises ProviderError (``"raise"``; a
        cut reply raises its ReplyTruncated); the other chunks keep the model's facts."""
        if not turns:
            return []
        out: list[Candidate] = []
        for chunk in self.chunks(turns, session_time):
            conversation = "\n".join(line.text for line in chunk)
            user = self.prompt.render(
                session_time=session_time_of(chunk), conversation=conversation
            )
            ids = [line.tid for line in chunk]
            speakers = [line.speaker for line in chunk]
            try:
                reply = self.llm.complete(
                    self.prompt.system, [Message("user", user)], json_schema=self.prompt.schema
                )
                out += self._candidates(reply, ids, speakers)
                continue
            except ReplyTruncated as exc:
                if self.on_invalid == "raise":
                    raise
                problem = str(exc)
            except ValueError as exc:
                if self.on_invalid == "raise":
                    raise ProviderError(f"invalid extraction reply from the model: {exc}") from None
                problem = str(exc)
            log.warning(
                "invalid extraction reply (%s); using the fallback extractor for %d turn(s)",
                problem,
                len(chunk),
            )
            sent = [line.turn for line in chunk]
            out += self.fallback.extract(sent, session_time=session_time)
        return out

    def chunk_limit(self, session_time: str = "unknown") -> int:
        """The most tokens of conversation one request carries: ``chunk_tokens``, or less
        when the model's window (less its output cap and the prompt's own tokens, with a
        share kept spare: :data:`WINDOW_SHARE`) holds less.

        The model is the LLM's ``model`` attribute (the shipped clients have one), looked
        up by :func:`contextos.engine.context.model_info` (an unknown id gets its assumed
        window); its output cap is the LLM's ``max_tokens``, else the model's default
        output reserve. An LLM without a model name is bounded by ``chunk_tokens`` only.

        Raises:
            ConfigError: the window cannot hold the prompt and the output cap at all.
        """
        model = getattr(self.llm, "model", None)
        if not isinstance(model, str) or not model:
            return self.chunk_tokens
        from contextos.engine.context import model_info

        info = model_info(model)
        cap = getattr(self.llm, "max_tokens", None)
        reserve = cap if isinstance(cap, int) and cap > 0 else info.default_output_reserve()
        schema = json.dumps(dict(self.prompt.schema or {}))
        own = (
            self.tokenizer.count(self.prompt.system)
            + self.tokenizer.count(self.prompt.render(session_time=session_time, conversation=""))
            + self.tokenizer.count(schema)
            + 2 * TOKENS_PER_MESSAGE
            + TOKENS_PER_REPLY
        )
        room = int((info.context_window - reserve) * WINDOW_SHARE) - own
        if room < 1:
            raise ConfigError(
                f"model {model}'s context window of {info.context_window:,} tokens cannot "
                f"hold the extraction prompt ({own:,} tokens) and its output cap of "
                f"{reserve:,}: lower the LLM's max_tokens"
            )
        return min(self.chunk_tokens, room)

    def chunks(
        self, turns: Sequence[Message], session_time: datetime | None = None
    ) -> list[list[ChunkLine]]:
        """``turns`` as the lines of each request: whole turns, in order, packed up to
        :meth:`chunk_limit` tokens, a new request where the turns' day changes (each
        turn's time, else ``session_time``: :func:`anchor_of`); a turn longer than that
        alone is split into parts (each at a sentence or word end where one is near,
        each with the turn's id and speaker, the photo caption on the first), and a log
        line says so."""
        count = self.tokenizer.count
        anchors = [anchor_of(turn, session_time) for turn in turns]
        limit = self.chunk_limit(
            max(dict.fromkeys(w for w, _ in anchors), key=count, default="unknown")
        )
        lines: list[ChunkLine] = []
        for i, (turn, (when, day)) in enumerate(zip(turns, anchors, strict=True)):
            tid = (turn_ids(turn) or (str(i),))[0]
            speaker = speaker_of(turn)
            caption = caption_of(turn.metadata)
            shared = f" [shares a photo: {caption}]" if caption else ""
            text = self.line(tid, speaker, turn.content + shared)
            tokens = count(text) + 1  # and its newline
            if tokens <= limit:
                lines.append(ChunkLine(turn, tid, speaker, text, tokens, when, day))
                continue
            head = self.line(tid, speaker, "")
            room = max(1, limit - count(head) - count(shared) - 1)
            # Each piece counted as the prompt writes it: escaped as JSON under extract@2,
            # a piece of control characters or backslashes was up to 3x its raw count
            # (a 300-token limit sent an 864-token line: diff review s58, D5).
            # A turn of whitespace alone splits into nothing: sent as its one blank
            # piece, not whole (20,000 tabs were one 20,018-token line; a review, s58).
            pieces = split_text(turn.content, room, self.sent_count) or [""]
            log.info(  # the id as repr writes it: a newline in it forged a log record
                "extraction: turn %r (%s tokens) is longer than a request's %s tokens of "
                "conversation: sent in %d parts",
                tid,
                f"{tokens:,}",
                f"{limit:,}",
                len(pieces),
            )
            plain = {k: v for k, v in turn.metadata.items() if k not in CAPTION_KEYS}
            for n, piece in enumerate(pieces):
                part = replace(turn, content=piece, metadata=turn.metadata if n == 0 else plain)
                part_text = self.line(tid, speaker, piece + (shared if n == 0 else ""))
                tokens = count(part_text) + 1
                lines.append(ChunkLine(part, tid, speaker, part_text, tokens, when, day))
        chunks: list[list[ChunkLine]] = []
        size = 0
        for line in lines:
            if chunks and size + line.tokens <= limit and line.day == chunks[-1][0].day:
                chunks[-1].append(line)
                size += line.tokens
            else:
                chunks.append([line])
                size = line.tokens
        return chunks

    def sent_count(self, text: str) -> int:
        """Tokens of ``text`` as a line of the prompt carries it: JSON-escaped under a
        prompt whose data is JSON (its quotes counted again: a token may join a quote to
        the text beside it), else as it is."""
        if self.prompt.data == "json":
            return self.tokenizer.count(as_data(text))
        return self.tokenizer.count(text)

    def line(self, tid: str, speaker: str, text: str) -> str:
        """One turn (or part of one) as the prompt writes it: a JSON object with its id,
        speaker and text (``extract@2``, :attr:`Prompt.data` ``"json"``), else
        ``[id] speaker: text`` (``extract@1``). The speaker's name as a prompt shows
        names (:func:`~contextos.llm.prompts.speaker_label`)."""
        name = speaker_label(speaker)
        if self.prompt.data == "json":
            return as_data({"id": tid, "speaker": name, "text": text})
        return f"[{tid}] {name}: {text}"

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
            # Aware, in UTC (as the store returns it); ValueError outside years 1-9999.
            # Only checked, a naive time went back to the caller of ``add`` (a review).
            when = opt_utc(parse_session_time(fact.get("date")), "date")
            source = fact.get("source")
            provenance = (source,) if source in ids else tuple(dict.fromkeys(ids))
            speaker = speakers[ids.index(source)] if source in ids else named_first(text, speakers)
            out.append(
                Candidate(
                    text=text,
                    memory_type=fact["type"],
                    event_time=when,
                    provenance=provenance,
                    speaker=speaker,
                    entities=tuple(dict.fromkeys(S.entities(text) + S.numbers(text))),
                    confidence=self.confidence,
                    extracted_by=self.prompt.id,
                )
            )
        return out


def named_first(text: str, speakers: Sequence[str]) -> str | None:
    """The speaker ``text`` starts with (a whole name, the longest: "Anna lives in Rome"
    is Anna's, not Ann's), None when it names none first.

    Only for a fact whose source turn is unknown: one whose source is known is its
    turn's speaker's. Why: a prefix test gave "Anna lives in Rome" to Ann, and the
    reconciler closed Ann's "lives in Paris" with it (a review, s41)."""
    names = sorted(dict.fromkeys(speakers), key=len, reverse=True)
    return next((s for s in names if starts_with_name(text, s)), None)


_BREAKS = ("\n", ". ", "! ", "? ", "; ", ", ", " ")


def split_text(text: str, max_tokens: int, count: Any) -> list[str]:
    """``text`` in consecutive pieces of at most ``max_tokens`` tokens by ``count`` (one
    piece may hold a single character over it, when one character is that long), each
    ending at a line, sentence, clause or word end in its second half when there is one.
    Whitespace at a cut is dropped; nothing else is.

    Example:
        >>> split_text("One two. Three four.", 3, lambda t: len(t.split()))
        ['One two.', 'Three four.']
    """
    pieces: list[str] = []
    rest = text.strip()
    total = count(rest)
    step = max(1, len(rest) * max_tokens // max(total, 1))  # characters per piece, about
    while rest:
        if len(rest) <= step and count(rest) <= max_tokens:
            pieces.append(rest)
            break
        end = min(len(rest), step)
        while end > 1 and count(rest[:end]) > max_tokens:
            end = max(1, end * 9 // 10)
        cut = end
        for mark in _BREAKS:
            at = rest.rfind(mark, end // 2, end)
            if at > 0:
                cut = at + len(mark)
                break
        piece, rest = rest[:cut].strip(), rest[cut:].strip()
        if piece:
            pieces.append(piece)
    return pieces
