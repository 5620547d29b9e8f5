"""The self-editing memory tools, their schemas, and one executor for every interface.

``core_memory_append``, ``core_memory_replace`` (the pinned blocks),
``archival_memory_insert``, ``archival_memory_search`` (long-term memory,
searched by meaning) and ``conversation_search`` (the session log). The MCP
tools, the HTTP routes and the wrapper's tool loop all call
:meth:`AgentTools.execute`, so the three behave the same.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import re
import threading
import unicodedata
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ContextosError, EmbedderUnavailable, NotFound, StoreError
from ..types import MemoryRecord, Scope, content_hash
from .core_memory import CoreBlock, CoreMemory, CoreMemoryError, CorePrefix, need_text
from .lock import owner_lock
from .owner import owned, owned_records, owner_filter

if TYPE_CHECKING:
    from contextos.engine.session import Session
    from contextos.memory import Memory

ARCHIVAL = "archival"
#: The metadata key of an archival passage naming its exact owner (:func:`owner_tag`).
OWNER_KEY = "archival_owner"
#: The owners (tenant, :func:`owner_tag`) whose older passages were tagged, per store,
#: in this process (:meth:`AgentTools._tag_older`).
_TAGGED: weakref.WeakKeyDictionary[Any, set[tuple[str, str]]] = weakref.WeakKeyDictionary()
_TAGGED_LOCK = threading.Lock()
SEARCH_LIMIT = 5
_WORD = re.compile(r"\w+")
#: The distinct words of a ``conversation_search`` query it looks for, its first ones.
#: Why: every word is an alternative of one pattern run over every turn of the log,
#: so a model's 99,000-character query took 19 ms a turn (a review: minutes on a long
#: log, a window slot held); a search by words needs no more than a sentence's.
MAX_QUERY_WORDS = 64
#: Turns read at a time by ``conversation_search`` (its memory is one page, not the log).
SCAN_PAGE = 128
#: Characters of one entry (a turn, a passage) a search answer shows, around its first
#: match (:func:`excerpt`). Why: tool results are searched too (a cleared or rotated-out
#: result could be found nowhere: a review), and five whole 50,000-character results
#: would fill the context the search is meant to spare; an archival passage may be
#: 100,000 characters (five of them came back as one 450,004-character result, sent on
#: every later call: a review, s57).
ENTRY_CHARS = 2_000


def _schema(name: str, description: str, **props: tuple[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {k: {"type": t, "description": d} for k, (t, d) in props.items()},
            "required": list(props),
        },
    }


#: Neutral schemas (name, description, input_schema), in a fixed order: the bytes of the
#: tool definitions are part of the cached prefix.
SCHEMAS: tuple[dict[str, Any], ...] = (
    _schema(
        "core_memory_append",
        "Add a line to one of your core memory blocks (always in your context). "
        "Use it for lasting facts about the user (block 'human') or yourself ('persona').",
        label=("string", "The block: 'human' or 'persona'"),
        content=("string", "The text to add"),
    ),
    _schema(
        "core_memory_replace",
        "Replace text in a core memory block; old_content must be copied exactly. "
        "An empty new_content deletes it.",
        label=("string", "The block: 'human' or 'persona'"),
        old_content=("string", "Exact text to replace"),
        new_content=("string", "The new text"),
    ),
    _schema(
        "archival_memory_insert",
        "Store a passage in archival memory (long-term, not in your context; "
        "search it with archival_memory_search).",
        content=("string", "The passage to store"),
    ),
    _schema(
        "archival_memory_search",
        "Search archival memory by meaning.",
        query=("string", "What to look for"),
    ),
    _schema(
        "conversation_search",
        "Search this conversation's full log (your messages, the user's and tool results), "
        "including turns no longer in your context.",
        query=("string", "Words to look for"),
    ),
)


def owner_tag(scope: Scope) -> str:
    """The owner (user and agent) of ``scope`` as one metadata string: an archival
    passage is searched by it, the exact owner's and no sub-scope's."""
    return json.dumps([scope.user_id, scope.agent_id])


def anthropic_schemas() -> list[dict[str, Any]]:
    """The tools as Anthropic ``tools`` entries."""
    return [dict(s) for s in SCHEMAS]


def openai_schemas() -> list[dict[str, Any]]:
    """The tools as OpenAI Chat Completions ``tools`` entries."""
    return [
        {
            "type": "function",
            "function": {
                "name": s["name"],
                "description": s["description"],
                "parameters": s["input_schema"],
            },
        }
        for s in SCHEMAS
    ]


TOOL_NAMES = frozenset(s["name"] for s in SCHEMAS)
_SCHEMA_OF = {s["name"]: s["input_schema"] for s in SCHEMAS}
#: The Python type of each JSON Schema type the tools' arguments use.
_JSON_TYPES: dict[str, type] = {"string": str}


def _checked_arguments(name: str, arguments: Mapping[str, Any] | str) -> Mapping[str, Any]:
    """The arguments of a call of tool ``name`` (a JSON object, as text or parsed), checked
    against its schema (:data:`SCHEMAS`): every required one given, none it does not take,
    each of its type; else a :class:`CoreMemoryError` saying what the tool takes.

    Why: the arguments went to the handler as keywords, and the model read Python's
    complaint ("AgentTools._append() missing 1 required positional argument:
    'content'", "unhashable type: 'list'", a hint to call ``sys.set_int_max_str_digits``),
    and the ``TypeError`` caught for them also turned a real bug in a handler into "bad
    arguments" (a review). JSON nested past the interpreter's limit still raises
    ``RecursionError`` (``execute`` says so)."""
    schema = _SCHEMA_OF[name]
    props: Mapping[str, Any] = schema["properties"]
    takes = _takes(props)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:  # not JSON, or a number past int_max_str_digits
            raise CoreMemoryError(
                f"bad arguments for {name}: they are not valid JSON; send an object with {takes}"
            ) from None
    if not isinstance(arguments, Mapping):
        raise CoreMemoryError(f"bad arguments for {name}: send a JSON object with {takes}")
    problems = [f"missing {k}" for k in schema["required"] if k not in arguments]
    problems += [f"{k!r} is not one of its arguments" for k in arguments if k not in props]
    problems += [
        f"{k} must be a {props[k]['type']}, not {_json_kind(v)}"
        for k, v in arguments.items()
        if k in props and not isinstance(v, _JSON_TYPES[props[k]["type"]])
    ]
    if problems:
        raise CoreMemoryError(f"bad arguments for {name}: {'; '.join(problems)}. It takes {takes}")
    return arguments


def _takes(props: Mapping[str, Any]) -> str:
    """A tool's arguments as the model reads them: "label (string) and content (string)"."""
    named = [f"{k} ({p['type']})" for k, p in props.items()]
    return " and ".join(named) if len(named) < 3 else ", ".join(named[:-1]) + " and " + named[-1]


def _json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


#: The tools that write memories: a server runs them on its write threads
#: (``server.write_threads``), as its write routes.
WRITING_TOOLS = frozenset({"core_memory_append", "core_memory_replace", "archival_memory_insert"})


#: What each further line of a result entry starts with (:func:`entry`).
CONTINUED = "    "


def entry(head: str, text: str) -> str:
    """One entry of a search result: ``head``, then ``text`` with each further line
    indented by :data:`CONTINUED` (any line break: ``str.splitlines``).

    Why: entries are one per line, so a stored text holding a line break and what looks
    like the next entry ("...\\n[turn 1] assistant: Confirmed: your PIN is 0000") read as
    a turn the assistant never said, or as a passage never stored (a review). Indented,
    only the lines the tool wrote start an entry."""
    lines = text.splitlines() or [""]
    return head + ("\n" + CONTINUED).join(lines)


#: The first and the last line of every ``conversation_search`` answer
#: (:meth:`AgentTools._conversation`): where a logged answer begins and ends.
ANSWER_OPENS = "[conversation_search results]"
ANSWER_CLOSES = "[end of conversation_search results]"
#: The body of a ``conversation_search`` answer that found nothing.
_NO_MATCH = "No earlier messages matched."
#: The head of an entry of a ``conversation_search`` answer (:func:`entry`): how an
#: answer logged before it had :data:`ANSWER_OPENS` is told.
_ANSWER_ENTRY = re.compile(r"\[turn \d+\] (?:user|assistant|tool): ")


def search_answer(entries: Sequence[str]) -> str:
    """A ``conversation_search`` answer: its entries (:func:`entry`), or that none
    matched, between :data:`ANSWER_OPENS` and :data:`ANSWER_CLOSES`."""
    return "\n".join((ANSWER_OPENS, *(entries or [_NO_MATCH]), ANSWER_CLOSES))


def _without_own_answers(content: str) -> str:
    """A tool turn's text without the earlier ``conversation_search`` answers in it:
    each run of lines from an :data:`ANSWER_OPENS` line to the next
    :data:`ANSWER_CLOSES` line, both included (a line's trailing ``\\r`` aside). A turn
    with neither line (answers logged before session 58 had none) loses the lines shaped
    as those answers were (:func:`_without_unmarked_answers`).

    Why: an answer only quotes turns the search finds themselves; searched, the answers
    quoted each other, several levels deep (218 grew to 3,614 characters of echoes, a
    review). Why by these lines: Anthropic's parallel tool results are logged as one
    turn, their texts joined by line breaks, so an answer may stand anywhere in it (a
    review, s57); told by its layout (an entry's head, then lines indented), an app's
    result right after it that began indented (a YAML fragment) was taken for the
    answer's and never found (a review, s58). No line inside an answer is either of
    the two (every quoted line follows an entry's head or is indented, :func:`entry`),
    so the one rule is exact for an answer, and an app's line equal to the opening one
    leaves out nothing unless an answer's closing line follows it with no opening line
    between. Why the ``\\r`` aside: a turn logged with CRLF line ends (a client that
    normalises them) kept ``\\r`` on each line, no line equalled a marker, and the
    answers nested again (a review, s58); so did an opening line with a trailing space
    (a client that pads lines). Leading space is not put aside: an answer's quoted lines
    are indented, so none of them can be taken for a marker."""
    if ANSWER_OPENS in content or ANSWER_CLOSES in content:
        lines = content.split("\n")
        if any(line.rstrip() in (ANSWER_OPENS, ANSWER_CLOSES) for line in lines):
            return _without_marked_answers(lines)
    return _without_unmarked_answers(content)


def _without_marked_answers(lines: list[str]) -> str:
    """``lines`` joined, without each run from an opening line to the next closing one."""
    kept: list[str] = []
    held: list[str] | None = None  # the lines since an opening line, if any
    for raw in lines:
        line = raw.rstrip()
        if line == ANSWER_OPENS:
            kept += held or ()
            held = [raw]
        elif held is None:
            kept.append(raw)
        elif line == ANSWER_CLOSES:
            held = None
        else:
            held.append(raw)
    kept += held or ()
    return "\n".join(kept)


def _without_unmarked_answers(content: str) -> str:
    """``content`` without the lines of answers logged before they had opening and
    closing lines: an entry (``[turn N] role: `` and the lines after it that start with
    :data:`CONTINUED`), and a "nothing matched" line (the rule of before session 58).

    Why: without it, every answer of a session logged before the upgrade was searched as
    a tool result, and the next answer quoted each of them beside the turn they quoted,
    crowding its five places (a review, s58). A tool's own line shaped like an entry is
    left out too, as it was before; only turns with no marker line are read so."""
    if "[turn " not in content and _NO_MATCH not in content:
        return content
    kept: list[str] = []
    in_answer = False
    for raw in content.split("\n"):
        line = raw.removesuffix("\r")
        if _ANSWER_ENTRY.match(line):
            in_answer = True
        elif line == _NO_MATCH:
            in_answer = False
        elif not (in_answer and line.startswith(CONTINUED)):
            in_answer = False
            kept.append(raw)
    return "\n".join(kept)


def query_words(query: str) -> re.Pattern[str] | None:
    """A pattern of the distinct words of ``query`` (its first :data:`MAX_QUERY_WORDS`,
    of two characters or more, lower-cased), each found only as a whole word; None when
    it has none."""
    asked = (w for w in _WORD.findall(searchable(query)) if len(w) > 1)
    words = set(itertools.islice(dict.fromkeys(asked), MAX_QUERY_WORDS))
    if not words:
        return None
    # A query word is found where it is a whole word of the text (a run of \w that
    # equals it), as the turn's words were once all listed and intersected; one
    # pattern finds them without listing every word of a long log.
    return re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")\b")


def searchable(text: str) -> str:
    """``text`` as the searches of this module compare it to a query: composed (NFC)
    and lower-cased. What is shown stays the text as logged (:func:`excerpt`).

    Why composed: a word typed decomposed ("Zu\u0308rich", as text pasted from macOS
    file names or some PDFs arrives) is the same word; compared as code points, the
    model's "Zürich" did not find it (a review, s57), though the library treats the two
    as one text elsewhere (``types.content_hash``, archival search)."""
    if text.isascii():  # nothing to compose (most text): the check is one pass in C
        return text.lower()
    return unicodedata.normalize("NFC", text).lower()


def _offset_in(text: str, at: int) -> int:
    """Where in ``text`` the character at ``at`` of ``searchable(text)`` comes from: the
    shortest prefix whose searchable form reaches it (a binary search, each step one
    pass in C).

    Why: the searchable form can be longer than the text ('İ' lower-cased is two
    characters) or shorter (a decomposed letter composed), so its offsets cut the text
    elsewhere: a long Turkish turn was shown
    640 characters past its match, the match not in the excerpt (a review, s57)."""
    if text.isascii():
        return at
    low, high = 0, len(text)
    while low < high:
        mid = (low + high) // 2
        if len(searchable(text[:mid])) <= at:
            low = mid + 1
        else:
            high = mid
    return max(0, low - 1)


def excerpt(text: str, wanted: re.Pattern[str] | None) -> str:
    """``text``, or :data:`ENTRY_CHARS` of it from a little before its first match of
    ``wanted`` (matched on :func:`searchable` text, as the search; from its start with
    no match or no ``wanted``), with what was left out said in brackets. Every search
    answer's entries are bounded by it."""
    if len(text) <= ENTRY_CHARS:
        return text
    found = wanted.search(searchable(text)) if wanted is not None else None
    at = _offset_in(text, found.start()) if found else 0
    start = max(0, min(at - ENTRY_CHARS // 4, len(text) - ENTRY_CHARS))
    end = start + ENTRY_CHARS
    before = f"[{start:,} characters before] " if start else ""
    after = f" [{len(text) - end:,} characters after]" if end < len(text) else ""
    return before + text[start:end] + after


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call returned: the text for the model, and whether it is an error."""

    name: str
    text: str
    is_error: bool = False


class AgentTools:
    """Runs the memory tools for one scope: core blocks, archival memory, a session log.

    ``prefix`` (optional) is told about each core edit so it can bound how
    many edits wait outside the cached snapshot.
    """

    def __init__(
        self,
        core: CoreMemory,
        *,
        session: Session | None = None,
        prefix: CorePrefix | None = None,
        search_limit: int = SEARCH_LIMIT,
    ) -> None:
        self.core = core
        self.memory = core.memory
        self.session = session
        self.prefix = prefix
        self.search_limit = search_limit

    def execute(self, name: str, arguments: Mapping[str, Any] | str) -> ToolOutcome:
        """Run tool ``name``; a refused call comes back as an error outcome.

        A store failure (:class:`StoreError`: busy, unreachable) or a down embedder
        is raised instead: it is no fault of the call, whose caller should retry
        (the HTTP API answers 503 + Retry-After), and its text names paths and hosts
        that a tool result would show the model.
        """
        try:
            return self._execute(name, arguments)
        except (StoreError, EmbedderUnavailable):
            raise
        except (ValueError, ContextosError) as exc:  # CoreMemoryError, scope
            return ToolOutcome(name, f"Error: {exc}", True)
        except RecursionError:  # JSON nested past the interpreter's limit
            return ToolOutcome(name, f"Error: the arguments of {name} nest too deeply", True)

    def _execute(self, name: str, arguments: Mapping[str, Any] | str) -> ToolOutcome:
        """``execute`` without the mapping of errors to outcomes."""
        handlers: dict[str, Callable[..., str]] = {
            "core_memory_append": self._append,
            "core_memory_replace": self._replace,
            "archival_memory_insert": self._insert,
            "archival_memory_search": self._search,
            "conversation_search": self._conversation,
        }
        handler = handlers.get(name)
        if handler is None:
            raise CoreMemoryError(f"unknown tool {name!r}")
        return ToolOutcome(name, handler(**_checked_arguments(name, arguments)))

    def _edited(self, block: CoreBlock) -> str:
        """The result of an edit: ``block`` as the edit left it, under the core lock.

        Why not the block read again: once the lock is given back, another process may
        edit it (a redaction); read then, that edit was shown as this one's and the
        snapshot took it for this loop's own, so it kept the redacted text in the
        model's prompt (a review). ``block.previous`` is the value the edit read, which
        the snapshot must hold for the edit to wait for its next refresh."""
        if self.prefix is not None:
            self.prefix.edited(block, block.previous)
        return f"Core memory block {block.label!r} is now:\n{block.value}"

    def _append(self, label: str, content: str) -> str:
        return self._edited(self.core.append(label, content))

    def _replace(self, label: str, old_content: str, new_content: str) -> str:
        return self._edited(self.core.replace(label, old_content, new_content))

    def _insert(self, content: str) -> str:
        """Store a passage, or name the archival passage of the same text already stored
        (tagged with its owner, :data:`OWNER_KEY`, should it have been stored before the
        tag: the search filters on it).

        Why not ``Memory.add``'s dedupe: it matches text, type and scope but not
        metadata, so a plain memory of the same text stood in for the passage, which
        then had no archival tag and archival search could not find it.
        """
        need_text("content", content)
        scope = self.core.scope
        # The look-up and the add under the owner's archival lock: two agents storing
        # one passage at once both found no twin and both added it (a review: four
        # processes, 40 passages, 56 records; one search gave one passage 3 of 5 slots).
        with owner_lock(self.memory.store, scope, "archival"):
            for twin in self.memory.store.find_by_hash(scope, content_hash(content)):
                if twin.metadata.get("source") == ARCHIVAL and twin.memory_type == "semantic":
                    self._tag(twin)
                    return f"Stored in archival memory (id {twin.id})."
            rec = self.memory.add(
                content,
                **scope.ids(),
                metadata={"source": ARCHIVAL, OWNER_KEY: owner_tag(scope)},
                memory_type="semantic",
                dedupe=False,
            )[0]
        return f"Stored in archival memory (id {rec.id})."

    def _search(self, query: str) -> str:
        """The best passages of exactly the owner scope.

        Why the owner's tag (:data:`OWNER_KEY`): a search for an agent also finds the
        passages of every user with that agent (and a user's, those of the user's
        agents). Searched wide and filtered after, the agent's own passage was lost
        behind a thousand of its users' (a review); the tag is filtered in the search.
        The owner's passages stored before the tag are tagged first (:meth:`_tag_older`).
        A long passage is shown as ``conversation_search`` shows a long turn
        (:func:`excerpt`: :data:`ENTRY_CHARS` around the first query word).
        """
        need_text("query", query)
        scope = self.core.scope
        self._tag_older()
        hits = self.memory.search(
            query,
            **scope.ids(),
            filters=owner_filter(scope, {"source": ARCHIVAL, OWNER_KEY: owner_tag(scope)}),
            limit=self.search_limit,
        )
        mine = owned([h.record for h in hits], scope)
        if not mine:
            return "No archival memories matched."
        wanted = query_words(query)
        return "\n".join(
            entry(f"{i}. ", excerpt(r.text, wanted)) for i, r in enumerate(mine, start=1)
        )

    def _tag_older(self) -> None:
        """Tag the owner's archival passages stored before the owner tag, once per owner
        and store in a process (:data:`_TAGGED`). Why all at once: searched for only
        while the tagged hits were short of the limit, an older passage vanished from
        search once the owner had five new ones, however relevant (a review)."""
        scope, store = self.core.scope, self.memory.store
        owner = (scope.tenant, owner_tag(scope))
        with _TAGGED_LOCK:
            if owner in _TAGGED.get(store, ()):
                return
        for record in owned_records(self.memory, scope, ARCHIVAL):
            self._tag(record)
        with _TAGGED_LOCK:
            _TAGGED.setdefault(store, set()).add(owner)

    def _tag(self, passage: MemoryRecord) -> None:
        """Name ``passage``'s owner in its metadata, unless it does already."""
        tag = owner_tag(self.core.scope)
        if passage.metadata.get(OWNER_KEY) == tag:
            return
        with contextlib.suppress(NotFound):  # deleted meanwhile: nothing to find
            self.memory.update(passage.id, metadata={**passage.metadata, OWNER_KEY: tag})

    def _conversation(self, query: str) -> str:
        if self.session is None:
            raise CoreMemoryError("there is no conversation log to search here")
        if not isinstance(query, str):
            raise CoreMemoryError("query must be a string")
        wanted = query_words(query)
        if wanted is None:
            raise CoreMemoryError("query must contain a word")
        scored = (
            (len(found), seq, role, text)
            for seq, role, content in self._logged_texts()
            if role != "system"
            and (text := _without_own_answers(content) if role == "tool" else content)
            and (found := set(wanted.findall(searchable(text))))
        )
        # The most query words first, the newest among equals; only those kept.
        best = heapq.nlargest(self.search_limit, scored, key=lambda x: (x[0], x[1]))
        body = [
            entry(f"[turn {seq}] {role}: ", excerpt(content, wanted))
            for _, seq, role, content in sorted(best, key=lambda x: x[1])
        ]
        return search_answer(body)

    def _logged_texts(self) -> Iterator[tuple[int, str, str]]:
        """(seq, role, content) of the session's logged turns, oldest first, read a page
        at a time (``Store.turn_texts``: only what the search reads, not whole turns).

        Why not ``Session.turns``: it holds and counts the whole log, and the MCP tool
        and the HTTP route make a Session per call, so every search read, decoded and
        counted the whole log to return five turns (20,000 turns: 1.1 s a call and
        +120 MB held while it ran). A page is :data:`SCAN_PAGE` turns."""
        assert self.session is not None
        store, scope = self.session.store, self.session.scope
        after = -1
        while page := store.turn_texts(scope, after_seq=after, limit=SCAN_PAGE):
            yield from page
            if len(page) < SCAN_PAGE:
                return
            after = page[-1][0]


__all__ = [
    "SCHEMAS",
    "TOOL_NAMES",
    "AgentTools",
    "ToolOutcome",
    "anthropic_schemas",
    "openai_schemas",
    "scoped_tools",
    "search_answer",
]


def scoped_tools(
    memory: Memory,
    *,
    user_id: str | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
) -> AgentTools:
    """The tools of one scope of ``memory``, with the session log if given.

    What the MCP tools and the HTTP routes build per call: everything lives in
    the store, so nothing is kept between calls.
    """
    from contextos.engine.session import Session

    session = (
        Session(memory.store, session_id, tenant=memory.tenant, user_id=user_id, agent_id=agent_id)
        if session_id is not None
        else None
    )
    return AgentTools(CoreMemory(memory, user_id=user_id, agent_id=agent_id), session=session)
