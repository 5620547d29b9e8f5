"""Sentence-level analysis for the offline extractor, all precompiled regular expressions.

Splitting a turn into sentences, telling facts from chit-chat, rewriting the
first person into the speaker's name ("I went" -> "Caroline went") and
collecting entities and numbers. No model and no downloads: this has to run
on every turn at hundreds of turns per second on two cores.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence

from .canonical import canonical


def word_set(text: str) -> frozenset[str]:
    """A word list written as text, one space between words."""
    return frozenset(text.split())


#: Words a period ends without ending the sentence, whole words only: a sentence ending
#: in "first.", "items." or "piano." is not one ending in "st.", "ms." or "no." (all
#: were joined to the next: "My birthday is on the 21st. I'm planning a party." was one
#: sentence).
_ABBREVIATIONS = word_set("mr. mrs. ms. dr. st. e.g. i.e. vs. etc. jr. sr. prof. mt.")
#: Abbreviations only before a number ("No. 5"): "No. It's mine." is two sentences.
_NUMBER_ABBREVIATIONS = word_set("no.")
#: Abbreviations a lower-case word goes on after, though a capital starts a sentence
#: ("See fig. a", "approx. the same", "I love Jan. a lot"; "I met Jan. He was nice."
#: is two sentences); not a word that also ends one ("the sun.", "a min."). Words with
#: an inner period ("a.m.", "U.S.A.", "Ph.D.") are abbreviations too
#: (:func:`_lower_goes_on`). Why: a lower-case opener split them, and "I'm flying to
#: Rome at 9 a.m. this Friday." was stored as the flight and a fact of its own, "on 4
#: December 2026." (a review, s49).
_LOWER_ABBREVIATIONS = _ABBREVIATIONS | word_set(
    """approx. appr. fig. figs. vol. vols. ca. cf. ch. pp. pg. ver. est. al. dept. jan.
    feb. apr. jun. jul. aug. sep. sept. oct. nov. dec. tue. tues. thu. thur. thurs. fri."""
)
#: The subject pronouns that still start a sentence after a word with an inner period:
#: "I met him at 5 p.m. he was late." is two sentences, "at 9 a.m. this Friday" one.
_PRONOUN_OPENERS = word_set("i we you he she they it")
#: The word a sentence ends in, letters and periods after anything else that is not a
#: letter or digit ("(Dr.", "Wait—Dr.", "...Dr.": "dr."; "21st.": none, its letters
#: follow a digit).
_LAST_WORD = re.compile(r"(?:^|\W)([^\W\d_][\w.]*)$")
#: Line breaks: the line-break alternative of :data:`_SPLIT` (a sentence ends at one,
#: whatever follows), and not the space of a break after a period (see :data:`_GAP`).
_LINE_BREAK = "\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"
#: Between a sentence's end and the next sentence: spaces (no line break), and control
#: and zero-width characters, which are as good as none. Why: "Porto.\x07 My sister's
#: name is Ana." was one sentence (a review, s49).
_INVISIBLE = "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u200b-\u200d\u2060\ufeff"
_GAP = rf"(?:[^\S{_LINE_BREAK}]|[{_INVISIBLE}])+"
#: Lower-case words that open a sentence and do not go on one after an abbreviation:
#: the pronouns, possessive and demonstrative determiners and articles a clause starts
#: with, and the discourse markers and interjections chat opens one with. A lower-case
#: word after a period opens a sentence only when it is one of these: "Dr. smith",
#: "approx. five" and "5 p.m. tomorrow" go on (content words: a period before one is an
#: abbreviation's as often as a sentence's), "i live in porto. my sister's name is ana."
#: is two sentences. (Not "and" and "or": "at 5 p.m. and then" goes on. A word is
#: matched whole, its contraction after it: "i" is also "i'm", "it" "it's".)
_OPENERS = (
    r"i|me|my|we|our|us|you|your|he|his|him|she|her|they|their|them|it"
    r"|its|this|that|these|those|there|here|the|a|an|let's|but|so|also|then|now|anyway|btw"
    r"|oh|ok|okay|yes|yeah|yep|no|nope|well|lol|haha|thanks|hey|hi|hello|sorry|what|why"
    r"|how|when|where|who"
)
#: Where a sentence may end (:func:`split_sentences` decides): ".", "!" or "?" (and
#: closing quotes) before a space (:data:`_GAP`) and a letter or digit; a line break; or
#: "。", "！" or "？", which Chinese and Japanese write with no space after (a paragraph
#: of them was one "sentence"). After the space, a letter that is not lower case (any
#: script: "Óscar", "Łukasz", "Ирина", a digit, a Han character) starts a sentence, and
#: a lower-case one only as an :data:`_OPENERS` word (group ``op``; group ``low`` is the
#: first character of any other word), and not after a closing quote or bracket ('"Hi."
#: she said', group ``close``) or an ellipsis ("work stuff... but the worst was"). Why
#: any script: only "[A-Z0-9]" was, so "I live in Porto. Óscar is my brother's name."
#: and lower-case chat were one fact, and a move closed the brother with the home (a
#: review, s49).
#: (The line-break alternative starts only where a run of white space starts, ``(?<!\s)``:
#: tried at each of its characters, a run of 20,000 spaces took 1.8 s, 90,000 minutes.)
_SPLIT = re.compile(
    rf"(?<=[.!?])(?P<close>[\"')\]\u201d\u2019]*){_GAP}(?=[\"'(\[\u201c\u2018\u00bf\u00a1]?"
    rf"(?:(?P<op>(?:{_OPENERS})\b(?![.-]\w))|(?P<low>[^\W_])))"
    r"|(?<=[。！？])(?![」』）])\s*|(?<=[。！？][」』）])\s*"
    rf"|(?<!\s)\s*[{_LINE_BREAK}]+\s*"
)

STOPWORDS = word_set(
    """
a about above after again against all am an and any are aren't as at be because been before
being below between both but by can can't cannot could couldn't did didn't do does doesn't
doing don't down during each few for from further had hadn't has hasn't have haven't having he
he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if
in into is isn't it it's its itself let's me more most mustn't my myself no nor not of off on
once only or other ought our ours ourselves out over own same shan't she she'd she'll she's
should shouldn't so some such than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've this those through to too under until up very
was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
while who who's whom why why's with won't would wouldn't you you'd you'll you're you've your
yours yourself yourselves just also really still even now then well much many lot lots thing
things stuff kind sort gonna wanna gotta got get gets getting go going went make made way one
ones something anything everything nothing yes yeah yep no nope oh ah wow hey hi hello thanks
thank thx ok okay sure cool great awesome amazing nice good wonderful fantastic sweet lovely
glad happy sounds sound fun totally absolutely definitely true right haha lol omg bye soon
later see talk take care love like know think feel feels felt look looks looking seem seems
mean guess hope bet agree agreed congrats congratulations incredible super pretty exciting
excited interesting beautiful stunning impressive inspiring proud tho though since it'll
that'll there'll gonna 'cause cause anyways yet ever appreciate appreciated lucky ouch rough
dang wish luck cheers brilliant neat wild crazy long time bummer sorry hear heard glad advice
"""
)

# -- another language ------------------------------------------------------------
#: Words of :data:`STOPWORDS` that are also words of their own in the languages the
#: extractor's chat meets most (Spanish, Portuguese, French, Italian, Catalan, German,
#: Dutch, Polish, Czech), or said in any of them (interjections): no sign of English.
_SHARED_WORDS = word_set(
    """
    a i me my mine myself no do to on so he as has by an am in was will also see kind sort
    super cool ok okay wow oh ah hey hi hello haha lol omg yeah yep nope bye sure it
    """
)
#: Words that show a sentence is English: :data:`STOPWORDS` but the shared ones.
_ENGLISH_WORDS = STOPWORDS - _SHARED_WORDS
#: Function words and the commonest verb forms of those languages, none an English word
#: ("son", "die", "hat", "hay", "con", "ai", "os", "com", "mit" left out): a sentence
#: holding one, and no English word (:data:`_ENGLISH_WORDS`), is in another language
#: (:func:`reads_foreign`).
_FOREIGN_WORDS = word_set(
    """
    que el los las del y en es está están estoy estás soy fue muy pero por para una
    unos unas se le les mi mis tu tus su sus nos te voy vas vamos tengo tiene tienen ayer
    hoy mañana también cuando porque
    je il elle nous vous ils elles est au aux des du pas ne ce cette mais très suis sommes
    sont avons avez vais leur c'est j'ai n'est qu'il aujourd'hui hier demain
    eu não uma ao mas muito da dos das você ele ela sou estou vou tenho é foi
    che è non gli della sono ho abbiamo anche perché oggi ieri domani
    der das und ist nicht ich wir ein eine auf für dem sie ihr sind habe heute gestern
    morgen aber oder auch
    het een niet ik wij jij zijn heb
    w się nie jest że jak z czy jestem jesteśmy jsem jsme
    """
)
#: Greetings, thanks and assent in those languages: with :data:`_FOREIGN_WORDS`, what a
#: sentence of chit-chat is made of ("¡Hola!", "Danke schön!", "Claro que sí.").
_FOREIGN_CHITCHAT = word_set(
    """
    hola gracias muchas buenas buenos días dias noches tardes adiós adios claro vale bueno
    genial perfecto sí si dale obrigado obrigada olá ola oi bom boa tchau beleza
    merci beaucoup bonjour bonsoir salut oui bien super d'accord ciao grazie mille prego
    certo perfetto benissimo danke schön bitte hallo tschüss ja nein genau gut toll
    dank bedankt hoi dzięki cześć tak dobrze děkuji ahoj
    """
)
_WORD_OF_ANY_SCRIPT = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def reads_foreign(sentence: str) -> bool:
    """Whether ``sentence`` is in another language than English: it holds a function
    word of another language (:data:`_FOREIGN_WORDS`) or a word of another script than
    Latin, and no English one (:data:`_ENGLISH_WORDS`). A mixed sentence with English
    words in it ("I told her que sí") reads as English.

    Why: the extractor's rewrites are English rules. Applied to other languages they
    made wrong facts: Spanish and French "me", Polish "my" (we) rewritten as the speaker
    ("Mi jefe me dijo ..." said by Lucía stored as "Mi jefe Lucía dijo ...", her boss
    named Lucía), and an English weekday in a Spanish sentence dated by an English tense
    it does not have ("Tengo examen el Friday", a plan, dated the Friday before; a
    review, s55). Such a sentence is left as written: a wrong fact or date is worse than
    none. A capitalised function word before another capitalised word is a name's part,
    no sign of a language ("El Paso", "Los Angeles", "Des Moines", "Da Nang")."""
    words = _WORD_OF_ANY_SCRIPT.findall(sentence.replace("\u2019", "'"))
    lower = [w.lower() for w in words]
    if any(w in _ENGLISH_WORDS for w in lower):
        return False
    return any(
        (w in _FOREIGN_WORDS and not _in_a_name(words, i)) or not w.isascii() and not _latin(w)
        for i, w in enumerate(lower)
    )


def _in_a_name(words: Sequence[str], i: int) -> bool:
    """Whether ``words[i]`` and the word after it are capitalised (a name's parts), in
    a sentence not written in title case ("Mi Jefe Me Dijo Que No" is Spanish)."""
    return (
        words[i][:1].isupper()
        and i + 1 < len(words)
        and words[i + 1][:1].isupper()
        and not all(w[:1].isupper() for w in words)
    )


def foreign_chitchat(sentence: str, names: Collection[str] = ()) -> bool:
    """Whether ``sentence`` is only greetings, thanks or assent in another language
    (:data:`_FOREIGN_CHITCHAT`, function words, the listener's name): "¡Hola, Ana!",
    "Gracias!", "Claro que sí." Why: the English ones were dropped as chit-chat, these
    were stored as facts ("Lucía: Hola!"; a review, s55)."""
    named = {n.lower() for n in names}
    seen = False
    for m in _WORD_OF_ANY_SCRIPT.finditer(sentence.lower().replace("\u2019", "'")):
        word = m.group(0)
        if word in named:
            continue
        if word not in _FOREIGN_CHITCHAT and word not in _FOREIGN_WORDS:
            return False  # most sentences: at their first word
        seen = True
    return seen


def _latin(word: str) -> bool:
    """Whether every letter of ``word`` is a Latin one (accents and all)."""
    return all("LATIN" in unicodedata.name(c, "") for c in word if c.isalpha())


_FILLER_START = re.compile(
    r"^(?:(?:hey|hi|hello|hiya|wow|whoa|oh|ah|aw+|yeah|yes|yep|yup|nope|no|ok|okay|well|so|"
    r"haha+|hah|lol|omg|thanks|thank\s+you|totally|absolutely|definitely|sure|cool|great|"
    r"awesome|nice|man|dude|um+|uh+|hmm+|btw|by\s+the\s+way|anyway|honestly|actually|"
    r"you\s+know|i\s+mean|oh\s+my\s+god|gosh|geez|yay|sweet|true|right|indeed|exactly|"
    r"of\s+course|for\s+sure|aww+)\b[\s,!.;:-]*)+",
    re.IGNORECASE,
)
_QUESTION = re.compile(r"\?[\"')\s]*$")
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|me|my|mine|myself)\b")
#: English words after which "i" starts a clause: conjunctions, question words, time
#: adverbs, and the verbs a clause follows ("i think i moved", "i guess i").
_CLAUSE_OPENERS = (
    r"and|but|so|or|because|cause|cuz|if|when|whenever|while|since|until|till|that|than"
    r"|though|although|before|after|once|where|how|why|what|then|now|today|yesterday"
    r"|tonight|tomorrow|think|thought|guess|hope|know|knew|feel|felt|believe|said|mean"
    r"|wish|bet|swear"
)
#: English words that follow the pronoun "i" (auxiliaries, adverbs, the verbs chat says
#: most), besides a past in "-ed" and a negation in "n't": "i live", "i moved", "i don't".
#: Not "is", "do", "to", "in", ...: "i is an index", Polish "i do domu", "i to wszystko".
_I_VERBS = (
    r"am|was|have|had|can|could|will|would|should|shall|might|must|just|also|really|never"
    r"|always|still|only|even|usually|often|already|actually|think|thought|guess|hope|know"
    r"|knew|feel|felt|believe|mean|want|wanna|need|gotta|gonna|dunno|like|love|hate|live"
    r"|work|prefer|go|went|get|got|see|saw|say|said|make|made|take|took|come|came|leave|left"
    r"|find|found|tell|told|give|gave|buy|bought|meet|met|eat|ate|drink|drive|drove|fly|flew"
    r"|run|ran|read|write|wrote|speak|spoke|play|study|teach|taught|use|own|miss|wish"
    r"|agree|keep|kept|lost|won|began|start|stay|sleep|slept|cook|visit|plan|try|tried"
    r"|hear|heard|bet|swear|forgot|remember|enjoy"
)
#: A lower-case "i" that is the pronoun "I", as typed in chat ("i live in porto"): one
#: that opens the sentence or follows :data:`_CLAUSE_OPENERS`, and has an English verb
#: after it (:data:`_I_VERBS`, "-ed", "n't"); or one with a contraction ("i'm",
#: "i've", "i'd", "i'll"). Only that "i" is rewritten (:func:`capital_i`), not every
#: lone "i" of its sentence. Not after a comma, "(" or ":", nor as "i)" or "i.": "i" is
#: the Italian article ("Mi piacciono i gatti, i cani") and "and" in Catalan, Croatian
#: and Polish ("Ana i Marko žive u Zagrebu, i imaju psa"), a letter or an index ("for
#: each index i, i goes"), a list marker. Why: each of those was rewritten to the
#: speaker, its next word conjugated (a review, s49).
_LOWER_I = re.compile(
    rf"(?:^[\s\"'\u201c\u2018]*|\b(?i:{_CLAUSE_OPENERS})\s+)i"
    rf"(?=\s+(?:(?:{_I_VERBS})\b|[a-z]{{2,}}ed\b|[a-z]+n['\u2019]t\b))"
    r"|\bi(?='(?:m|ve|d|ll)\b)"
)
#: Han and kana, written without spaces between words: each character is a word.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: A word: letters and digits of any script ('&- inside), or one Han or kana character.
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}](?:[^\W_{_CJK}]|['&-])*")
_ASCII_WORD = re.compile(r"[a-z0-9][a-z0-9'&-]*")
_NUMBER = re.compile(
    r"(?<![\w.])[$£€]?\d[\d,]*(?:\.\d+)?(?:%|st|nd|rd|th|k|m)?(?![\w])", re.IGNORECASE
)
_CAPITALISED = re.compile(
    r"\b(?:[A-Z][\w'&.-]*[\w])(?:\s+(?:of\s+|the\s+|de\s+|and\s+)?(?:[A-Z][\w'&.-]*[\w]))*"
)
_NOT_ENTITY = word_set(
    """
I I'm I've I'd I'll The A An My It It's This That These Those There Their They We We're Our He
She His Her You Your Yes No Oh Wow Hey Hi Hello Thanks Thank So And But Or If When What Why How
Where Who Which Well Yeah Yep Haha Lol Omg Ok Okay Sure Cool Great Awesome Nice Also Just Not
Me Let Sounds Love Glad Aw Aww Congrats Congratulations Totally Definitely Absolutely Good
Monday Tuesday Wednesday Thursday Friday Saturday Sunday Anyway Btw Maybe Hope Really Sorry
January February March April May June July August September October November December Since
It'll That'll Gonna Wanna Lots Lot Thank Thanks
"""
)

# -- first person -> speaker ------------------------------------------------
#: Verbs that end in "ly" (any other word that does is taken for an adverb: "I rarely
#: eat", not "Ana rarelies eat").
_LY_VERBS = "apply|reply|rely|supply|comply|imply|multiply|fly|ally|rally|tally|bully"
_SUBJECT = re.compile(
    r"\bI(?P<contr>'m|'ve|'d|'ll)\b|\bI\s+(?P<adv>(?:(?:really|just|also|still|always|never|"
    r"recently|finally|actually|totally|usually|often|even|already|definitely|absolutely|"
    r"sometimes|truly|especially|only|mostly|personally|honestly|now|then|first|kinda|too|"
    r"no\s+longer|no\s+more|once|almost|ever|seldom|soon|"
    rf"(?!(?:{_LY_VERBS})\b)[a-z]{{2,}}ly)"
    r"\s+)*)(?P<verb>[a-z][a-z'-]*)\b|\bI\b"
)
_OBJECT = re.compile(r"\b(?:my|mine|myself|me)\b", re.IGNORECASE)
_SECOND_PERSON = re.compile(
    r"\b(?:you|your|yours|yourself|you're|you've|you'd|you'll)\b", re.IGNORECASE
)
_INVARIANT = word_set(
    """
can could will would should might must shall may did had was went got saw made took came gave
found felt thought told said bought brought began became left met ran read wrote won lost sent
spent kept knew heard held sat stood taught caught paid built drew drove ate fell flew forgot
grew hung hid led let put quit rode rose sang sold shot slept spoke swam threw understood woke
wore set cut hit hurt fed fought forgave chose broke bit blew dug dealt meant lent lit shut
spun stuck struck swept swung tore won't can't couldn't wouldn't shouldn't didn't wasn't hadn't
mustn't and or but too as not never to a an the in on at of for with, from by retook overtook
undertook mistook forgot underwent overcame foresaw withdrew rewrote outgrew overheard
misunderstood upheld withstood began sought fought thought brought bought
"""
)
_IRREGULAR = {
    "am": "is",
    "have": "has",
    "do": "does",
    "don't": "doesn't",
    "haven't": "hasn't",
    "go": "goes",
    "be": "is",
    "was": "was",
    "'m": "is",
    "'ve": "has",
    "'d": "would",
    "'ll": "will",
}


def split_sentences(text: str) -> list[tuple[int, str]]:
    """Sentences of ``text`` with their character offsets (abbreviations kept whole)."""
    out: list[tuple[int, str]] = []
    pos = 0
    for m in _SPLIT.finditer(text):
        letter = m.group("low")
        opener = m.group("op")
        if (letter is not None and letter.islower()) or (
            opener
            and (
                m.group("close")
                or text[m.start() - 2 : m.start()] == ".."
                or _lower_goes_on(text, m.start(), opener)
            )
        ):
            continue  # "Dr. smith", '"Hi." she said', "stuff... but", "9 a.m. this Friday"
        out.append((pos, text[pos : m.start()]))
        pos = m.end()
    out.append((pos, text[pos:]))
    # Merged as [start, end) ranges, each sliced once: a merged sentence re-sliced at
    # each merge was quadratic ("mr. the " * 120000 took 5 s).
    spans: list[list[int]] = []
    for offset, sent in out:
        if spans and _abbreviated(text, spans[-1][0], spans[-1][1], sent):
            spans[-1][1] = offset + len(sent)
        elif sent.strip():
            spans.append([offset, offset + len(sent)])
    return [(start, text[start:end]) for start, end in spans]


def _last_word(text: str, start: int, end: int) -> str | None:
    """The word ``text[start:end]`` ends in, lower case (see :data:`_LAST_WORD`), read in
    its last 16 characters: no abbreviation is longer, and read whole, a word of "a."
    repeated was scanned to its end from every period (quadratic)."""
    while end > start and text[end - 1].isspace():
        end -= 1
    tail = text[max(start, end - 16) : end].rsplit(None, 1)
    found = _LAST_WORD.search(tail[-1]) if tail else None
    return found.group(1).lower() if found else None


def _abbreviated(text: str, start: int, end: int, following: str) -> bool:
    """Whether ``text[start:end]`` ends in an abbreviation, so that ``following`` goes on it."""
    last = _last_word(text, start, end)
    if last is None:
        return False
    if last in _NUMBER_ABBREVIATIONS:
        return following.lstrip()[:1].isdigit()
    return last in _ABBREVIATIONS


def _lower_goes_on(text: str, end: int, opener: str) -> bool:
    """Whether the lower-case ``opener`` after ``text[:end]`` (ending in a period) goes on
    its sentence: after an abbreviation of :data:`_LOWER_ABBREVIATIONS` ("approx. the
    same"), and after a word with an inner period unless it is a subject pronoun ("at 9
    a.m. this Friday", "in the U.S.A. now"; "at 5 p.m. he was late" is two)."""
    if text[end - 1 : end] != ".":
        return False
    last = _last_word(text, max(0, end - 16), end)
    if last is None:
        return False
    if last in _LOWER_ABBREVIATIONS:
        return True
    parts = last[:-1].split(".")
    return len(parts) > 1 and all(0 < len(p) <= 2 for p in parts) and opener not in _PRONOUN_OPENERS


_INTENSIFIER = re.compile(
    r"\b(?:really|super|totally|literally|actually|definitely|absolutely|truly|basically)\s+",
    re.IGNORECASE,
)
#: Pictographs: the emoji blocks (with the regional indicators of flags and the skin
#: tones), Miscellaneous Symbols and Dingbats, and the few emoji elsewhere in the Basic
#: Multilingual Plane that show as emoji by default (⌚ ⏳ ⬛ ⭐ ⭕).
_PICTOGRAPH = (
    "\U0001f000-\U0001faff\u2600-\u27bf\u231a\u231b\u23e9-\u23f3\u23f8-\u23fa"
    "\u2b1b\u2b1c\u2b50\u2b55"
)
#: Symbols that are text unless VARIATION SELECTOR-16 makes them emoji ("©️", "↔️", "▶️").
_TEXT_SYMBOL = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u2328\u23cf\u23ed-\u23ef"
    "\u23f1\u23f2\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2934\u2935\u2b05-\u2b07"
    "\u3030\u303d\u3297\u3299"
)
#: One emoji element: a pictograph, or a text symbol with VS16, then its variation
#: selectors and skin tones and a tag sequence (the flags of England, Scotland, Wales).
_EMOJI_ELEMENT = (
    rf"(?:[{_PICTOGRAPH}]|[{_TEXT_SYMBOL}]\ufe0f)[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]*"
    r"(?:[\U000e0020-\U000e007e]+\U000e007f)?"
)
#: Emoji sequences, each whole: elements joined by ZERO WIDTH JOINER ("👩🏽‍💻", "🏳️‍🌈"),
#: flags (two regional indicators), with the spaces around them. The spaces before are
#: taken only from where they begin (``(?<!\s)``): tried inside a run of them, the scan
#: took time quadratic in its length (40,000 spaces, 37 s).
_EMOJI = re.compile(rf"(?:(?<!\s)\s+)?(?:{_EMOJI_ELEMENT}(?:\u200d(?:{_EMOJI_ELEMENT})?)*)+\s*")
#: A keycap ("1️⃣"): the digit, "#" or "*" it shows is kept, as it is read.
_KEYCAP = re.compile(r"([0-9#*])\ufe0f?\u20e3")
_OPENING = frozenset("([{\"'\u00bf\u00a1\u201c\u2018")


def _drop_emoji(m: re.Match[str]) -> str:
    """One space where an emoji sequence stood between two words ("coffee☕️time"),
    nothing at either end of the text, after an opening bracket or before punctuation."""
    text, start, end = m.string, m.start(), m.end()
    if start == 0 or end == len(text) or text[start - 1] in _OPENING:
        return ""
    return (
        "" if unicodedata.category(text[end]).startswith("P") and text[end] not in _OPENING else " "
    )


def strip_emoji(text: str) -> str:
    """``text`` without emoji, each sequence removed whole with its joiners, variation
    selectors, skin tones, flags and tags; a keycap ("1️⃣") is left as its digit.

    Why whole sequences: the emoji code points alone were deleted, so the joiners
    (U+200D) and variation selectors (U+FE0F) between them stayed in the stored fact,
    invisible and glued to the word before ("Meet 👩🏽‍💻 Ana" -> "Meet\\u200d Ana"),
    and flags were not removed at all (a review)."""
    if text.isascii():
        return text
    return _EMOJI.sub(_drop_emoji, _KEYCAP.sub(r"\1", text))


def strip_filler(sentence: str, names: Collection[str] = ()) -> str:
    """``sentence`` without interjections ("Wow, ..."), intensifiers, emoji or a vocative name."""
    text = strip_emoji(_INTENSIFIER.sub("", _FILLER_START.sub("", sentence.strip())))
    names = [n for n in names if n]
    if names:
        text = _FILLER_START.sub("", _without_vocatives(text, names))
    return text.strip()


#: Where a vocative may be: after the last comma, up to closing punctuation ("..., Mel!"),
#: and before the first comma or "!" ("Mel, ..."). Which word is a name is decided by
#: :func:`_addresses`, not by patterns built from the names: those (cached by ``re``
#: and by any cache of compiled patterns) would keep the speakers' names in the process
#: after ``Memory.forget`` erased them.
_VOCATIVE_END = re.compile(r",\s*([^,]+?)\s*(?=[!.?]*$)")
#: A name of at most 60 characters before the first "," or "!": unbounded, the lazy
#: group was tried at every length of a line with neither (20,000 spaces: 2.1 s).
_VOCATIVE_START = re.compile(r"^([^,!]{1,60}?)\s*[,!]\s*")
_WORD_CHARS = re.compile(r"\w*")


def _without_vocatives(text: str, names: Collection[str]) -> str:
    """``text`` without a name (or its first three letters and more, "Mel") addressing
    someone at its end or start."""
    end = _VOCATIVE_END.search(text)
    if end and _addresses(end.group(1), names):
        text = text[: end.start()] + text[end.end() :]
    start = _VOCATIVE_START.match(text)
    if start and _addresses(start.group(1), names):
        text = text[start.end() :]
    return text


def _addresses(word: str, names: Collection[str]) -> bool:
    """Whether ``word`` is one of ``names``: a name of three characters or fewer as it
    is, a longer one by its first three characters and then any word characters."""
    return any(
        word.startswith(n[:3]) and _WORD_CHARS.fullmatch(word, 3) is not None
        if len(n) > 3
        else word == n
        for n in names
    )


def is_name_of(word: str, names: Collection[str]) -> bool:
    """True when ``word`` is one of ``names`` or a nickname-like prefix of one ("Mel")."""
    return any(n == word or (len(word) >= 3 and n.startswith(word)) for n in names)


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``: letters and digits of any script, with ', &
    and - inside a word kept ("don't", "r&b", "follow-up"), and each Han or kana
    character alone. The extractor's and the claim matcher's unit of comparison.

    Why every script: the pattern was ASCII, so a Russian, Greek or Chinese sentence
    had no words, the extractor kept none of it and ``add(infer=True)`` stored nothing
    (a review). As the library compares texts first (:func:`.canonical.canonical`):
    composed (NFC), a word typed decomposed is the same word; an invisible character
    (a zero-width space) does not cut one ("Zu\u200brich" is "zurich")."""
    if text.isascii():  # the same words, found 2.7 times faster (most text is)
        return _ASCII_WORD.findall(text.lower())
    return _WORD.findall(canonical(text).lower())


def content_words(text: str, ignore: Collection[str] = ()) -> list[str]:
    """Lower-cased words of ``text`` that carry meaning (not stopwords, not ``ignore``)."""
    return [w for w in words(text) if w not in STOPWORDS and w not in ignore]


_REACTION = re.compile(
    r"^(?:(?:that|this|it|they|those|these|he|she)(?:'s|'re|\s+is|\s+are|\s+was|\s+were|"
    r"\s+sounds?|\s+looks?|\s+seems?)\b|(?:what|how)\s+(?:a\s+|an\s+)?(?:great|cool|nice|"
    r"amazing|awesome|lovely|beautiful|fun|sweet|wonderful|fantastic|exciting|cute|gorgeous|"
    r"incredible|special|inspiring|brave|kind)\b|(?:sounds|looks|seems|so|such|love|glad|"
    r"can't\s+wait|good\s+luck|keep\s+(?:it|up)|well\s+done|best\s+of\s+luck)\b)",
    re.IGNORECASE,
)


def is_reaction(sentence: str) -> bool:
    """True for a reaction to what the other person said ("That sounds great!")."""
    return _REACTION.search(sentence) is not None


def is_question(sentence: str) -> bool:
    """True when ``sentence`` ends with a question mark."""
    return _QUESTION.search(sentence) is not None


def has_second_person(sentence: str) -> bool:
    """True when the sentence addresses the listener (you, your, ...)."""
    return _SECOND_PERSON.search(sentence) is not None


def has_first_person(sentence: str) -> bool:
    """True when the speaker talks about themself (I, me, my, ..., and a lower-case
    "i" that is "I": :data:`_LOWER_I`); not in a sentence in another language
    (:func:`reads_foreign`: Spanish "me", Polish "my")."""
    found = _FIRST_PERSON.search(sentence) is not None or _LOWER_I.search(sentence) is not None
    return found and not reads_foreign(sentence)


def capital_i(sentence: str) -> str:
    """``sentence`` with each lower-case "i" that is the pronoun written "I"
    (:data:`_LOWER_I`: "so i think i moved" -> "so I think I moved"; not "Ana i Marek",
    "Mi piacciono i gatti", "for each index i, i goes", "i.e.")."""
    return _LOWER_I.sub(lambda m: m.group(0)[:-1] + "I", sentence)


def numbers(text: str) -> list[str]:
    """Numbers, amounts and ordinals as written ("3", "$500", "18th")."""
    return [m.group(0) for m in _NUMBER.finditer(text)]


def entities(text: str) -> list[str]:
    """Capitalised names and acronyms ("Caroline", "New York", "LGBTQ"), in order, unique."""
    seen: dict[str, None] = {}
    for m in _CAPITALISED.finditer(text):
        words = m.group(0).split()
        while words and words[0] in _NOT_ENTITY:
            words.pop(0)
        if len(words) == 1 and _starts_sentence(text, m.start()) and _common(words[0]):
            continue
        name = " ".join(words).rstrip(".'")
        if name.endswith("'s"):
            name = name[:-2]
        if name and name not in _NOT_ENTITY:
            seen.setdefault(name, None)
    return list(seen)


def _starts_sentence(text: str, pos: int) -> bool:
    before = text[:pos].rstrip(" \"'(")
    return not before or before[-1] in ".!?:"


def _common(word: str) -> bool:
    """A capitalised word that is probably just a sentence's first word ("Painting")."""
    low = word.lower()
    return low in STOPWORDS or (
        not word.isupper() and low.endswith(("ing", "ed", "ly", "ness", "tion"))
    )


def _third_person(verb: str) -> str:
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if low in _INVARIANT or low.endswith(("ed", "n't", "ing", "ought")) or not low.isalpha():
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u"):
        return verb[:-1] + "ies"
    return verb + "s"


#: An auxiliary put before "I" (a question, "not only did I ..."): the verb after "I" is
#: its bare infinitive and stays so ("Should I buy" -> "Should Ann buy", not "buys").
_INVERTED_AUX = re.compile(
    r"\b(?:(?:should|did|do|does|can|could|will|would|may|might|must|shall)(?:n't)?|can't"
    r"|won't|shan't)\s+$",
    re.IGNORECASE,
)


def _subject(m: re.Match[str], name: str) -> str:
    if m.group("contr"):
        return f"{name} {_IRREGULAR[m.group('contr')]}"
    if m.group("verb"):
        verb = m.group("verb")
        if _INVERTED_AUX.search(m.string, max(m.start() - 24, 0), m.start()) is None:
            verb = _third_person(verb)
        return f"{name} {m.group('adv') or ''}{verb}"
    return name


def _object(m: re.Match[str], name: str) -> str:
    word = m.group(0).lower()
    if word == "myself":
        return "themself"
    return f"{name}'s" if word in ("my", "mine") else name


def to_third_person(sentence: str, name: str) -> str:
    """``sentence`` with I/me/my made ``name`` ("I love my dog" -> "Ann loves Ann's dog";
    "i" too where it is "I": :func:`capital_i`)."""
    text = _SUBJECT.sub(lambda m: _subject(m, name), capital_i(sentence))
    text = _OBJECT.sub(lambda m: _object(m, name), text)
    if text != sentence and reads_foreign(sentence):  # only where a word was rewritten
        return sentence  # "me", "my", "I" are other words there (:func:`reads_foreign`)
    return text
