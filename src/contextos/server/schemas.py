"""Request and response bodies of the HTTP API and the arguments of the MCP tools
(pydantic lives only here, at the edge).

Validation is strict on purpose: text that cannot be stored or echoed back
(NUL, which PostgreSQL cannot store; lone surrogates; NaN; integers past 64
bits; absurd nesting; times that cannot be put in UTC within years 1-9999;
metadata filter keys that are not dotted identifiers) is refused with a 422
here instead of failing deep inside a store as a 500. The HTTP routes declare
these types for bodies, paths and query values; the MCP tools run their
arguments through the same models with :func:`parse`, so both protocols accept
exactly the same input.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..engine.message_text import lone_surrogate_at
from ..engine.window import MAX_LEFT_OUT  # a window answer's listed items per segment
from ..memory.ingest import (
    MAX_METADATA_DEPTH,
    ROLE_ALIASES,
    check_add_metadata,
    check_inferred_type,
)
from ..times import local
from ..types import (
    METADATA_KEY,
    Message,
    ScopeIds,
    check_metadata_key,
    fits_int64,
    scope_id,
    scope_ids,
)
from .errors import BRANCH, describe
from .json_checks import check_json_metadata

if TYPE_CHECKING:  # windowing imports the engine; a window is built only on request
    from .compacting import CompactRequest
    from .windowing import WindowRequest

MAX_TEXT = 100_000
MAX_ID = 256
MAX_LIST_LIMIT = 1000
#: The most bytes of memory text and metadata one list page holds (at least one
#: memory); the page is shorter than its ``limit`` then, and ``next_offset`` says where
#: the next one starts. Why: a page was read whole before it was sent, and 1,000
#: memories of 100,000 four-byte characters are 400 MB: four such requests at once took
#: the server from 350 MB to 1.9 GB.
MAX_PAGE_BYTES = 4 * 2**20
MAX_SEARCH_LIMIT = 100
MAX_MESSAGES = 1000
MAX_OFFSET = 10_000_000
#: The most rules and tools a window request may give, the most levels a tool's schema
#: may nest (the tool object is level 0: ``input_schema.properties.x.items...``) and the
#: most bytes it may take as canonical JSON. Why bounds: each is counted, placed and
#: rendered per request, and a tool is serialised recursively; a body under the size
#: limit held 50,000 one-character rules or a schema nested thousands deep.
MAX_RULES = 64
MAX_TOOLS = 64
MAX_TOOL_DEPTH = 16
MAX_TOOL_BYTES = 64 * 1024
#: A tool's name, as both providers require it (Anthropic and OpenAI alike).
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"
#: The most tokens a compaction's ``budget`` (the history's share of a window) may be:
#: a window's own most (``WindowRequestIn.token_budget``).
MAX_BUDGET = 2_000_000


def _filter_key(value: str) -> str:
    check_metadata_key(value)
    return value


def check_text(value: str) -> str:
    """Refuse strings that are not valid Unicode scalar values (the library's one rule,
    :func:`contextos.engine.message_text.lone_surrogate_at`) or hold NUL."""
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    if lone_surrogate_at(value) is not None:
        raise ValueError("text must be valid Unicode (no lone surrogates)")
    return value


def _at_most(what: str) -> AfterValidator:
    """The MAX_TEXT limit on a text, refused in the library's words
    (:meth:`contextos.Memory.add`: ``a memory may hold at most 100,000 characters
    (got 120,000); split it first``), not pydantic's ``String should have at most
    100000 characters``."""

    def check(value: str) -> str:
        if len(value) > MAX_TEXT:
            raise PydanticCustomError(
                "text_too_long",
                f"{what} may hold at most {MAX_TEXT:,} characters (got {len(value):,}); "
                "split it first",
                {"max_length": MAX_TEXT},
            )
        return value

    return AfterValidator(check)


def _branch(name: str) -> Tag:
    """The label of one branch of a union the schemas choose by the value's type; the
    error text (:func:`~contextos.server.errors.describe`) leaves it out of the path."""
    return Tag(BRANCH + name)


def _choose(kinds: tuple[tuple[type | tuple[type, ...], str], ...]) -> Any:
    """A discriminator picking the branch of the first of ``kinds`` (types, label) the
    value is an instance of (None: no branch fits, the union's own error). Only that
    branch validates the value, so a refusal names its one problem; pydantic's plain
    union reported every branch's (``body.messages.function-after[check_text(),
    constrained-str]: String should ...; body.messages.list[MessageIn]: Input should
    be a valid list``)."""

    def choose(value: Any) -> str | None:
        return next((BRANCH + name for cls, name in kinds if isinstance(value, cls)), None)

    return choose


def check_scope_id(value: str) -> str:
    """The library's one rule for a user/agent/session id (:func:`contextos.types.scope_id`),
    so a blank id is a 422 here, as an empty one is, on every route and MCP tool."""
    scope_id(value)
    return value


def check_not_blank(value: str) -> str:
    """A query, a question or a memory's new text needs a non-space character: the
    library refuses a blank one too, but as a ``ValueError`` (a 400 naming no field,
    "query must be a non-empty string" for a window's ``question``)."""
    if not value.strip():
        raise ValueError("must hold a non-space character")
    return value


def _time_text(value: Any) -> Any:
    """A time is sent as an ISO-8601 string, as the library takes it. Why not a number:
    pydantic reads one as Unix seconds, or as milliseconds past 2e10, so the same
    number of another unit named another instant without a word (-62135596801 was
    accepted as a date in year 1), and the library and MCP refuse numbers. A string is
    read by :func:`contextos.times.local`, the library's reading."""
    if isinstance(value, int | float):  # a JSON true is an int to Python
        raise ValueError(
            "a time is an ISO-8601 date-time string (e.g. 2024-05-02T10:00:00Z), not a number"
        )
    if isinstance(value, str):
        # Read as the library reads it (``datetime.fromisoformat``): pydantic read an
        # all-digit string as Unix seconds, so "20240508" (8 May 2024 to the library and
        # the CLI) was stored as 1970-08-23 and "2024" as 1970-01-01 (a review).
        return local(value)
    return value


def _check_time(value: datetime) -> datetime:
    """The library's one rule for times (:func:`contextos.times.utc`): an instant in
    years 1-9999 in UTC, naive meaning UTC. ``0001-01-01T00:00+01:00`` is refused.

    Handed on in the zone it was given in (:func:`contextos.times.local`), not in UTC:
    an add keeps an ``event_time``'s zone (``metadata["utc_offset"]``) and dates the
    memory and its facts by it, and every other verb reads the instant. Why: the HTTP
    add and MCP's ``add_memory`` dated a turn said at 20:00 in Los Angeles by UTC's
    next day, where Python and the CLI kept its day (a review)."""
    return local(value)


def _check_json(
    value: Any, depth: int = 0, *, max_depth: int = MAX_METADATA_DEPTH, what: str = "metadata"
) -> Any:
    """Metadata (or ``what`` else a client sends as JSON: a tool schema) must round-trip
    through strict JSON: finite numbers, 64-bit ints, at most ``max_depth`` levels (for
    metadata the library's own limit: the server allowed 8, so a record written in
    Python could not be written back unchanged over HTTP)."""
    if depth > max_depth:
        raise ValueError(f"{what} may nest at most {max_depth} levels deep")
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not fits_int64(value):
            raise ValueError(f"{what} integers must fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} numbers must be finite")
        return value
    if isinstance(value, list):
        return [_check_json(v, depth + 1, max_depth=max_depth, what=what) for v in value]
    if isinstance(value, dict):
        return {
            check_text(str(k)): _check_json(v, depth + 1, max_depth=max_depth, what=what)
            for k, v in value.items()
        }
    raise ValueError(f"unsupported {what} value of type {type(value).__name__}")


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Strict JSON (:func:`_check_json`) within the library's size limit for one memory's
    metadata (:func:`contextos.memory.ingest.check_metadata`), checked at C speed
    (:func:`.json_checks.check_json_metadata`: this runs on the event loop)."""
    if value is None:
        return None
    check_json_metadata(value)
    return value


#: A text the library stores whole (a memory's): at most MAX_TEXT characters, with a
#: non-space one.
Text = Annotated[
    str,
    Field(json_schema_extra={"maxLength": MAX_TEXT}),
    _at_most("a memory"),
    AfterValidator(check_text),
    AfterValidator(check_not_blank),
]
#: One message's content (a memory when added, a turn when logged in a session).
MessageText = Annotated[
    str,
    Field(json_schema_extra={"maxLength": MAX_TEXT}),
    _at_most("a message"),
    AfterValidator(check_text),
]
Query = Annotated[
    str,
    Field(min_length=1, max_length=10_000),
    AfterValidator(check_text),
    AfterValidator(check_not_blank),
]
Ident = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(check_text)]
#: A user, agent or session id: an Ident with at least one non-space character.
ScopeId = Annotated[Ident, AfterValidator(check_scope_id)]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_check_metadata)]
Time = Annotated[datetime, BeforeValidator(_time_text), AfterValidator(_check_time)]
#: A relevance floor (``min_score``): a real number in -1..1, as ``Memory.search`` takes.
#: Strict: JSON ``true`` was a floor of 1.0 that silently found nothing, ``false`` one of
#: 0.0 and the text ``"0.3"`` one of 0.3, where the library refuses a bool or a text
#: (a review); each is now refused ("Input should be a valid number"). An integer is a
#: number. One type for the HTTP body and the MCP tool's signature, which the SDK
#: validates before the tool's own check.
MinScore = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False, strict=True)]
#: A metadata filter key: identifiers (any script) joined by dots (``a.b`` looks into
#: nested objects), by the stores' own rule (``store.base.check_metadata_key``).
FilterKey = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID, json_schema_extra={"pattern": METADATA_KEY}),
    AfterValidator(_filter_key),
]
Scalar = Annotated[
    Annotated[Annotated[str, AfterValidator(check_text)], _branch("string")]
    | Annotated[bool, _branch("boolean")]
    | Annotated[Annotated[int, Field(ge=-(2**63), lt=2**63)], _branch("integer")]
    | Annotated[Annotated[float, Field(allow_inf_nan=False)], _branch("number")],
    Discriminator(
        # bool before int: True is an int to Python, a boolean to JSON.
        _choose(((str, "string"), (bool, "boolean"), (int, "integer"), (float, "number"))),
        custom_error_type="scalar_type",
        custom_error_message="Input should be a string, a number or a boolean",
    ),
    # Before the union: an integer past 64 bits failed the int branch and was taken
    # as a float (2**70 became 1.18e21) where it must be refused.
    BeforeValidator(lambda v: _check_json(v) if isinstance(v, int) else v),
]
MemoryTypeName = Literal["episodic", "semantic", "procedural"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(_Body):
    #: ``developer`` (OpenAI's name for instructions) is read as ``system``, as
    #: ``Memory.add`` and the OpenAI wrapper read it.
    role: Literal["system", "developer", "user", "assistant", "tool"] = "user"
    content: MessageText
    name: Ident | None = None
    tool_call_id: Ident | None = None
    metadata: Metadata = Field(
        None,
        description="This message's own data, as in Memory.add: e.g. caption (an image's "
        "description, indexed), source_id/dia_id (provenance), event_time.",
    )

    def to_message(self) -> Message:
        return Message(
            role=ROLE_ALIASES.get(self.role, self.role),  # type: ignore[arg-type]
            content=self.content,
            name=self.name,
            tool_call_id=self.tool_call_id,
            metadata=self.metadata or {},
        )


class ScopeIn(_Body):
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    session_id: ScopeId | None = None

    def scope(self) -> ScopeIds:
        """The user/agent/session keywords of the ``Memory`` call this body asks for."""
        return scope_ids(self.user_id, self.agent_id, self.session_id)


class AddRequest(ScopeIn):
    messages: Annotated[
        Annotated[Text, _branch("text")]
        | Annotated[
            list[MessageIn],
            Field(min_length=1, max_length=MAX_MESSAGES),
            _branch("messages"),
        ],
        Discriminator(
            _choose(((str, "text"), (list, "messages"))),
            custom_error_type="messages_type",
            custom_error_message="Input should be a text or a list of messages",
        ),
    ]
    metadata: Metadata = None
    event_time: Time | None = None
    memory_type: MemoryTypeName | None = Field(
        None,
        description="episodic (when left out), semantic or procedural; not with infer, "
        "whose extractor types each fact.",
    )
    infer: bool = Field(
        False, description="Extract and reconcile facts instead of storing the turns verbatim."
    )

    @model_validator(mode="after")
    def _metadata_fits(self) -> Self:
        """``metadata`` is copied into every message's memory: refused here, as
        ``Memory.add`` refuses it (:func:`contextos.memory.ingest.check_add_metadata`),
        when the copies would be too large, so a body under the size limit cannot write
        hundreds of times its size (0.9 MB of metadata with 500 short messages: 467 MB)."""
        if isinstance(self.messages, list):
            check_add_metadata(self.metadata or {}, [m.to_message() for m in self.messages])
        check_inferred_type(self.memory_type, self.infer)  # a 422, as malformed input
        return self


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer, not a boolean")
    return value


#: A count in a JSON body or an MCP tool's arguments: ``true``/``false`` are refused
#: ("Input should be a valid integer"). Why: pydantic's lax mode read ``true`` as 1, so
#: a window body's ``"max_tokens": true`` gave a ready request with ``max_tokens`` 1,
#: ``"token_budget": true`` a refusal "greater than or equal to 64" for a 64 never given,
#: and a search's ``"limit": true`` one hit, where the Python API refuses a bool (a
#: review). A number written as text or as ``10.0`` stays a number, as in a query string
#: and the CLI (a fraction is refused). One type for the HTTP bodies and the MCP tools'
#: signatures, which the SDK validates before the tool's own check.
#: Where it is optional, the bounds go before the validator
#: (``Annotated[int, Field(ge=1), NOT_A_BOOL] | None``): given on the union, or after it,
#: pydantic wrote them into the JSON schema as ``ge``/``le``, which no client reads.
NOT_A_BOOL = BeforeValidator(_not_a_bool)
JsonInt = Annotated[int, NOT_A_BOOL]


class SearchRequest(ScopeIn):
    query: Query
    limit: JsonInt = Field(10, ge=1, le=MAX_SEARCH_LIMIT)
    token_budget: Annotated[int, Field(ge=1, le=1_000_000), NOT_A_BOOL] | None = None
    memory_types: list[MemoryTypeName] | None = Field(None, max_length=3)
    as_of: Time | None = None
    event_after: Time | None = None
    event_before: Time | None = None
    metadata: Annotated[dict[FilterKey, Scalar], Field(max_length=32)] | None = None
    min_score: MinScore | None = Field(
        None,
        description="Relevance floor: keep hits whose query-memory cosine (`relevance`) is at "
        "least this; 0.3 keeps 99% of LoCoMo evidence in the top 10 (docs/benchmarks.md).",
    )


class Expected(_Body):
    """A write's precondition: the memory as the caller read it (``PATCH`` and MCP
    ``update_memory``, MCP ``delete_memory``; ``DELETE`` takes the same in its query)."""

    expected_text: (
        Annotated[
            str,
            Field(json_schema_extra={"maxLength": MAX_TEXT}),
            _at_most("an expected text"),
            AfterValidator(check_text),
        ]
        | None
    ) = Field(
        None,
        description="Write only while the memory's text is still this one, else 409 "
        "(nothing written): an edit made from a text read earlier never replaces a newer.",
    )
    expected_updated_at: Time | None = Field(
        None,
        description="Write only while the memory's updated_at is still this one (text and "
        "metadata unchanged since it was read), else 409 (nothing written).",
    )


class UpdateRequest(Expected):
    text: (
        Annotated[
            str,
            Field(min_length=1, json_schema_extra={"maxLength": MAX_TEXT}),
            _at_most("a memory"),
            AfterValidator(check_text),
            AfterValidator(check_not_blank),
        ]
        | None
    ) = None
    metadata: Metadata = None

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        """Neither ``text`` nor ``metadata`` is malformed input: a 422 here, as
        ``forget``'s missing target is. ``Memory.update``'s own check made it a 400
        ``ValueError``, the answer the docs keep for a library error (a review)."""
        if self.text is None and self.metadata is None:
            raise ValueError("update needs text or metadata")
        return self


class ListRequest(ScopeIn):
    """A page of memories (query values of ``GET /v1/memories``; MCP ``list_memories``)."""

    limit: int = Field(100, ge=1, le=MAX_LIST_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    after: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None,
        description="The page after the memory whose key this is (the next_after of the "
        "page before): no memory skipped or repeated while others write; offset then "
        "counts from it.",
    )
    memory_type: list[MemoryTypeName] | None = Field(
        None, max_length=3, description="Only memories of these types (all when left out)."
    )
    validity: Literal["current", "all"] = Field(
        "current",
        description="all: superseded facts too (their valid_to is set), as `contextos "
        "list --validity all`.",
    )


class MemoryIdIn(_Body):
    """One memory by id (the path of ``/v1/memories/{id}``; MCP tools on one memory)."""

    memory_id: Ident


#: The most a page's ``after_seq`` may be (a session's turns, a memory's history).
MAX_SEQ = 2**62


class HistoryPageIn(_Body):
    """A page of a memory's history (query values of ``GET /v1/memories/{id}/history``;
    MCP ``memory_history``). Its events are numbered from 0, oldest first."""

    after_seq: int = Field(
        -1,
        ge=-1,
        le=MAX_SEQ,
        description="The page of events after this one (the next_after_seq of the page "
        "before); -1: from the first.",
    )
    limit: int = Field(100, ge=1, le=MAX_LIST_LIMIT)


class ForgetRequest(_Body):
    """Whom to erase: a user, or a session (its log and every memory of it, whoever
    they name: a log written with only an agent or session id names no user to
    forget). Exactly one of the two; both or neither is a 422, so no body reads as
    "the whole tenant"."""

    user_id: ScopeId | None = None
    session_id: ScopeId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.user_id is None) == (self.session_id is None):
            raise ValueError("give exactly one of user_id and session_id")
        return self


class AppendTurnsRequest(_Body):
    # ``newest``: why. An append whose client timed out may have landed (its write went
    # on once the store's lock was free), and its retry logged the turns twice; a retry
    # with the same ``newest`` is refused instead (a review).
    messages: Annotated[list[MessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    newest: (
        Annotated[
            int,
            Field(
                ge=-1,
                le=MAX_SEQ,
                strict=True,
                description="Append only while the log's last turn has this seq (-1: an "
                "empty log), else 409 and nothing is appended: retry a timed-out append "
                "with the same value and it is logged once.",
            ),
        ]
        | None
    ) = None


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's input schema, given, describes an object: both providers take the
    tool's input as one JSON object, and the Messages API refuses another type."""
    if schema and schema.get("type") != "object":
        raise ValueError('a tool\'s input schema must have "type": "object"')
    return schema


class ToolIn(BaseModel):
    """One tool schema for a window, as the library's ``tools=`` takes it
    (``Session.window``, :func:`~contextos.engine.session.context_window`): a ``name``,
    an optional ``description`` and ``input_schema`` (Anthropic) or ``parameters``
    (OpenAI); other keys are kept (the rendered request leaves them out).

    Why checked here: the renderers read ``schema["name"]``, so a tool without one
    was a 500 (a ``KeyError``) once a request body was asked for."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(pattern=TOOL_NAME)]
    description: Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(check_text)] = ""
    input_schema: Annotated[dict[str, Any], AfterValidator(_object_schema)] = Field(
        default_factory=dict
    )
    parameters: Annotated[dict[str, Any], AfterValidator(_object_schema)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _custom(self) -> Self:
        """Only custom tools: a server tool (``{"type": "web_search_20250305", ...}``)
        has no schema to place, and rendered as a custom one it lost its type and
        was refused by the API. The library's ``wrap`` sends such tools as the caller
        gave them, outside the window; here they are refused, named."""
        kind = (self.model_extra or {}).get("type", "custom")
        if kind != "custom":
            raise ValueError(
                f"tool {self.name!r} is a server tool (type {kind!r}): only custom tools "
                "(name, description, input_schema or parameters) are placed in a window; "
                "send server tools beside the request"
            )
        return self

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        """Strict JSON, at most :data:`MAX_TOOL_DEPTH` levels and :data:`MAX_TOOL_BYTES`
        (as the engine serialises it: ``engine.window.canonical_json``)."""
        schema = _check_json(self.schema_dict(), max_depth=MAX_TOOL_DEPTH, what="tool schema")
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode())
        if size > MAX_TOOL_BYTES:
            raise ValueError(
                f"a tool schema may take at most {MAX_TOOL_BYTES:,} bytes as JSON (got {size:,})"
            )
        return self

    def schema_dict(self) -> dict[str, Any]:
        """The tool as sent: the keys given, none added."""
        return self.model_dump(exclude_unset=True)


def _unique_names(tools: list[ToolIn] | None) -> list[ToolIn] | None:
    """Tool names are unique in a request (both providers refuse a repeated one)."""
    seen: set[str] = set()
    for tool in tools or ():
        if tool.name in seen:
            raise ValueError(f"tool name {tool.name!r} is given twice")
        seen.add(tool.name)
    return tools


#: An instruction text of a window (its system prompt, a rule): blank is fine (the
#: engine leaves blank instructions out), NUL and lone surrogates are not.
Instruction = Annotated[
    str,
    Field(json_schema_extra={"maxLength": MAX_TEXT}),
    _at_most("an instruction"),
    AfterValidator(check_text),
]


class WindowRequestIn(_Body):
    question: Query
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    token_budget: JsonInt = Field(2000, ge=64, le=2_000_000)
    limit: JsonInt = Field(20, ge=1, le=MAX_SEARCH_LIMIT)
    model: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(check_text)] = (
        "claude-sonnet-4-6"
    )
    system: Instruction = Field("", description="The system prompt (cached, 1h).")
    rules: Annotated[list[Instruction], Field(max_length=MAX_RULES)] = Field(
        default_factory=list, description="Standing instructions after the system prompt."
    )
    tools: Annotated[
        list[ToolIn] | None, Field(max_length=MAX_TOOLS), AfterValidator(_unique_names)
    ] = Field(None, description="Tool schemas: name, description, input_schema or parameters.")
    format: Literal["anthropic", "openai"] | None = Field(
        None,
        description="Also answer the provider request body for this window in `request` "
        "(cache_control where breakpoints are planned; prompt_cache_key for openai).",
    )
    max_tokens: Annotated[int, Field(ge=1, le=MAX_BUDGET), NOT_A_BOOL] | None = Field(
        None,
        description="The request's max_tokens (openai: max_completion_tokens); when "
        "left out, the model's output reserve capped at 16,384 (the official SDKs refuse "
        "a larger one without streaming); a larger value given is sent as given.",
    )

    def for_session(self, session_id: str | None) -> WindowRequest:
        """The window to build for this body in ``session_id`` (None: no session)."""
        from .windowing import WindowRequest

        return WindowRequest(
            question=self.question,
            user_id=self.user_id,
            agent_id=self.agent_id,
            session_id=session_id,
            token_budget=self.token_budget,
            limit=self.limit,
            model=self.model,
            system=self.system,
            rules=tuple(self.rules),
            tools=tuple(t.schema_dict() for t in self.tools or ()),
            format=self.format,
            max_tokens=self.max_tokens,
        )


#: The compaction strategies (``contextos.engine.compaction.STRATEGIES``; not imported:
#: the MCP server starts without the engine, and a test keeps the two equal).
CompactStrategy = Literal["truncate", "clear_tool_results", "summarize", "offload"]


class CompactRequestIn(_Body):
    """``POST /v1/sessions/{id}/compact``: the CLI's ``compact`` options."""

    budget: JsonInt = Field(
        ge=1,
        le=MAX_BUDGET,
        description="Tokens for the history: its share of the window (the CLI's --budget).",
    )
    strategy: CompactStrategy = "summarize"
    force: bool = Field(False, description="Compact even under the trigger threshold.")
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None

    def for_session(self, session_id: str) -> CompactRequest:
        """The compaction this body asks for in ``session_id``."""
        from .compacting import CompactRequest

        return CompactRequest(
            session_id=session_id,
            budget=self.budget,
            strategy=self.strategy,
            force=self.force,
            user_id=self.user_id,
            agent_id=self.agent_id,
        )


class CreateKeyRequest(_Body):
    tenant: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    ]
    name: Annotated[str, Field(max_length=200), AfterValidator(check_text)] = ""


class WindowToolIn(WindowRequestIn):
    """MCP ``assemble_window``: the HTTP window body plus the session it is for."""

    session_id: ScopeId | None = None


class CompactToolIn(CompactRequestIn):
    """MCP ``compact_session``: the HTTP compaction body plus the session it is for."""

    session_id: ScopeId


Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model], /, **fields: Any) -> Model:
    """Validate tool arguments with an HTTP model (None means "not given": the
    model's default applies); ValueError with one line per problem when invalid.
    ``model`` is positional-only: a tool may take a ``model`` argument of its own
    (``assemble_window``'s model name)."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise ValueError(describe(exc.errors())) from None


# -- responses ------------------------------------------------------------------------


class _Out(BaseModel):
    """A response read straight off the library's dataclass of the same fields, so
    adding a field to a record cannot leave its HTTP shape behind unnoticed."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, value: Any) -> Self:
        return cls.model_validate(value)


Item = TypeVar("Item")


class Results(BaseModel, Generic[Item]):
    """Every list response has one shape: its items under ``results``. A route's
    model subclasses ``Results[ItemOut]`` so the OpenAPI schema keeps its own name."""

    results: list[Item]


class Page(Results[Item], Generic[Item]):
    """A list read page by page: the ``limit`` and ``offset`` the request used."""

    limit: int | None = None
    offset: int | None = None


class RecordOut(_Out):
    id: str
    text: str
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    memory_type: str
    metadata: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None
    event_time: datetime | None
    valid_from: datetime | None
    valid_to: datetime | None
    provenance: list[str]


class RecordList(Page[RecordOut]):
    #: Where the next page starts (``offset`` + the memories of this one); null when
    #: this page reached the end. A page may be shorter than its ``limit`` and still
    #: have a next one (``MAX_PAGE_BYTES``).
    next_offset: int | None = None
    #: The key the next page starts after (pass it as ``after``): unlike the offset,
    #: it skips and repeats nothing while other clients write. Null at the end.
    next_after: str | None = None


class HitOut(_Out):
    memory: RecordOut = Field(validation_alias=AliasChoices("memory", "record"))
    score: float
    lexical_rank: int | None
    dense_rank: int | None
    tokens: int
    relevance: float | None = None


class HitList(Results[HitOut]):
    #: True when hits past ``MAX_PAGE_BYTES`` (4 MiB) of text and metadata were left
    #: out (at least one hit is always sent): ask with a smaller ``limit`` or a
    #: ``token_budget``.
    cut: bool = False


class HistoryOut(_Out):
    memory_id: str
    event: str
    old_text: str | None
    new_text: str | None
    at: datetime
    actor: str


class HistoryList(Results[HistoryOut]):
    #: The ``after_seq`` of the next page (the number of this page's last event, the
    #: first being 0); null when this page reached the end. A page may hold fewer than
    #: ``limit`` events and still have a next one (``MAX_PAGE_BYTES`` of their texts).
    next_after_seq: int | None = None


#: ``pending`` of an erasure that committed but left old bytes in the file (202).
PENDING = (
    "Erased (no read finds it), but the erasure is not finished on disk: why (an open "
    "reader of the SQLite file kept old pages in its write-ahead log, or the file could "
    "not be rebuilt), and what finishes it."
)


class Deleted(BaseModel):
    deleted: str
    purged: bool = Field(False, description="The text was also removed from history.")
    pending: str | None = Field(default=None, description=PENDING)


class Forgotten(BaseModel):
    """What a forget erased: the target as given (``user_id`` or ``session_id``; the
    other is left out of the answer), how many memories went (``forgotten``), and how
    many session logs and turns of them (the CLI's ``--json`` names); ``pending`` (with
    HTTP 202) when the erasure committed but old bytes of it remain in the file.

    Why the logs' counts: a forget that erased a session of 500 turns (and no memory)
    answered ``forgotten: 0``, read as "nothing was erased" (a review)."""

    user_id: str | None = None
    session_id: str | None = None
    forgotten: int = Field(description="Memories erased.")
    sessions_forgotten: int = Field(
        0, description="Session logs emptied (a log other users' turns keep is not one)."
    )
    turns_forgotten: int = Field(0, description="Session log turns erased.")
    pending: str | None = Field(default=None, description=PENDING)


class ToolCallOut(_Out):
    """A tool call of an assistant turn: its id, the tool's name and the arguments as the
    model wrote them (a JSON text, not parsed: it may not be valid JSON)."""

    id: str
    name: str
    arguments: str


class TurnOut(_Out):
    session_id: str
    seq: int
    role: str
    content: str
    name: str | None
    tool_call_id: str | None
    #: What an assistant turn asked tools to do (logged by the library or a wrapped SDK
    #: call; this API cannot log one). Left out, an agent's step showed as an empty turn
    #: (a review of the inspector).
    tool_calls: list[ToolCallOut] = Field(default_factory=list)
    #: The message's metadata as logged (what ``POST .../turns`` took, a wrapped call's
    #: usage): accepted and stored, it was never given back (a review).
    metadata: dict[str, Any] = Field(default_factory=dict)
    tokens: int
    created_at: datetime

    @classmethod
    def of(cls, value: Any) -> Self:
        """A logged :class:`~contextos.types.Turn`, its message's fields beside its own
        (its metadata without the count's stamp, as a ``Session`` gives it)."""
        from ..engine.session import COUNTED_KEY

        message = vars(value.message)
        meta = {k: v for k, v in value.message.metadata.items() if k != COUNTED_KEY}
        return cls.model_validate({**message, **vars(value), "metadata": meta})


class TurnList(Results[TurnOut]):
    #: The ``after_seq`` of the next page (this page's last seq); null when this page
    #: reached the end. A page may hold fewer than ``limit`` turns and still have a
    #: next one (``MAX_PAGE_BYTES``).
    next_after_seq: int | None = None


class AppendedTurns(Results[TurnOut]):
    #: Why a turn just logged can never be in a window (a tool result whose assistant
    #: call is not in the log, which this API cannot log): the turn is kept, as the
    #: log keeps what happened, and the client is told (``engine.session.never_sent``).
    warnings: list[str] = Field(default_factory=list)


class SessionList(Page[str]):
    #: In id order (``order=id`` or ``after``): the next page's key (the last id of this
    #: one; pass it as ``after``), null at the end.
    next_after: str | None = None


class BlockOut(BaseModel):
    segment: str
    role: str
    text: str
    tokens: int


class LeftOut(BaseModel):
    segment: str
    key: str
    tokens: int
    reason: str


class LeftOutCount(BaseModel):
    segment: str
    count: int
    tokens: int


class BreakpointOut(BaseModel):
    after_block: int = Field(description="The index in `blocks` the cached prefix ends with.")
    ttl: str
    segment: str
    prefix_tokens: int


class WindowOut(BaseModel):
    text: str
    tokens: int
    budget: int
    memory_ids: list[str]
    blocks: list[BlockOut]
    left_out: list[LeftOut] = Field(
        description=f"What did not fit and why: of each segment its last {MAX_LEFT_OUT} items "
        "(in the turns, the newest left out); the rest are counted in left_out_not_listed."
    )
    left_out_count: int = Field(description="Items left out in all, listed or not.")
    left_out_not_listed: list[LeftOutCount] = Field(
        description="Per segment, the items left out beyond those listed, and their tokens."
    )
    breakpoints: list[BreakpointOut] = Field(
        default_factory=list,
        description="Where the window's cache breakpoints are planned, in block order.",
    )
    request: dict[str, Any] | None = Field(
        None,
        description="With `format`: the provider's request body for this window "
        "(cache.render.render_anthropic or render_openai); else null.",
    )


class CompactionOut(BaseModel):
    """What a compaction did: the CLI's ``compact --json``, field for field."""

    compacted: bool = Field(description="A plan was made and saved.")
    plan: dict[str, Any] | None = Field(
        description="strategy, rotate (seqs), clear (seqs), before_tokens, after_tokens, "
        "notes; null when under the trigger (without force) or nothing can be compacted."
    )
    state: dict[str, Any] = Field(description="The session's compaction state after it.")
    archived: int = Field(description="Memories stored by offload.")
    raced: bool = Field(
        description="Always false in a 200: a compaction that lost the race to another "
        "writer is a 409 (nothing was done; retrying is safe)."
    )
    reason: Literal["under_trigger", "only_recent_or_pinned", "raced"] | None = Field(
        None,
        description="Why nothing was compacted: the history is under the trigger (without "
        "force), or only recent or pinned turns are left; null when it compacted.",
    )


class KeyOut(_Out):
    id: str
    tenant: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class KeyList(Page[KeyOut]):
    pass


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail
