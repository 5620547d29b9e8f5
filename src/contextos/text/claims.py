"""Reading simple claims out of memory text: who, which attribute, what value, negated or not.

Reconciliation needs to see that "Ann lives in Berlin" replaces "Ann lives in
Paris" while "Ann likes Paris" does not, and that "Ann no longer lives in
Paris" ends the old fact. A handful of attribute patterns (where someone lives,
works, their job, age, partner, counts of kids and pets, "X's favourite Y is
Z") and a negation detector cover the common cases; anything else falls back to
lexical similarity.

Rules and preferences hold one value at a time too (``_RULES``): the language to
answer in ("answer in French"), the name to call someone ("call me Bob"), and a
preference for a kind of thing, named by its head noun ("prefers short answers" vs
"prefers long, detailed answers"), or between two things named both ("prefers tea
to coffee"). "Prefers tea" alone names no kind: whether "prefers coffee" replaces
it cannot be told from the words, and neither is taken for a claim.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from contextos.text.canonical import canonical
from contextos.text.sentences import STOPWORDS, word_set, words
from contextos.text.text_cache import TextCache

#: Words that carry no claim. Narrower than STOPWORDS: "likes" vs "hates" must differ.
_FUNCTION_WORDS = word_set(
    """a an the and or but of in on at to for from by with about as into over than then so
    is are was were be been being am do does did has have had will would can could should
    i me my you your he him his she her it its we us our they them their this that these those
    there here just really also very too still now"""
)

_VALUE = r"(?P<v>[\w'&. -]+?)"
#: Where a value ends: punctuation, or a word that starts what is said about it ("and",
#: "since"), or a preposition ("as", "from") that starts the detail beside it. Why the
#: prepositions: "works at Google as an engineer" held the value "google as engineer",
#: and "I no longer work at Google" (value "google") never ended it: both stayed open (a
#: review, s43).
_END_WORDS = r"and|with|since|for|because|but|now|anymore|any\s+more|these\s+days|again|after"
_END_WORDS += r"|before|when|while|until|as|from"
_END = rf"(?=\s*(?:[,.;!?:()\u2013\u2014-]|$|\s+(?:{_END_WORDS})\b))"
#: ... and a place ("in", "on", "at", "by", "near") ends a value that is a proper name
#: ("Google in Zurich", "Paris near my parents") or a job ("a nurse at the hospital"),
#: not a common noun, which it tells apart: "an apartment in Brooklyn" and "an apartment
#: in Queens" are two homes, and read as one ("apartment") the move closed neither (a
#: review, s43). "Stoke on Trent" is read as "stoke", in the claim and its negation alike.
_END_AT_PLACE = rf"(?=\s*(?:[,.;!?:()\u2013\u2014-]|$|\s+(?:{_END_WORDS}|near|by|at|on|in)\b))"
#: Not a claim of what holds now: "used to work at", "was living in" (a past, told live,
#: ended the current value: see ``_SLOTS``). Fixed width, as a look-behind must be.
_NOT_NOW = r"(?<!\bused\sto\s)(?<!\bwas\s)(?<!\bwere\s)"
_NUMWORD = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|no)"
#: Slot, pattern ending its value at :data:`_END`, the same ending it at a place too
#: (:data:`_END_AT_PLACE`): :func:`_claim` takes the second for a proper name or a job.
_SLOTS: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (
        slot,
        re.compile(pattern + _END, re.IGNORECASE),
        re.compile(pattern + _END_AT_PLACE, re.IGNORECASE),
    )
    for slot, pattern in (
        (
            "location",
            rf"{_NOT_NOW}\b(?:lives|live|living|resides|reside|is\s+based|moved|relocated"
            rf"|has\s+moved)\s+(?:back\s+)?(?:in|to)\s+{_VALUE}",
        ),
        # Present tense only, as "lived" is left out of "location": "I worked at IBM in
        # 2012", said in a chat, is a past job, and read as the employer it replaced the
        # current one ("works at Meta" closed, and search answered IBM: a review, s43).
        # The present perfect ("has worked at Meta since March") is the current job.
        (
            "employer",
            rf"{_NOT_NOW}\b(?:works|work|working|(?:has|have|'ve)\s+worked|is\s+employed"
            rf"|has\s+a\s+job)\s+(?:at|for)\s+{_VALUE}",
        ),
        ("job", rf"{_NOT_NOW}\b(?:works|work|working)\s+as\s+(?:an?\s+)?{_VALUE}"),
        ("job", rf"\b(?:job|occupation|profession)\s+is\s+(?:an?\s+)?{_VALUE}"),
        ("age", rf"\bis\s+{_VALUE}\s+years?\s+old"),
        ("partner", rf"\bis\s+(?:married|engaged)\s+to\s+{_VALUE}"),
        ("partner", rf"\bis\s+(?:dating|seeing)\s+{_VALUE}"),
        ("count:kids", rf"\bhas\s+(?P<v>{_NUMWORD})\s+(?:kids|children|sons|daughters)"),
        ("count:pets", rf"\bhas\s+(?P<v>{_NUMWORD})\s+(?:dogs|cats|pets)"),
        # "Ann's dog is called (named, known as) Max": the attribute "Ann's dog's name is
        # Max" is, "dog name" (the value a proper name, :func:`_claim`). Not plain "is":
        # read as the name, "My sister's name is Ana" then "My sister is a nurse" closed
        # the name (a review, s49); "is called to the bar", "is known as a good boy",
        # "is named after my dad" name no one, and are read as "Ann's dog is Z" below.
        ("name", rf"\b(?P<o>\w+)'s\s+(?P<k>\w+)\s+is\s+(?:called|named|known\s+as)\s+{_VALUE}"),
        # "Ann's dog is Max" ("ann dog"), "Ann's dog's name is Max" ("dog name").
        ("attr", rf"\b(?P<o>\w+)'s\s+(?P<k>(?:favou?rite\s+)?\w+)\s+is\s+{_VALUE}"),
    )
)
_NEGATION = re.compile(
    r"\b(?:no\s+longer|not\s+anymore|not|never|doesn't|does\s+not|don't|do\s+not|isn't|"
    r"wasn't|didn't|did\s+not|aren't|stopped|quit|moved\s+(?:out|away)\s+(?:of|from)|left)\b"
    r"|\banymore\b|\bany\s+more\b",
    re.IGNORECASE,
)
_NEG_REPAIR = (
    (re.compile(r"\b(?:doesn't|does\s+not)\s+(\w+)", re.IGNORECASE), r"\1s"),
    (re.compile(r"\b(?:isn't|is\s+not|is\s+no\s+longer)\b", re.IGNORECASE), "is"),
    (re.compile(r"\bno\s+longer\s+(\w+)", re.IGNORECASE), r"\1"),
    (re.compile(r"\bmoved\s+(?:out|away)\s+(?:of|from)\b", re.IGNORECASE), "lives in"),
    (
        re.compile(
            r"\b(?:quit|left)\s+(?:\w+'s\s+|her\s+|his\s+|their\s+)?(?:job\s+)?at\b", re.IGNORECASE
        ),
        "works at",
    ),
    (re.compile(r"\s*\b(?:anymore|any\s+more)\b", re.IGNORECASE), ""),
)
#: Languages an answer can be asked in: the language slot needs one, so "reply in
#: short sentences" or "write in Markdown" is no language to replace "answer in French".
LANGUAGES = word_set(
    """arabic bengali bulgarian cantonese catalan chinese croatian czech danish dutch english
    esperanto estonian farsi filipino finnish french german greek hebrew hindi hungarian
    icelandic indonesian irish italian japanese korean latin latvian lithuanian malay mandarin
    norwegian persian polish portuguese punjabi romanian russian serbian slovak slovenian
    spanish swahili swedish tagalog tamil thai turkish ukrainian urdu vietnamese welsh"""
)
#: How long an answer is asked to be, as a manner ("answer briefly", "reply in detail")
#: and as a kind ("keep it short", "be concise", "give me detailed answers").
_LENGTH_MANNER = (
    r"briefly|concisely|succinctly|shortly|in\s+(?:more\s+|full\s+|great\s+)?detail"
    r"|in\s+depth|at\s+length|in\s+full|thoroughly"
)
_LENGTH_KIND = (
    r"short|shorter|brief|briefer|concise|succinct|long|longer|detailed|thorough|in-depth"
)
#: After an answer length: no word that makes it one task's ("reply briefly to the
#: landlord", "give me short answers about the trip").
_NOT_A_TASK = r"(?!\s+(?:to|with|about|when|while|before|after|on|for|if|unless|until)\b)"
#: Where a bare "be brief" or "keep it short" must end to be a rule: the clause's end,
#: or only "please", "from now on", "in your answers", "when you answer" after it.
_RULE_END = (
    r"(?=\s*(?:[.!;)]|$|,?\s*(?:please|pls|thanks|thank\s+you|from\s+now\s+on"
    r"|going\s+forward|in\s+(?:the\s+)?future|in\s+(?:your|all|all\s+your)\s+"
    r"(?:answers|replies|responses)|when\s+you\s+(?:answer|reply|respond))\b))"
)
#: Words that are no modifier or head of a preferred thing ("prefers coffee now",
#: "prefers to walk", "prefers his coffee black"): where the thing ends, or no thing.
_NOT_THING = (
    r"(?:now|nowadays|these|from|anymore|again|instead|please|to|than|over|rather|in|for|when"
    r"|at|on|with|because|but|and|or|if|as|so|too|also|very|much|more|really|still|always"
    r"|usually|my|your|his|her|its|our|their|it|them|this|that|those)\b"
)
#: What may open an instruction before its verb ("please", "pls", "and", "from now on",
#: "in the future", ...): one list for the extractor, which types the instruction a rule
#: (:mod:`contextos.memory.extract`), and for the claim read from it here. Why one: in
#: two copies they disagreed, so "Pls answer in Spanish" was a rule with no language
#: read from it and did not replace "Always answer in English" (a review, s45).
INSTRUCTION_OPENER = (
    r"(?:please|pls|plz|kindly|and|so|also|just|now|then|from\s+now\s+on|going\s+forward"
    r"|in\s+(?:the\s+)?future|for\s+(?:all\s+)?future\s+(?:answers|replies))"
)
#: Where an answer's language is asked for: the verb opens a clause (an imperative:
#: "Always answer in English", "User: please reply in French", "From now on, speak in
#: German") or follows "you (should|to) ..." or "wants|prefers"; the span the claim is
#: read from starts at the verb (group ``w``), so a "never" before it still negates it.
#: Why: "<speaker> answers in Spanish when User's mom calls", the user's own habit, was
#: read as the rule and closed "Always answer in English" (a review, s45). At most six
#: openers: a match may start at every comma, and a run of them read whole from each
#: (", please, " 5,000 times) took time quadratic in its length (20 KB: 8 s, a review).
_ADDRESSED = (
    rf"(?:(?:^|[,;:.!?(])\s*(?:(?:{INSTRUCTION_OPENER}|always|only|never|ever|don't|do\s+not)"
    r"[\s,]+){0,6}"
    r"|\byou\s+(?:to|should|must|shall|will|can|could|would)\s+(?:always\s+|only\s+)?"
    r"|\b(?:wants?|prefers?|likes?|would\s+like|'d\s+like)\s+(?:the\s+|your\s+|all\s+)?)"
)
#: Rules and preferences (see the module docstring): slot, pattern. Matched on the text
#: as written, each negated only by a negation in its own clause ("Always answer in
#: English, never in French" asks for English).
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (slot, re.compile(pattern, re.IGNORECASE))
    for slot, pattern in (
        (
            "language",
            rf"{_ADDRESSED}(?P<w>(?:answer|repl(?:y|ies)|respond|write|speak|talk)"
            r"(?:\s+(?:to\s+[\w']+|me|us|back|only))?|(?:answers|replies|responses))"
            r"\s+(?:only\s+)?in\s+(?:[\w-]+\s+)?"
            rf"(?P<v>{'|'.join(sorted(LANGUAGES))})\b",
        ),
        (
            # "Stop answering in French", "please stop using French": the language's end
            # (``stop``: negated). Why: read as nothing, it left "Always answer in French"
            # current beside it, and a window pinned both (a review, s45).
            "language",
            rf"{_ADDRESSED}(?P<w>(?P<stop>stop|quit)\s+(?:answering|replying|responding|writing"
            r"|speaking|talking|using)(?:\s+(?:to\s+me|me))?)\s+(?:only\s+)?(?:in\s+)?"
            rf"(?P<v>{'|'.join(sorted(LANGUAGES))})\b",
        ),
        # How long an answer should be, asked of the assistant: one value with the kind
        # "prefers short answers" names (``prefers:answer``), so "Please answer in detail"
        # replaces "Keep your answers short" and "Be brief" (both were pinned: a review).
        # Read only where nothing after it makes it a task of the day ("reply briefly to
        # the landlord", "be thorough with the tax forms", "make it shorter before Friday":
        # each replaced the user's rule, a review): a manner or a kind of answer not
        # followed by whom, what or when; "be"/"keep it" only at the clause's end.
        (
            "prefers:answer",
            rf"{_ADDRESSED}(?P<w>(?:answer|repl(?:y|ies)|respond|write|explain)"
            r"(?:\s+(?:to\s+me|me|things))?)\s+(?:(?:more|very|really|much)\s+){0,3}"
            rf"(?P<v>{_LENGTH_MANNER})\b{_NOT_A_TASK}",
        ),
        (
            "prefers:answer",
            rf"{_ADDRESSED}(?P<w>keep\s+(?:(?:your|the|all|all\s+your)\s+)?"
            r"(?:answers?|repl(?:y|ies)|responses?|it)"
            r"|make\s+(?:(?:your|the|all|all\s+your)\s+)?(?:answers|replies|responses)|be)"
            rf"\s+(?:(?:more|very|really|much)\s+){{0,3}}(?P<v>{_LENGTH_KIND})\b{_RULE_END}",
        ),
        (
            "prefers:answer",
            # (``<s>``: me, or the speaker as the extractor writes it: "give Ana")
            rf"{_ADDRESSED}(?P<w>give\s+(?P<s>me|[\w'-]+))\s+"
            r"(?:(?:more|very|really|much)\s+){0,3}"
            rf"(?P<v>{_LENGTH_KIND})\s+(?:answers|replies|responses|explanations)\b{_NOT_A_TASK}",
        ),
        # "call me Bob", as the extractor writes it: "Call Ana Bob" (``<s>``: me or the speaker).
        ("address", r"\bcall\s+(?P<s>me|[\w'-]+(?:\s+[\w'-]+)?)\s+(?P<v>(?-i:[A-ZÀ-ÖØ-Þ])[\w'-]*)"),
        (
            "prefers",  # between two things: "prefers tea to coffee"
            rf"\bprefers?\s+(?!{_NOT_THING})(?P<v>[\w-]+)\s+(?:over|to|rather\s+than"
            rf"|instead\s+of)\s+(?!{_NOT_THING})(?P<o>[\w-]+)\b",
        ),
        (
            "prefers",  # a kind of thing: "prefers long, detailed answers"
            rf"\bprefers?\s+(?:(?:the|a|an)\s+)?(?P<v>(?:(?!{_NOT_THING})[\w-]+,?\s+"
            rf"(?:(?:and|or)\s+)?){{1,3}}?)(?!{_NOT_THING})(?P<k>[\w-]+)"
            rf"(?=\s*(?:[,.;!?:()]|$)|\s+{_NOT_THING})",
        ),
    )
)
_CLAUSE_BREAK = re.compile(r"[,;:.!?()\u2013\u2014]")
_POSSESSIVE = re.compile(r"'s\b")
#: The one or two words a text starts with (letters first, any script); a name when
#: capitalised (:func:`_leading_name`). Not ``[A-Z]``: "Łukasz lives in Rome", said by
#: Łuk, was read as Łuk's claim, his name being the only one found.
#: Combining marks (an accent written apart, NFD): inside a word, as in :func:`_is_word_char`.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_LEADING_WORDS = re.compile(rf"^\s*([^\W\d_][\w'{_MARKS}-]*)(?:(\s+)([^\W\d_][\w'{_MARKS}-]*))?")


@dataclass(frozen=True)
class Claim:
    """``subject``'s ``slot`` is ``value`` (or, when ``negated``, is not); ``said`` is the
    part of the text that says so ("living in Lisbon"), affirmed when negated."""

    subject: str
    slot: str
    value: str
    negated: bool
    said: str = ""


def starts_with_name(text: str, name: str) -> bool:
    """True when ``text`` starts with ``name`` as a whole name: not followed by a letter,
    digit or mark of the same word, nor by a hyphen joining one ("Ann" does not start
    "Anna lives in Rome", "Anné" or "Ann-Marie called"; it starts "Ann's" and "Ann:").

    Why: a plain prefix test read "Anna lives in Rome", said by Ann, as Ann's own
    claim, and it closed Ann's "lives in Paris" (a review, s41)."""
    if not name or not text.startswith(name):
        return False
    after = text[len(name) : len(name) + 2]
    if after[:1] == "-":
        after = after[1:]
    return not after or not _is_word_char(after[0])


def _is_word_char(char: str) -> bool:
    """A character inside a word: a letter, digit or underscore (as ``\\w``) or a
    combining mark (an accent written apart: "Zoe" + U+0308 is "Zoë", not "Zoe")."""
    return char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")


def subject_of(text: str, speaker: str | None = None) -> str:
    """Who a memory is about: the speaker when named first (a whole name: "Anna" is not
    "Ann", :func:`starts_with_name`), else its leading name ("Ann's" for "Ann's sister
    lives in Rome": not Ann, whose place it does not say). In NFC: "Zoë" written with
    its accent apart (NFD) is the same subject, not "zoe" (the mark ended the name)."""
    said = text.lstrip()
    if speaker and starts_with_name(said, speaker) and not _POSSESSIVE.match(said, len(speaker)):
        return speaker.lower()
    return canonical(_leading_name(text) or speaker or "").lower()


def told_of(text: str, speaker: str | None = None) -> str:
    """Whom a fact tells of: :func:`subject_of`, read past the speaker's name that the
    extractor puts before what they said of someone else ("Ann: Marco doesn't play
    tennis anymore" tells of Marco, "Ann: Tom lives in Oslo" of Tom, not of Ann).

    Why: read as Ann's, "Ann: Tom lives in Oslo" was ended by Ann's "I don't live in
    Oslo anymore" (a review, s45). (A rule, "Ann: Always answer in English", is read by
    :func:`subject_of`: it is the speaker's.)"""
    if speaker and text[: len(speaker) + 1].lower() == f"{speaker.lower()}:":
        text = text[len(speaker) + 1 :].lstrip()
    return subject_of(text, speaker)


def _leading_name(text: str) -> str | None:
    """The capitalised name ``text`` starts with, of one word or two ("Ann's",
    "Ann Lee", "Łukasz"); None when it starts with no capitalised word."""
    m = _LEADING_WORDS.match(text)
    if m is None or not m.group(1)[0].isupper():
        return None
    second = m.group(3)
    return m.group(1) + m.group(2) + second if second and second[0].isupper() else m.group(1)


def is_negated(text: str) -> bool:
    """True when the text denies or ends something ("no longer", "doesn't", "quit")."""
    return _NEGATION.search(text) is not None


def affirm(text: str) -> str:
    """The positive form of a negated claim ("no longer lives in Paris" -> "lives in Paris")."""
    for pattern, repl in _NEG_REPAIR:
        text = pattern.sub(repl, text)
    return re.sub(r"\b(?:not|never)\s+", "", text, flags=re.IGNORECASE)


def _is_proper(value: str) -> bool:
    """Whether ``value``, past an article, starts with a capital ("the Louvre", "Paris";
    not "an apartment", "a hospital")."""
    named = [w for w in value.split() if w.lower() not in ("a", "an", "the")]
    return bool(named) and named[0][0].isupper()


def _norm_value(value: str) -> str:
    words = [w for w in value.lower().split() if w not in ("a", "an", "the")]
    return " ".join(words[:4]).strip(" .'")


#: Entries of each cache of a ``claim_memo()`` block (a block is one ``reconcile`` call).
MEMO_SIZE = 8192


@dataclass(frozen=True)
class _Memo:
    claims: TextCache[Claim | None]
    stems: TextCache[frozenset[str]]


_MEMO: ContextVar[_Memo | None] = ContextVar("contextos_claims_memo", default=None)


@contextmanager
def claim_memo() -> Iterator[None]:
    """Inside the block (or the function it decorates), ``claim`` and ``stem_tokens``
    reuse what they computed for a text; nothing is kept once it ends.

    Why: ``reconcile`` parses each stored record once per candidate and each fact it
    has not written yet once per later candidate (quadratic in the batch without a
    cache). A process-wide cache, as there was, kept those texts as keys, and its
    values are the texts' words anyway (``stem_tokens``): an erased memory's words
    stayed in every server process, shared by all tenants, and each entry was as large
    as its text. Scoped to the call, the parses are reused where the repeats are and
    are gone when it returns; only parses that recurred across calls are lost (~7 us
    for a short fact). Blocks nest (the outer one's cache serves) and are per thread.
    """
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set(_Memo(TextCache(MEMO_SIZE), TextCache(MEMO_SIZE)))
    try:
        yield
    finally:
        _MEMO.reset(token)


def claim(text: str, speaker: str | None = None) -> Claim | None:
    """The attribute claim in ``text``, if one of the known patterns matches (reused
    inside a ``claim_memo()`` block)."""
    memo = _MEMO.get()
    if memo is None:
        return _claim(text, speaker)
    return memo.claims.get(text, speaker, lambda: _claim(text, speaker))


def _claim(text: str, speaker: str | None) -> Claim | None:
    # As the library compares texts (``canonical``): composed (NFC), "Bogotá" typed on
    # macOS arrives decomposed, and a value compared by its characters differed from the
    # same city written composed (a review); and a zero-width space in "Zu\u200brich"
    # hid the claim (a review, s58).
    text = canonical(text)
    negated = is_negated(text)
    body = affirm(text) if negated else text
    for slot, pattern, at_place in _SLOTS:
        m = at_place.search(body)
        if m is None:
            continue
        if slot == "name":  # "is called Ana": the key "Ann's sister's name is Ana" has
            if not _is_proper(m.group("v")) or m.group("k").lower() in STOPWORDS:
                continue
            key = f"attr:{m.group('k').lower()} name"
            return Claim(
                told_of(text, speaker), key, _norm_value(m.group("v")), negated, m.group(0)
            )
        if slot != "job" and not _is_proper(m.group("v")):
            m = pattern.search(body, m.start()) or m
        key = slot
        if slot == "attr":  # "Ann's dog's name is Max": the owner is part of the attribute
            attr = m.group("k").lower()
            if attr in STOPWORDS:
                continue
            key = f"attr:{m.group('o').lower()} {attr}"
        value = _norm_value(m.group("v"))
        if value:
            return Claim(told_of(text, speaker), key, value, negated, m.group(0))
    return _rule(text, speaker)


def _rule(text: str, speaker: str | None) -> Claim | None:
    """The rule or preference ``text`` states (``_RULES``), if any."""
    for slot, pattern in _RULES:
        m = pattern.search(text)
        if m is None:
            continue
        groups = m.groupdict()
        subject = subject_of(text, speaker)
        if groups.get("s") is not None:  # "call <s> Bob": only me, the speaker, is addressed
            called = groups["s"].lower()
            if called != "me" and (speaker is None or called != speaker.lower()):
                continue
            subject = speaker.lower() if speaker and called != "me" else subject
        key = slot
        if groups.get("o") is not None:
            key = f"{slot}:{' | '.join(sorted((m.group('v').lower(), m.group('o').lower())))}"
        elif groups.get("k") is not None:
            head = m.group("k").lower()
            key = f"{slot}:{head[:-1] if len(head) > 3 and head.endswith('s') else head}"
        value = " ".join(w for w in words(m.group("v")) if w not in ("and", "or"))
        if value:
            start = m.start("w") if groups.get("w") is not None else m.start()
            negated = groups.get("stop") is not None or _negated_in_clause(text, start, m.end())
            return Claim(subject, key, value, negated, text[start : m.end()])
    return None


def _negated_in_clause(text: str, start: int, end: int) -> bool:
    """Whether the clause holding ``text[start:end]`` negates it: a negation word in the
    clause, outside that span ("Never answer in French", "don't call me Bob anymore";
    not "Always answer in English, never in French")."""
    before = [b.end() for b in _CLAUSE_BREAK.finditer(text, 0, start)]
    after = _CLAUSE_BREAK.search(text, end)
    clause_start = before[-1] if before else 0
    clause_end = after.start() if after else len(text)
    return bool(
        _NEGATION.search(text, clause_start, start) or _NEGATION.search(text, end, clause_end)
    )


def stem_tokens(text: str) -> frozenset[str]:
    """Content words with a crude plural/verb -s stripped, negation words removed
    (reused inside a ``claim_memo()`` block)."""
    memo = _MEMO.get()
    if memo is None:
        return _stem_tokens(text)
    return memo.stems.get(text, None, lambda: _stem_tokens(text))


def _stem_tokens(text: str) -> frozenset[str]:
    out: set[str] = set()
    for w in words(text):
        if w in _FUNCTION_WORDS or _NEGATION.fullmatch(w):
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return frozenset(out)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 for two empty sets.

    Why not 1.0: two texts with no words to compare (emoji, or a script the word
    pattern once missed: every Russian fact of a user after the first was dropped as a
    "near duplicate" of it, a review) are not known to say the same thing."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)
