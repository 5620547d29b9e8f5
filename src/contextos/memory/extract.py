"""Extraction: new conversation turns in, candidate memories out.

A raw turn ("Wow! I went to a LGBTQ support group yesterday and it was so
powerful.") is a poor memory: it carries chit-chat, a pronoun and a relative
date that mean nothing a month later. The extractor keeps the facts, attributed
to their speaker and pinned in time ("Caroline went to a LGBTQ support group
on 7 May 2023 and it was so powerful."), drops greetings and thanks, merges
near-duplicates and remembers which turn each fact came from.

:class:`OfflineExtractor` does this with precompiled regular expressions only,
fast enough to run on every turn. An LLM-backed extractor implements the same
:class:`Extractor` protocol. Candidates are then reconciled against what is
already stored (:mod:`contextos.memory.reconcile`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import numpy as np

from contextos.text import sentences as S
from contextos.text.claims import INSTRUCTION_OPENER, LANGUAGES
from contextos.text.temporal import (
    TimeMention,
    is_recurring,
    parse_session_time,
    resolve,
    rewrite,
)

from ..embed import Embedder
from ..types import MemoryType, Message
from .ingest import MAX_TEXT_CHARS
from .render import caption_of


@dataclass(frozen=True)
class Candidate:
    """A memory proposed by extraction, before reconciliation decides its fate.

    ``provenance`` holds the ids of the turns it came from (LoCoMo's ``dia_id``
    or the message's ``id``); ``event_time`` is when the event happened, when
    the text says or implies it; ``said_at`` is when its turn was said (None when
    unknown): the fact holds from then at the latest, whatever later date its text
    names (``reconcile.valid_since``); ``confidence`` is in [0, 1]. ``extracted_by`` names
    what proposed it (:data:`OFFLINE_EXTRACTOR_ID`, or an LLM prompt's id such as
    ``extract@1``); the record it becomes keeps it as ``metadata["extracted_by"]``, so
    facts made by an old prompt, or by the offline fallback, can be found later.
    """

    text: str
    memory_type: MemoryType
    event_time: datetime | None = None
    provenance: tuple[str, ...] = ()
    speaker: str | None = None
    entities: tuple[str, ...] = ()
    confidence: float = 0.5
    extracted_by: str | None = None
    said_at: datetime | None = None


#: The most entities a fact keeps in its metadata (``metadata["entities"]``), the first
#: ones of its candidate; each at most :data:`MAX_ENTITY_CHARS` characters (a longer one
#: is left out, not cut: a cut name is another name). Why: a message naming 8,000 people
#: stored one fact with 104 KB of names, past the metadata limit, and its user's export
#: could not be imported again (a review, s58). The names stay in the fact's text.
MAX_ENTITIES = 32
MAX_ENTITY_CHARS = 100


def stored_entities(entities: Sequence[str]) -> list[str]:
    """What a fact keeps of its candidate's ``entities``: the first
    :data:`MAX_ENTITIES` of those at most :data:`MAX_ENTITY_CHARS` characters long."""
    return [e for e in entities if len(e) <= MAX_ENTITY_CHARS][:MAX_ENTITIES]


#: ``Candidate.extracted_by`` of the rule-based extractor's candidates.
OFFLINE_EXTRACTOR_ID = "offline"


@runtime_checkable
class Extractor(Protocol):
    """Turns new conversation turns into candidate memories."""

    def extract(
        self, turns: Sequence[Message], *, session_time: datetime | None = None
    ) -> list[Candidate]:
        """Candidates from ``turns``; ``session_time`` anchors relative dates."""
        ...


#: A rule or a preference for how the assistant answers. Capitals are matched as capitals
#: (``(?-i:...)``), and "answer in X" only where it starts a clause (an imperative). Why:
#: under IGNORECASE, ``[A-Z]`` matched any letter, so "I talk in my sleep" and "I write in
#: my journal every night" were rules, pinned in every window; "I talk in French with my
#: grandmother", the user's habit, was one too (a review, s45).
_PROCEDURAL = re.compile(
    r"^(?:please\s+)?(?:always|never|don't\s+ever|do\s+not|don't|make\s+sure\s+to|remember\s+to)"
    r"\s+(?:answer|reply|respond|write|use|call\s+me|speak|talk\s+to\s+me|mention|include|"
    r"format|explain|address\s+me|sign|add|start|end|cite|show)\b"
    r"|\bfrom\s+now\s+on\b|\b(?:I|we)\s+(?:would\s+|'d\s+)?prefer\b|\bI'd\s+(?:rather|prefer)\b"
    r"|\bmy\s+preference\b|\bcall\s+me\s+(?-i:[A-Z])|\bplease\s+(?:always|never)\b"
    r"|(?:^|[,;:]\s*)(?:(?:please|kindly|and|so|just|also|only|always)\s+)*"
    r"(?:answer|reply|respond|write|talk|speak)\s+(?:(?:to\s+)?me\s+)?(?:only\s+)?"
    r"in\s+(?-i:[A-Z])[a-z]+\b",
    re.IGNORECASE,
)
#: What may open an instruction before its verb: "please", "and", "from now on", ...
#: (one list with the claim reader's, :data:`~contextos.text.claims.INSTRUCTION_OPENER`).
_LEAD = rf"^(?:{INSTRUCTION_OPENER}[\s,]+)*"
#: Words that say an instruction is about the assistant's answers: the replies
#: themselves, their format, style or language (the claim reader's languages,
#: :data:`~contextos.text.claims.LANGUAGES`). (Not "my", not "you": a friend is told
#: "never give up on your dreams".)
_ABOUT_REPLIES = (
    r"\b(?:answers?|repl(?:y|ies)|responses?|messages?|emojis?|emoticons|jargon|slang"
    r"|markdown|bullet(?:\s+points?)?|json|yaml|tables?|headings?|headers|code\s+blocks?"
    r"|metric|imperial|units|spelling|celsius|fahrenheit|tone|formal(?:ly)?|informal(?:ly)?"
    r"|exclamation\s+marks?|abbreviations|(?:full\s+)?sentences|paragraphs?|(?:short|long)er"
    r"|(?:British|American)\s+English|python|javascript|typescript|java|rust|golang|sql"
    rf"|{'|'.join(sorted(LANGUAGES))})\b"
)
#: The object of a verb of answering, when it is about the answers: the reply word
#: right after the verb, past "me", "in", "with", an article or a few words of degree
#: ("Use bullet points", "Write in British English", "Don't give me long answers",
#: "Write code in Python"), and ending there (not "Use the French press", "Write a SQL
#: query": a noun after it is what the verb governs).
_GOVERNED = (
    r"(?:\s+(?:me|to\s+me|us|in|into|with|using|as|your|the|any|a|an|all|more|less|fewer"
    r"|so|too|many|much|only|short|long|plain|simple|full|proper|some|no|code)\b){0,4}"
    rf"\s*{_ABOUT_REPLIES}"
    rf"(?=\s*(?:$|[.,;:!?)\-]|{_ABOUT_REPLIES}|(?:in|with|for|when|from|only|anymore|any\s+more"
    r"|please|again|instead|and|or|as|at\s+all|ever|unless|except|to|if|so|because|at)\b))"
)
#: "... in/to your answers" later in the clause ("Never mention the weather in your
#: replies").
_IN_YOUR_REPLIES = (
    r"\b[^.!?,;]*\b(?:in|to|from|of|for)\s+(?:all\s+|any\s+of\s+)?your\s+"
    r"(?:answers|replies|responses|messages)\b"
)
#: A request for this once ("Use a table for this one", "Answer in French this time"):
#: a task, no rule.
_ONCE = re.compile(
    r"\b(?:for\s+(?:this|that|the\s+next)\s+(?:one|time|question|answer|reply|email|task|essay"
    r"|post|message|letter|project|part)|this\s+time|for\s+now|(?:just\s+)?(?:this\s+)?once"
    r"|here(?!\s+on)|right\s+now)\b",
    re.IGNORECASE,
)
_NOT_EVER = r"(?:don't(?:\s+ever)?|do\s+not|never|always|only|stop|quit)"
_ANSWERING = (
    r"(?:use|using|writ(?:e|ing)|answer|repl(?:y|ying)|respond|talk|speak|giv(?:e|ing)|add"
    r"|includ(?:e|ing)|list|format|mention|explain|show|correct|put|offer|end|start|sign)\w*"
)
#: A sentence-initial instruction to the assistant on how it answers from now on: with
#: no subject, a verb of answering, writing or acting for the user, after don't, never,
#: always, only, stop or avoid, or bare; each governs the words that make it about the
#: answers (:data:`_GOVERNED`, :data:`_IN_YOUR_REPLIES`), or is one of a few forms that
#: are ("Be concise", "Talk to me like a pirate", "Keep it short", "Stop suggesting ...");
#: none asks for this once (:data:`_ONCE`). Narrow on purpose: a chat between friends tells
#: the other "Take care!", "Keep it up!", "Never give up, the answers will come",
#: "Use the French press", and a user asks for tasks ("Write a function in Python that
#: ...", "Give me a list of 10 French words"), none of them a rule to pin in every window
#: (a review, s45: each was one, the reply word anywhere later in the sentence).
_INSTRUCTION = re.compile(
    _LEAD
    + "(?:"
    + "|".join(
        (
            # a negated or standing form of a verb that always concerns the answers
            rf"(?:{_NOT_EVER}|avoid)\s+(?:suggest|recommend|apologi[sz]|translat|summari[sz]"
            r"|swear|curs)\w*\b",
            # ... of a verb that does when its object does
            rf"(?:{_NOT_EVER}|avoid)\s+{_ANSWERING}\b(?:{_GOVERNED}|{_IN_YOUR_REPLIES})",
            # ... of a verb done for the user, "me" and more ("Never book me flights on X")
            rf"{_NOT_EVER}\s+(?:book|send|remind|ask|email|text|notify|wake|call|sign\s+up)\w*"
            r"\s+me\s+\w",
            # a bare verb of answering or formatting, about the answers ("give me a call": no)
            rf"(?:use|write|answer|reply|respond|format|avoid)\b{_GOVERNED}",
            rf"(?:use|write|answer|reply|respond|format|add|include|mention){_IN_YOUR_REPLIES}",
            r"give\s+me\s+(?:the\s+|your\s+|all\s+)?(?:answers?|repl(?:y|ies)|responses?)"
            rf"\s+(?:in|as|with|using)\b{_GOVERNED}",
            r"(?:address|refer\s+to)\s+me\s+as\b",
            r"(?:talk|speak|write|answer|reply|respond)\s+(?:to\s+)?me\s+(?:like|as|in|with"
            r"|using|only|more|less)\b",
            r"keep\s+(?:it|them)\s+(?:very\s+|really\s+)?(?:short|brief|concise|under"
            r"|to\s+the\s+point)\b",
            r"(?:keep|make)\s+(?:your\s+|the\s+)?(?:answers|replies|responses|explanations)\s+"
            r"(?:very\s+|really\s+|more\s+|less\s+)?(?:short|brief|concise|simple|casual|formal"
            r"|professional|under|to\s+the\s+point|detailed|shorter|longer|simpler)\b",
            r"be\s+(?:more\s+|less\s+|very\s+|extra\s+|a\s+bit\s+(?:more\s+)?|always\s+)?"
            r"(?:concise|brief|succinct|terse|formal|informal|polite|direct|blunt|specific"
            r"|detailed|thorough|precise|professional|technical)\b",
        )
    )
    + ")",
    re.IGNORECASE,
)
#: A request to forget ("Forget what I said about Tokyo"): a command for ``forget``, not
#: a memory (stored, it was a fact "Forget what user said about Tokyo": a review, s45).
_FORGET_REQUEST = re.compile(
    _LEAD + r"(?:forget|disregard|ignore)\s+(?:what|everything|all|that|about|the\s+thing)\b",
    re.IGNORECASE,
)
#: A question that tells a fact of the speaker's in its clause: "Did I tell you I got
#: promoted?", "Did I mention I'm moving?", "Have I mentioned (to you) that my sister
#: lives in Tokyo?", "Did I tell you about my new job?", "Remember when I told you I was
#: allergic to peanuts?", "Did you know (that) my sister moved?", "Guess what, I ...".
#: The clause is kept (:func:`_question_fact`). Why the forms without "to you": "Did I
#: mention I'm moving to Berlin in July?" was dropped as a question (a review, s45).
_TELLING_QUESTION = re.compile(
    r"^(?:(?:(?:did|have)\s+I\s+(?:ever\s+|already\s+)?"
    r"|(?:do\s+you\s+)?remember\s+(?:when|that|how)\s+I\s+)"
    r"(?:tell|told|mention(?:ed)?)(?:\s+(?:to\s+)?you)?(?:\s+about(?=\s+(?:my|our)\b))?"
    r"|did\s+you\s+(?:know|hear)|(?:guess|you\s+know)\s+what\s*[,:!])"
    r"(?:\s*that)?\s*(?=(?:I|I'm|I've|I'll|I'd|we|we're|we've|my|our)\b)",
    re.IGNORECASE,
)
#: Words a question opens with: an auxiliary put first, a wh-word, or a question's
#: usual short forms ("wanna ...", "any ...", "huh", "right").
_ASKS = (
    r"(?:what|what's|why|how|how's|when|where|who|who's|whom|which|whose|do|does|did|don't"
    r"|doesn't|didn't|is|isn't|are|aren't|was|wasn't|were|can|can't|could|couldn't|would"
    r"|wouldn't|will|won't|should|shall|may|might|have|haven't|has|hasn't|am|any|anyone"
    r"|anything|ever|wanna|want|care|fancy|huh|right|eh|ok|okay|yeah|no|remember|you)\b"
)
_ASKING = re.compile(_ASKS, re.IGNORECASE)
#: A question asked after a statement in one sentence ("I finished another pot - want to
#: see a pic?", "..., how does that sound?"): its separator and the question to the end.
_TAG_QUESTION = re.compile(
    rf"(?:(?<!\s)\s+[-\u2013\u2014]+|[,;:.!])\s+{_ASKS}[^,;:.!?\u2013\u2014]*\?[\s\"')]*$",
    re.IGNORECASE,
)
#: A past told in its own time frame ("When I was 10, I lived in Kenya", "as a kid",
#: "growing up"): no event of the day it was said.
_OWN_FRAME = re.compile(
    r"\b(?:when|while|back\s+when)\s+I\s+was\s+(?:\d{1,2}\b|(?:very\s+)?(?:young|little|younger"
    r"|small|a\s+(?:kid|child|boy|girl|baby|teen(?:ager)?|toddler|student)|in\s+(?:high\s+)?"
    r"(?:school|college|university|kindergarten)|growing\s+up)\b)"
    r"|\bas\s+a\s+(?:kid|child|boy|girl|teen(?:ager)?|toddler)\b|\bgrowing\s+up\b"
    r"|\bin\s+my\s+(?:childhood|youth|teens|twenties|thirties)\b",
    re.IGNORECASE,
)
#: What makes the rest of its clause no event: a wish, a condition, an irreal "as if"
#: ("I wish I had a dog", "If I had time, ..."): a past verb after it did not happen.
_IRREAL = re.compile(r"\b(?:wish(?:es|ed)?|if|unless|as\s+though)\b", re.IGNORECASE)
_CLAUSES = re.compile(r"[^,;.!?]+")
_PAST_EVENT = re.compile(
    r"\bI\s+(?:just\s+|recently\s+|finally\s+|already\s+|also\s+)*(?:\w+ed|went|got|saw|made|took|"
    r"came|gave|found|bought|began|became|left|met|ran|wrote|won|lost|sent|spent|heard|built|"
    r"drove|ate|flew|sang|sold|swam|threw|had)\b|\bI've\s+(?:just\s+)?(?:\w+ed|been|got|gone|"
    r"made|taken|seen|started|begun)\b|\bwe\s+(?:just\s+)?(?:\w+ed|went|got|saw|made|took|had)\b",
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})
_CAPTION = re.compile(r"^(?:a\s+)?(?:photo|picture|image|photograph)\s+of\s+", re.IGNORECASE)
_TURN_ID_KEYS = ("dia_id", "turn_id", "id", "message_id")
_SPEAKER_KEYS = ("speaker", "name", "user")
_TIME_KEYS = ("session_time", "date_time", "event_time", "timestamp", "time")
#: How a caption may be inlined into a turn's text (as contextos's LoCoMo replay does).
#: (Tried only where a run of white space starts, ``(?<!\s)``: at each of its characters,
#: a turn of 40,000 spaces took 2.2 s, of 100,000 spaces minutes.)
_INLINE_CAPTION = re.compile(
    r"(?<!\s)\s*\[(?:shares|shared) (?:a )?(?:photo|picture|image): ([^\]]+)\]"
)
#: A fence opening a block of code: three or more backticks anywhere (chat apps take
#: "```x = 1```" inside a line too), or tildes at the start of a line (inside one,
#: "yay~~~" is play, not code).
_FENCE = re.compile(r"`{3,}|^[ \t]{0,3}~{3,}", re.MULTILINE)
#: A Python traceback: its header, its indented frames and the exception line after them.
_TRACEBACK = re.compile(
    r"^[ \t]*Traceback \(most recent call last\):[^\n]*(?:\n[ \t][^\n]*)*"
    r"(?:\n[A-Za-z_][\w.]*(?::[^\n]*)?$)?",
    re.MULTILINE,
)
#: A whole line (stripped) that is code or part of a stack trace, not something said:
#: frames, exception lines, imports, definitions, block openers, braces, comments,
#: prompts. Narrow on purpose: a line of prose ("for me in the end:") must not match.
#: Lines longer than :data:`CODE_LINE_CHARS` are never tried.
_CODE_LINE = re.compile(
    r"""
      File\ "[^"]*",\ line\ \d+.*
    | at\ [\w.$<>]+\(.*\)
    | (?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Warning)(?::.*)?
    | import\ [\w.]+(?:\ as\ \w+)?(?:,\ *[\w.]+(?:\ as\ \w+)?)*;?
    | from\ [\w.]+\ import\ .+
    | (?:async\ )?def\ \w+\ *\(.*
    | class\ [A-Z]\w*\ *(?:\(.*\))?\ *:
    | for\ [\w,\ ()]+\ in\ [\w.]+(?:\(.*\))?(?:\[.*\])?:
    | (?:else|try|finally)\ *:
    | except(?:\ [\w.]+(?:\ as\ \w+)?)?\ *:
    | [})\]]+[;,)]*
    | //\ .* | /\*.* | >>>\ .* | \$\ +\S.* | \#include.* | <\?php.*
    | SELECT\ .+\ FROM\ .+
    """,
    re.VERBOSE,
)
#: Lines shaped as code whose shape prose can take too ("Update = I moved to Berlin",
#: "... we live in Oslo (for now);"): assignments, calls, returns, conditions, braces
#: opened, a closing ");". Dropped only when they read as no prose (:data:`_PROSE`).
_CODE_LIKE_LINE = re.compile(
    r"""
      (?:const|let|var|val|auto|final|int|float|double|char|bool|String|string)\ +\w+\ *=.*
    | [A-Za-z_][\w.]*(?:\[.*\])?\ *(?:[-+*/%|&^]|//|\*\*)?=(?!=).*
    | (?:await\ |return\ )?[A-Za-z_][\w.]*\(.*\)\ *[;,]?
    | return(?:\ [\w.]+|\ .*[-+*/<>=()\[\]{}].*)?;?
    | (?:if|elif|while)\ .*(?:[=<>!]=|[<>()\[\]]).*:
    | with\ .*\(.*\).*:
    | .*[)=]\ *\{ | .*\);
    """,
    re.VERBOSE,
)
#: Keywords of code, which do not make a run of words prose ("a if b else c").
_CODE_WORDS = (
    r"(?:if|else|elif|for|while|in|not|and|or|is|lambda|None|True|False|null|true|false|return"
    r"|await|async|new|typeof|instanceof|def|class|import|from|as|with|yield|let|const|var)"
)
#: Prose: three words in a row outside quotes, none of them a keyword of code ("5 apples
#: is what I bought", "I moved to Berlin"). Why: "Update = I moved to Berlin ..." was an
#: assignment, and the line was dropped with its facts (a review, s43).
_PROSE = re.compile(
    rf"(?<![\w.'])(?:(?!{_CODE_WORDS}\b)[A-Za-z]+(?:'[a-z]+)?(?![\w.(\[])\s+){{2}}"
    rf"(?!{_CODE_WORDS}\b)[A-Za-z]+\b(?![.(\[]\w)"
)
#: A quoted string, where words are no prose: not after a letter ("I'm", "Ana's").
_QUOTED = re.compile(r"(?<![A-Za-z])(?:'[^'\n]*'|\"[^\"\n]*\")")
#: Longest line :data:`_CODE_LINE` is tried on (a line of code is short; prose may not be).
CODE_LINE_CHARS = 300


def speaker_of(message: Message) -> str:
    """Who said ``message``: its ``name``, a speaker in its metadata, else its role."""
    if message.name:
        return message.name
    for key in _SPEAKER_KEYS:
        value = message.metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return message.role


#: Prefix of the id a message without one gets for its add: its place among the add's
#: messages. It dates its facts by the message's time, places them after the facts of
#: the messages before it, and indexes a reply's facts with the question before it; it
#: is never kept as provenance (:func:`is_position_id`). Without it, the facts of a plain
#: chat call (role and content only) took the first message's place and no context (a
#: review), and a model was shown list indexes as turn ids and stored them.
POSITION_ID = "§"


def is_position_id(turn_id: str) -> bool:
    """Whether ``turn_id`` is the place ``infer.prepare`` gave a message without an id."""
    return turn_id.startswith(POSITION_ID)


def turn_ids(message: Message) -> tuple[str, ...]:
    """The id of the turn ``message`` came from (dia_id, turn_id, id), as provenance."""
    for key in _TURN_ID_KEYS:
        value = message.metadata.get(key)
        if value is not None and value != "":
            return (str(value),)
    return ()


def _turn_time(message: Message, default: datetime | None) -> datetime | None:
    for key in _TIME_KEYS:
        value = message.metadata.get(key)
        if isinstance(value, (str, datetime)):
            parsed = parse_session_time(value)
            if parsed is not None:
                return parsed
    return default


@dataclass(frozen=True)
class _Context:
    """What one turn's sentences share."""

    speaker: str
    provenance: tuple[str, ...]
    anchor: datetime | None
    names: tuple[str, ...]


class OfflineExtractor:
    """Rule-based extraction: sentence facts, resolved dates, no model.

    ``participants`` are names whose vocative use ("Thanks, Mel!") is noise;
    speakers seen in the turns are added automatically. With an ``embedder``,
    candidates whose vectors are closer than ``embed_threshold`` are merged too.
    ``roles`` are the message roles facts are taken from; assistant messages
    count only when they carry a ``name`` (a person in a multi-party chat), not
    the model's own replies. ``min_confidence``
    trades recall for size: on LoCoMo, 0.6 drops the unattributed opinions
    ("Caroline: Painting is a great outlet") and halves the memory, while
    about 90% of the turns that answer questions still leave a memory.

    Example:
        >>> from datetime import datetime
        >>> msg = Message("user", "I went to a support group yesterday!", name="Caroline")
        >>> OfflineExtractor().extract([msg], session_time=datetime(2023, 5, 8))[0].text
        'Caroline went to a support group on 7 May 2023!'
    """

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        participants: Sequence[str] = (),
        roles: Sequence[str] = ("user", "assistant"),
        lexical_threshold: float = 0.8,
        embed_threshold: float = 0.92,
        captions: bool = True,
        min_confidence: float = 0.0,
    ) -> None:
        if not 0 < lexical_threshold <= 1 or not 0 < embed_threshold <= 1:
            raise ValueError("similarity thresholds must be in (0, 1]")
        self.embedder = embedder
        self.participants = tuple(participants)
        self.roles = frozenset(roles)
        self.lexical_threshold = lexical_threshold
        self.embed_threshold = embed_threshold
        self.captions = captions
        self.min_confidence = min_confidence

    # -- public API --------------------------------------------------------
    def extract(
        self, turns: Sequence[Message], *, session_time: datetime | None = None
    ) -> list[Candidate]:
        """Candidates from ``turns``, near-duplicates merged across the batch."""
        speakers = {speaker_of(t) for t in turns if t.role in self.roles}
        names = set(self.participants) | (speakers - {"user", "assistant"})
        found: list[Candidate] = []
        for turn in turns:
            found.extend(self.extract_turn(turn, session_time=session_time, names=names))
        found = [c for c in found if c.confidence >= self.min_confidence]
        merged = merge_duplicates(found, self.lexical_threshold)
        if self.embedder is not None and len(merged) > 1:
            merged = merge_by_embedding(merged, self.embedder, self.embed_threshold)
        return merged

    def extract_turn(
        self,
        turn: Message,
        *,
        session_time: datetime | None = None,
        names: Sequence[str] | set[str] = (),
    ) -> list[Candidate]:
        """Candidates from one turn (for streaming; no merging across turns)."""
        if turn.role not in self.roles or (turn.role == "assistant" and not turn.name):
            return []  # an unnamed assistant is the model itself: its words are not facts
        speaker = speaker_of(turn)
        ctx = _Context(
            speaker=speaker,
            provenance=turn_ids(turn),
            anchor=_turn_time(turn, session_time),
            names=tuple({speaker, *self.participants, *names} - {"user", "assistant"}),
        )
        text = turn.content.translate(_APOSTROPHES)
        inline = _INLINE_CAPTION.search(text)
        if inline is not None:
            text = _INLINE_CAPTION.sub("", text)
        text = without_code(text)  # before the times are read: offsets are of this text
        mentions = resolve(text, ctx.anchor) if ctx.anchor is not None else []
        out: list[Candidate] = []
        for offset, sentence in S.split_sentences(text):
            inside = [m for m in mentions if offset <= m.span[0] < offset + len(sentence)]
            candidate = self._sentence(sentence, offset, inside, ctx)
            if candidate is not None:
                out.append(candidate)
        caption = caption_of(turn.metadata) or (inline.group(1).strip() if inline else None)
        if caption is not None and self.captions:
            out.append(self._caption(caption, ctx))
        return out

    # -- steps -------------------------------------------------------------
    def _sentence(
        self, sentence: str, offset: int, mentions: list[TimeMention], ctx: _Context
    ) -> Candidate | None:
        # A recurrence ("every Friday") is no mention: ``resolve`` gives it no date.
        core = S.strip_filler(rewrite(sentence, mentions, offset), ctx.names)
        if not core or _FORGET_REQUEST.match(core):
            return None
        asked = S.is_question(core)
        if asked:
            told = _TELLING_QUESTION.match(core) is not None  # a telling: kept as a statement
            if not (core := _question_fact(core)):
                return None
            asked = not told
        instruction = _INSTRUCTION.match(core) is not None and _ONCE.search(core) is None
        if not instruction and not _worth_keeping(core, bool(mentions), ctx.names, asked=asked):
            return None
        text = S.to_third_person(core, ctx.speaker)
        if ctx.speaker not in text:
            text = f"{ctx.speaker}: {text}"
        text = _within_limit(text[0].upper() + text[1:])
        memory_type, event_time = _classify(core, mentions, ctx.anchor, instruction=instruction)
        ents = tuple(S.entities(text)) + tuple(S.numbers(sentence))
        return Candidate(
            text=text,
            memory_type=memory_type,
            event_time=event_time,
            provenance=ctx.provenance,
            speaker=ctx.speaker,
            entities=tuple(dict.fromkeys(ents)),
            confidence=_confidence(core, bool(mentions), ents, ctx.speaker),
            extracted_by=OFFLINE_EXTRACTOR_ID,
            said_at=ctx.anchor,
        )

    def _caption(self, caption: str, ctx: _Context) -> Candidate:
        body = _CAPTION.sub("", caption).rstrip(". ")
        text = f"{ctx.speaker} shared a photo of {body}."
        return Candidate(
            text=text,
            memory_type="episodic",
            event_time=ctx.anchor,
            provenance=ctx.provenance,
            speaker=ctx.speaker,
            entities=tuple(S.entities(text)),
            confidence=0.5,
            extracted_by=OFFLINE_EXTRACTOR_ID,
            said_at=ctx.anchor,
        )


def without_code(text: str) -> str:
    """``text`` without the code in it: fenced blocks (an unclosed fence runs to the end),
    Python tracebacks, and lines that are code (:data:`_CODE_LINE`), each left as a line
    break (a space for a fence inside a line), so the prose around them stays sentences
    of its own.

    Why: a pasted snippet and its traceback became one "semantic" fact per line ("Ana:
    import os", "Ana: NameError: ..."), a comment "# I live in Paris" inside the code was
    rewritten into "Ana lives in Paris", and these were retrieved ahead of real facts (a
    review, s43). Code is not a fact about its speaker."""
    if "`" in text or "~" in text:
        text = _without_fenced(text)
    if "Traceback" in text:
        text = _TRACEBACK.sub("\n", text)
    lines = text.split("\n")
    kept = ["" if is_code_line(line) else line for line in lines]
    return "\n".join(kept) if kept != lines else text


def is_code_line(line: str) -> bool:
    """Whether ``line`` is a line of code (:data:`_CODE_LINE`), or shaped as code and no
    prose (:data:`_CODE_LIKE_LINE`, :data:`_PROSE`). When unsure, not: a fact lost is
    worse than a line of code kept."""
    line = line.strip()
    if len(line) > CODE_LINE_CHARS:
        return False
    if _CODE_LINE.fullmatch(line):
        return True
    return bool(_CODE_LIKE_LINE.fullmatch(line)) and not _PROSE.search(_QUOTED.sub('""', line))


def _without_fenced(text: str) -> str:
    """``text`` with each fenced block (from its fence to the same fence, or to the end)
    replaced by a line break, or by a space when it is inside a line."""
    out: list[str] = []
    pos = 0
    while (opening := _FENCE.search(text, pos)) is not None:
        fence = opening.group().lstrip(" \t")
        close = text.find(fence, opening.end())
        if close < 0:
            return "".join(out) + text[pos : opening.start()] + "\n"
        end = close + len(fence)
        while end < len(text) and text[end] == fence[0]:  # a longer closing fence
            end += 1
        before = text[pos : opening.start()]
        if "\n" in text[opening.start() : end]:
            out.append(before + "\n")
        else:  # inside a line ("I tried ```x``` and ..."): one space for it and its own
            out.append(before.rstrip(" \t") + " ")
            while end < len(text) and text[end] in " \t":
                end += 1
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _within_limit(text: str) -> str:
    """``text`` cut to what a memory holds (``MAX_TEXT_CHARS``), at a space when one is
    near the end. Why: the third person is longer ("I" -> "Ana"), so one sentence of a
    message within the limit became a fact over it (152,379 characters of 100,000),
    stored, and then refused by ``update`` with its own text (a review)."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    cut = text[:MAX_TEXT_CHARS]
    space = cut.rfind(" ", MAX_TEXT_CHARS - 200)
    return cut[:space] if space > 0 else cut


def _question_fact(question: str) -> str:
    """The statement a question holds ("" for none): the clause a telling question tells
    (:data:`_TELLING_QUESTION`: "Did I tell you I got promoted last week?" -> "I got
    promoted last week."), or the statement before a question tagged on to it
    (:data:`_TAG_QUESTION`: "I finished my pot - want to see it?" -> "I finished my
    pot."). A question itself is no fact: stored, "Should I buy a Tesla or a BMW?" was a
    semantic fact "Should user buys a Tesla or a BMW?" (a review, s45)."""
    told = _TELLING_QUESTION.match(question)
    if told is not None:
        return _statement(question[told.end() :])
    if _ASKING.match(question):
        return ""
    tag = _TAG_QUESTION.search(question)
    return _statement(question[: tag.start()]) if tag is not None else ""


def _statement(clause: str) -> str:
    """``clause`` ended as a statement ("I got promoted?" -> "I got promoted.")."""
    clause = clause.rstrip(" ?!,;:\"')")
    return clause + "." if clause else ""


def _worth_keeping(core: str, timed: bool, names: Sequence[str], *, asked: bool = False) -> bool:
    """False for chit-chat: greetings, thanks, praise, questions. What a question held
    (``asked``: :func:`_question_fact`) is kept only with a first person and an anchor."""
    if S.is_question(core) or S.foreign_chitchat(core, names):
        return False
    ignore = {n.lower() for n in names}
    words = S.content_words(core, ignore)
    first_person = S.has_first_person(core)
    named = [e for e in S.entities(core) if not S.is_name_of(e, names)]
    has_anchor = timed or bool(S.numbers(core)) or bool(named)
    if asked:
        return first_person and has_anchor and len(words) >= 2
    if has_anchor:
        return True
    if not first_person and (S.has_second_person(core) or (S.is_reaction(core) and len(words) < 3)):
        return False  # praise for the listener, reactions: "you're so kind", "sounds fun!"
    return len(words) >= 2 or (first_person and len(words) >= 1)


def _classify(
    core: str, mentions: list[TimeMention], anchor: datetime | None, *, instruction: bool = False
) -> tuple[MemoryType, datetime | None]:
    """The type of the fact ``core`` states and when it happened: a rule (an instruction
    to the assistant, :data:`_INSTRUCTION`, or a preference); an event at its first time
    mention, or at ``anchor`` when it is told in the past; else a semantic fact with no
    time, as are a habit (:func:`~contextos.text.temporal.is_recurring`), a past in its
    own time frame (:data:`_OWN_FRAME`) and a wish or condition (:data:`_IRREAL`)."""
    if instruction or (_PROCEDURAL.search(core) and _ONCE.search(core) is None):
        return "procedural", None
    if mentions:
        return "episodic", mentions[0].start
    if is_recurring(core) or _OWN_FRAME.search(core):
        return "semantic", None
    if _tells_past_event(core):
        return "episodic", anchor
    return "semantic", None


def _tells_past_event(core: str) -> bool:
    """Whether a clause of ``core`` tells what the speaker did (:data:`_PAST_EVENT`), not
    after a wish or a condition in it (:data:`_IRREAL`: "I wish I had a dog")."""
    for clause in _CLAUSES.finditer(core):
        past = _PAST_EVENT.search(core, clause.start(), clause.end())
        if past is not None and _IRREAL.search(core, clause.start(), past.start()) is None:
            return True
    return False


def _confidence(core: str, timed: bool, ents: tuple[str, ...], speaker: str) -> float:
    score = 0.55
    score += 0.15 if S.has_first_person(core) else 0.0
    score += 0.1 if timed else 0.0
    score += 0.1 if any(e != speaker for e in ents) else 0.0
    return round(min(score, 0.95), 2)


# -- merging near-duplicates ----------------------------------------------------
def _merge(first: Candidate, later: Candidate) -> Candidate:
    """One candidate from two near-duplicates: the longer text, both sources in order,
    said when the first of them was."""
    base = later if len(later.text) > len(first.text) else first
    said = [c.said_at for c in (first, later) if c.said_at is not None]
    return replace(
        base,
        provenance=tuple(dict.fromkeys(first.provenance + later.provenance)),
        entities=tuple(dict.fromkeys(base.entities + first.entities + later.entities)),
        confidence=max(first.confidence, later.confidence),
        event_time=base.event_time or first.event_time or later.event_time,
        said_at=_earliest(said),
    )


def _earliest(times: Sequence[datetime]) -> datetime | None:
    """The earliest of ``times`` (None for none); a naive time is taken as UTC to be
    compared with an aware one, and kept as given."""
    if not times:
        return None
    return min(times, key=lambda t: t if t.tzinfo else t.replace(tzinfo=UTC))


def occasion(candidate: Candidate) -> str:
    """The day an event happened (``YYYY-MM-DD`` of an episodic candidate's
    ``event_time``), "" for a candidate of another type or with no time.

    Why: one event told on two days is two events ("I visited my mom in Lyon" on 2 and
    9 March), not near-duplicates: merged, or dropped as already known, the second
    visit left no record and no date (a review)."""
    when = candidate.event_time
    return when.date().isoformat() if candidate.memory_type == "episodic" and when else ""


def _tokens(candidate: Candidate) -> frozenset[str]:
    """Content words keyed by speaker and, for an event, its day (:func:`occasion`), so
    different speakers, and events of different days, never look alike."""
    speaker = candidate.speaker or ""
    key = f"{speaker}\x00{occasion(candidate)}"
    words = S.content_words(candidate.text, {speaker.lower()})
    return frozenset(f"{key}\x00{w}" for w in words)


def merge_duplicates(candidates: Sequence[Candidate], threshold: float = 0.8) -> list[Candidate]:
    """Merge candidates of one speaker (and, for events, one day: :func:`occasion`) whose
    content words overlap by ``threshold`` (Jaccard).

    Each candidate is merged into the earlier kept one it overlaps most (the first of
    equals): the merges of comparing each with every kept one before it, found
    without that, by the filters of all-pairs similarity joins (PPJoin). With words
    ordered rarest first:

    * prefix: two sets with Jaccard >= t share a word of their prefixes (a set's first
      ``|s| - ceil(t|s|) + 1`` words), so a kept set is listed under its prefix's words
      only and a candidate looks up its own prefix's;
    * length: a set of size ``n`` reaches t only with sets of ``t*n`` to ``n/t`` words;
    * position: met first at the ``i``-th word of one and the ``j``-th of the other, two
      sets share at most ``min(|x| - i, |y| - j)`` words, which must reach the overlap
      that t needs (``t/(1+t) * (|x| + |y|)``). A word's list is kept by (size,
      position), so a whole group fails or passes at once.

    Why: an index of every word put every candidate in the list of a common word
    ("yesterday"), and each was compared with all before it: 8,000 turns took 14 s and
    10^5 lines never finished (a review). Templated lines ("I adopted a cat named Tom1
    yesterday", one rare word each) still defeated the prefix alone.
    """
    rarity = _word_rarity(candidates)
    kept: list[Candidate] = []
    token_sets: list[frozenset[str]] = []
    listed: list[set[tuple[str, int, int]]] = []  # where each kept set is listed
    index: dict[str, dict[tuple[int, int], list[int]]] = {}
    for cand in candidates:
        toks = _tokens(cand)
        found = _candidates(_ordered(toks, rarity), index, threshold)
        match = _best_overlap(toks, found, token_sets, threshold)
        if match is None:
            match = len(kept)
            kept.append(cand)
            token_sets.append(toks)
            listed.append(set())
        else:
            kept[match] = _merge(kept[match], cand)
            token_sets[match] = token_sets[match] | toks
        ordered = _ordered(token_sets[match], rarity)
        for pos, tok in enumerate(ordered[: _prefix_length(len(ordered), threshold)]):
            if (tok, len(ordered), pos) not in listed[match]:  # a grown set anew
                listed[match].add((tok, len(ordered), pos))
                index.setdefault(tok, {}).setdefault((len(ordered), pos), []).append(match)
    return kept


def _word_rarity(candidates: Sequence[Candidate]) -> dict[str, tuple[int, str]]:
    """Each word's sort key for :func:`_ordered`: how many candidates hold it, then itself."""
    counts: Counter[str] = Counter()
    for cand in candidates:
        counts.update(_tokens(cand))
    return {tok: (n, tok) for tok, n in counts.items()}


def _ordered(toks: frozenset[str], rarity: Mapping[str, tuple[int, str]]) -> list[str]:
    return sorted(toks, key=rarity.__getitem__)


def _prefix_length(size: int, threshold: float) -> int:
    """``size - ceil(t*size) + 1`` (rounded so that float error never shortens it: a
    shorter prefix could miss a pair)."""
    return max(size - math.ceil(round(threshold * size, 9)) + 1, 0)


def _candidates(
    ordered: Sequence[str],
    index: Mapping[str, Mapping[tuple[int, int], Sequence[int]]],
    threshold: float,
) -> set[int]:
    """The kept sets that may overlap ``ordered`` by ``threshold`` (a superset of those
    that do; see :func:`merge_duplicates`). Each bound errs wide by 1e-9, never narrow."""
    size = len(ordered)
    found: set[int] = set()
    for i, tok in enumerate(ordered[: _prefix_length(size, threshold)]):
        for (other, j), ids in index.get(tok, {}).items():
            if min(size, other) < threshold * max(size, other) - 1e-9:
                continue  # the sizes alone keep them apart
            needed = math.ceil(threshold / (1 + threshold) * (size + other) - 1e-9)
            if min(size - i, other - j) >= needed:
                found.update(ids)
    return found


def _best_overlap(
    toks: frozenset[str],
    found: set[int],
    token_sets: Sequence[frozenset[str]],
    threshold: float,
) -> int | None:
    """Of the kept sets ``found``, the one with the highest Jaccard overlap with
    ``toks`` at least ``threshold`` (the first of equals); None if none."""
    if not toks:
        return None
    best, best_score = None, threshold
    for i in sorted(found):
        n = len(toks & token_sets[i])
        score = n / (len(toks) + len(token_sets[i]) - n)
        if score >= best_score and (best is None or score > best_score):
            best, best_score = i, score
    return best


#: Cells of the similarity matrix :func:`merge_by_embedding` holds at once (16 MB of
#: float32; all of it up to 2,000 candidates).
SIMILARITY_CELLS = 4_000_000


def merge_by_embedding(
    candidates: Sequence[Candidate], embedder: Embedder, threshold: float = 0.92
) -> list[Candidate]:
    """Merge candidates of one speaker (and, for events, one day: :func:`occasion`) whose
    embeddings' cosine similarity is >= ``threshold``.

    The similarities are taken a block of rows at a time (:data:`SIMILARITY_CELLS`),
    in the same row-major order: the whole N x N matrix was 40 GB for 10^5 candidates.
    The time is still quadratic (every pair is compared).
    """
    vectors = embedder.embed([c.text for c in candidates])
    parent = list(range(len(candidates)))
    rows_at_once = max(1, SIMILARITY_CELLS // max(len(candidates), 1))
    for start in range(0, len(candidates), rows_at_once):
        block = vectors[start : start + rows_at_once] @ vectors.T
        # Only pairs i < j (the upper triangle): column j > row i = start + r.
        rows, cols = np.nonzero(np.triu(block, k=start + 1) >= threshold)
        for r, j in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            a, b = candidates[i], candidates[j]
            if a.speaker == b.speaker and occasion(a) == occasion(b) and parent[j] == j:
                parent[j] = parent[i]
    merged: dict[int, Candidate] = {}
    for i, cand in enumerate(candidates):
        root = parent[i]
        merged[root] = _merge(merged[root], cand) if root in merged else cand
    return [merged[k] for k in sorted(merged)]
