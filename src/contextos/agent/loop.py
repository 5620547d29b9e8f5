"""The tool loop behind ``wrap(client, ..., memory_tools=True)``.

Each ``create`` call gets the memory tools added to ``tools`` and the
core-memory snapshot added to the system prompt (where it is part of the
cached prefix), then: send, run every memory tool the model called, send the
results back, until the model answers (or calls a tool that is not ours: that
response is the caller's to handle). Every request goes through the wrapped
client's normal path, so each one is assembled, logged in the session and
recorded in ``client.calls`` with its usage.

A response that calls the caller's tools *and* ours (parallel tool use): our
calls are run at once and the response is returned as is. Both APIs want a
result for every call in the very next user turn, and the caller sends results
for its own tools only, so when a later request carries the caller's results
for that response, the loop puts ours beside them, in the same turn (Anthropic:
``tool_result`` blocks after the caller's; OpenAI: ``tool`` messages after the
caller's), replacing any stand-in result the caller sent for one of ours. The
request, and the session log it is logged into, then answer every call. Once logged,
ours are read back from the log for a later request that carries that turn and that
this loop has not kept them for (a restart; :mod:`contextos.agent.hidden`).

The memory-tool calls run before the response returned, and their results, are logged
but never handed to the app: a later request that carries that response (an app that
re-sends its whole conversation, or its last N messages) gets them put back before it,
as the log holds them (:mod:`contextos.agent.hidden`), so the session does not read the
request as a branch.

With Anthropic's server-side ``clear_tool_uses_20250919`` edit in ``context_management``,
the core edits are added to its ``exclude_tools``: their call and result are how the
model sees its own edit until the pinned snapshot's next refresh (:class:`CorePrefix`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..cache import field_of
from ..errors import ProviderError
from ..types import Message, ToolCall
from .core_memory import CorePrefix, compaction_point
from .hidden import HiddenExchanges
from .tools import TOOL_NAMES, AgentTools, ToolOutcome, anthropic_schemas, openai_schemas

#: Most model calls one ``create`` may make before giving up on a looping model.
MAX_STEPS = 8
#: Tool calls kept in :attr:`ToolLoop.executed` (each one's arguments may be 100,000
#: characters: every call kept grew a long-lived client by that much).
MAX_EXECUTED = 32
#: Seconds a failed ``create()``'s progress waits for the app's retry: an SDK's own
#: retries and an app's backoff take seconds to a minute or two.
RESUME_WITHIN_S = 600.0
#: The tools whose call and result are the model's only view of its edit until the pinned
#: snapshot is rendered again: a server-side clearing edit is told to keep them.
CORE_EDIT_TOOLS = ("core_memory_append", "core_memory_replace")


class ToolLoop:
    """Runs the memory tools for a wrapped client of ``provider`` ("anthropic"/"openai")."""

    def __init__(
        self,
        tools: AgentTools,
        provider: str,
        *,
        prefix: CorePrefix | None = None,
        max_steps: int = MAX_STEPS,
        resume_within_s: float = RESUME_WITHIN_S,
        edits_wait: bool = True,
        flush: Callable[[], None] | None = None,
    ) -> None:
        if provider not in ("anthropic", "openai"):
            raise ValueError(f"no tool loop for provider {provider!r}")
        self.tools = tools
        self.provider = provider
        self.prefix = prefix or CorePrefix(tools.core)
        tools.prefix = self.prefix
        self.max_steps = max_steps
        #: Whether this loop's own core edits wait in the history for the snapshot's next
        #: compaction point. False for a session that never compacts (``wrap(...,
        #: compaction=None)``): its window drops the edit's call and result once the
        #: history outgrows the budget, and no compaction point ever comes, so the model
        #: saw the edit nowhere (a review); the snapshot is rendered again at the next
        #: ``create()`` after an edit instead (:meth:`CorePrefix.catch_up`).
        self.edits_wait = edits_wait
        #: Waits for the wrapped client's last reply to be logged (its background
        #: commit): the log is read to put our exchanges back into a request
        #: (:mod:`.hidden`), and must end with that reply.
        self.flush = flush
        self._hidden = HiddenExchanges(provider)
        #: Seconds a failed ``create()``'s progress is kept for its retry (:meth:`_resume`).
        self.resume_within_s = resume_within_s
        #: The last :data:`MAX_EXECUTED` tool calls run, oldest first (name, arguments
        #: JSON, outcome); bounded: a client lives as long as its process.
        self.executed: deque[tuple[str, str, ToolOutcome]] = deque(maxlen=MAX_EXECUTED)
        #: Our results owed beside the caller's, per response that called both
        #: (:meth:`_with_owed_results`), newest last; at most :data:`MAX_OWED` kept,
        #: and those read back from the log (:meth:`_owed_from_log`) with them.
        self._owed: list[_Owed] = []
        #: The progress of ``create()`` calls whose request failed mid-loop, by their
        #: messages (:meth:`_keep`); oldest first.
        self._unfinished: dict[str, _Unfinished] = {}
        self._lock = threading.Lock()  # guards _owed and _unfinished
        #: The last snapshots placed in a request (:meth:`_with_memory`): a ``create()``'s
        #: requests all carry the one placed at its start, rendered again after a
        #: compaction (:meth:`after_compaction`).
        self._placed: deque[str] = deque(maxlen=MAX_PLACED)

    def create(
        self, send: Callable[[dict[str, Any]], Any], reply: Callable[[Any], Message], **kwargs: Any
    ) -> Any:
        """Send ``kwargs`` with the memory tools, running them until the model answers.

        A request of the loop that fails (after the SDK's own retries) raises, and the
        loop's progress is kept: the app's retry of the same ``create()`` (the same
        messages) sends the failed request again, with the results of the tools run
        already, instead of starting over (see :class:`_Unfinished`); a restarted
        process, or a client made again, reads that progress back from the end of the
        session's log (:meth:`_logged_progress`). A tool that
        raises (its store busy or down) keeps the progress too: the retry runs the
        response's calls not run yet, then goes on, without asking the model again.

        A ``tool_choice`` that forces a tool call goes out as given on the first request
        and relaxed to auto on each follow-up carrying our results (:func:`_relaxed`). A
        caller's tool named like one of ours is refused (``TypeError``) before anything
        is sent (:func:`_refuse_our_names`).
        """
        if kwargs.get("stream"):
            raise TypeError("memory_tools runs a tool loop; call create() without stream=True")
        _refuse_our_names(kwargs.get("tools"))
        self._drop_stale()
        if not self.edits_wait:
            self.prefix.catch_up()
        hidden = self._with_hidden(self._with_owed_results(kwargs))
        key = _messages_key(kwargs.get("messages"))
        done = self._resume(key, hidden.get("messages"))
        request = self._with_memory(hidden)
        messages = [*request["messages"], *done.messages]
        step, response = done.steps, done.calling
        while True:
            if response is None:  # the next request
                step += 1
                body = {**request, "messages": messages}
                try:
                    response = send(_relaxed(body, self.provider) if done.messages else body)
                except BaseException:
                    self._keep(key, done)
                    raise
            calls = reply(response).tool_calls
            if not calls:
                return response
            mixed = any(c.name not in TOOL_NAMES for c in calls)
            if not mixed and step >= self.max_steps:  # no request left for these results
                break
            ran = list(done.ran)
            try:  # mixed: ours run now, their results go out with the caller's (module doc)
                self._run([c for c in calls if c.name in TOOL_NAMES], ran)
            except BaseException:  # a tool's store down or busy: its retry runs the rest
                self._keep(key, replace(done, steps=step, calling=response, ran=tuple(ran)))
                raise
            if mixed:
                if ran:
                    owed = _Owed(frozenset(c.id for c in calls), tuple(ran))
                    with self._lock:
                        self._owed = [*self._owed, owed][-MAX_OWED:]
                return response
            followup = self._followup(response, ran)
            messages += followup
            done = _Unfinished((*done.messages, *followup), step)
            response = None
        raise ProviderError(f"the model was still calling tools after {self.max_steps} requests")

    def _resume(self, key: str, messages: Any) -> _Unfinished:
        """The progress kept for a ``create()`` with these messages (``key``), taken, so
        only one retry resumes it; else the progress the log ends with after ``messages``
        (the request's, our exchanges put back: :meth:`_logged_progress`); else nothing."""
        with self._lock:
            done = self._unfinished.pop(key, None)
        if done is None:
            return self._logged_progress(messages)
        if done.kept_at is not None and time.monotonic() - done.kept_at > self.resume_within_s:
            self._dropped([done])
            return _Unfinished()  # no retry: a new question in the same words
        return done

    def _drop_stale(self) -> None:
        """Drop the kept progress no retry came for within :attr:`resume_within_s`
        (:meth:`_dropped`)."""
        now = time.monotonic()
        with self._lock:
            stale = [
                key
                for key, done in self._unfinished.items()
                if done.kept_at is not None and now - done.kept_at > self.resume_within_s
            ]
            dropped = [self._unfinished.pop(key) for key in stale]
        self._dropped(dropped)

    def _dropped(self, dropped: Sequence[_Unfinished]) -> None:
        """Render the snapshot again at this ``create()`` when progress dropped unused
        ran tools: the edits it made were meant to reach the model as their calls and
        results in the retried request, which never came.

        Why: an app that gave up on a failed ``create()`` and asked something else in a
        way that leaves the exchange out of its window (a branch) left the model with
        its own edit nowhere: the snapshot waited for a compaction point (a review). Only
        for progress that called a core edit: a re-render of the snapshot is a write of
        the whole cached prefix, and a loop that only searched changed nothing in it (a
        review of the first fix)."""
        if any(_core_edited(d) for d in dropped):
            self.prefix.catch_up()

    def _logged_progress(self, messages: Any) -> _Unfinished:
        """The progress of a ``create()`` of ``messages`` cut between its requests, as the
        log ends with it (our tool exchanges after those messages, no answer), logged
        within :attr:`resume_within_s`; nothing done when the log does not end so.

        Why: kept in memory only, the progress was lost with the process. A supervisor's
        restarted worker retried the ``create()``, the loop started over: the question
        was logged a second time and the model, asked again after its own edit, made it
        again (a review). Read back, the retry resumes as in the same process."""
        session = self.tools.session
        if session is None or not isinstance(messages, list):
            return _Unfinished()
        if self.flush is not None:
            self.flush()
        found = self._hidden.unfinished(messages, session)
        if found is None or time.time() - found.logged_at > self.resume_within_s:
            return _Unfinished()
        return _Unfinished(found.messages, found.steps)

    def _keep(self, key: str, done: _Unfinished) -> None:
        """Keep ``done`` for the retry of a ``create()`` whose request failed after the
        loop's first, or whose tool failed (at most :data:`MAX_UNFINISHED`, newest kept)."""
        if not done.messages and done.calling is None:
            return  # the first request failed: the app's retry is a plain retry
        dropped = []
        with self._lock:
            self._unfinished[key] = replace(done, kept_at=time.monotonic())
            while len(self._unfinished) > MAX_UNFINISHED:
                dropped.append(self._unfinished.pop(next(iter(self._unfinished))))
        self._dropped(dropped)

    def _run(
        self, calls: Sequence[ToolCall], ran: list[tuple[str, ToolOutcome]] | None = None
    ) -> list[tuple[str, ToolOutcome]]:
        """Run our ``calls`` in order: (call id, outcome) each, appended to ``ran`` as
        each is done (kept in ``executed``); a call ``ran`` holds already (run before a
        later one failed) is not run again."""
        ran = [] if ran is None else ran
        already = {cid for cid, _ in ran}
        for c in calls:
            if c.id in already:
                continue
            outcome = self.tools.execute(c.name, c.arguments)
            self.executed.append((c.name, c.arguments, outcome))
            ran.append((c.id, outcome))
        return ran

    def _with_owed_results(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with our owed results put beside the caller's results for the same
        response (Anthropic: in the same user turn; OpenAI: after the caller's ``tool``
        messages), each time a request carries them: a retry, or a caller that re-sends
        the whole conversation, says the same turn again, as the session logged it."""
        messages = kwargs.get("messages")
        if not isinstance(messages, list):
            return kwargs
        self._owed_from_log(messages)
        with self._lock:
            owed = list(self._owed)
        if not owed:
            return kwargs
        if self.provider == "anthropic":
            out = [_anthropic_with_owed(m, owed) for m in messages]
        else:
            out = _openai_with_owed(messages, owed)
        return {**kwargs, "messages": out}

    def _owed_from_log(self, messages: list[Any]) -> None:
        """Keep in :attr:`_owed` our results for each response in ``messages`` that called
        the caller's tools and ours, as the log holds them, when not kept yet: a restarted
        process, a client made again, or a response past :data:`MAX_OWED` (:mod:`.hidden`)."""
        session = self.tools.session
        if session is None:
            return
        with self._lock:
            held = {group.calls for group in self._owed}
        found = self._hidden.results_owed(messages, session, held, self.flush)
        if found:
            with self._lock:
                self._owed = [*self._owed, *(_Owed(c, r) for c, r in found)][-MAX_OWED:]

    def _with_hidden(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the exchanges of our tools the log holds between two of its
        messages put back (:mod:`.hidden`)."""
        messages, session = kwargs.get("messages"), self.tools.session
        if session is None or not isinstance(messages, list) or len(messages) < 2:
            return kwargs
        if self.flush is not None:
            self.flush()
        out = self._hidden.put_back(messages, session, tail=not _thinking(kwargs))
        return kwargs if out is messages else {**kwargs, "messages": out}

    def after_compaction(self, system: tuple[str, ...]) -> tuple[str, ...]:
        """``system`` (a call's system parts, once its compaction is done) with the
        snapshot :meth:`_with_memory` placed last rendered again when that compaction
        moved the compaction point: the context's ``system_after_compaction``.

        Why: rendered before the call only, the snapshot moved one call after the
        compaction that rebuilt the prefix anyway. The compacting call, whose window no
        longer held the edit's call and result, showed the model its edit nowhere, and
        the next call rewrote the prefix a second time (a review)."""
        if not system or system[-1] not in self._placed:
            return system  # not a snapshot of ours (another loop's, or none)
        core = self.prefix.text(compaction_point(self.tools.session))
        self._placed.append(core)
        return (*system[:-1], core)

    def _with_memory(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        core = self.prefix.text(compaction_point(self.tools.session))
        self._placed.append(core)
        out = dict(kwargs)
        if self.provider == "anthropic":
            system = kwargs.get("system") or []
            blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
            out["system"] = [*blocks, _core_block(blocks, core)]
            out["tools"] = [*(kwargs.get("tools") or []), *anthropic_schemas()]
            managed = _keeping_core_edits(kwargs.get("context_management"))
            if managed is not None:
                out["context_management"] = managed
        else:
            messages = list(kwargs.get("messages") or [])
            head = 0
            while head < len(messages) and messages[head].get("role") in ("system", "developer"):
                head += 1
            role = messages[0]["role"] if head else "system"
            messages.insert(head, {"role": role, "content": core})
            out["messages"] = messages
            out["tools"] = [*(kwargs.get("tools") or []), *openai_schemas()]
        return out

    def _followup(self, response: Any, outcomes: list[tuple[str, ToolOutcome]]) -> list[Any]:
        """The assistant's tool-call message and the results, in the provider's wire form."""
        if self.provider == "anthropic":
            content = [b.model_dump(exclude_none=True) for b in response.content]
            results = [_anthropic_result(cid, o) for cid, o in outcomes]
            return [
                {"role": "assistant", "content": content},
                {"role": "user", "content": results},
            ]
        message = response.choices[0].message
        calls = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in message.tool_calls or []
        ]
        return [
            {"role": "assistant", "content": message.content, "tool_calls": calls},
            *(_openai_result(cid, o) for cid, o in outcomes),
        ]


#: Responses that called both kinds of tool whose results a :class:`ToolLoop` keeps.
MAX_OWED = 256
#: Snapshots a :class:`ToolLoop` knows as its own in a request's system prompt (a few
#: ``create()`` calls at once, each rendered before and after a compaction).
MAX_PLACED = 8
#: ``create()`` calls failed mid-loop whose progress a :class:`ToolLoop` keeps.
MAX_UNFINISHED = 64


@dataclass(frozen=True)
class _Unfinished:
    """How far a ``create()`` got: the messages the loop added after the app's (each
    tool-call reply and its results, in wire form), and the requests that took.

    Why kept: when a later request of the loop fails (a 529 after the SDK's retries),
    the session has logged the question, the tool calls and their results. The app
    retries its ``create()`` as it would any failed call; started over, the loop sent
    the question again after that tool exchange (logged twice) and ran the tools
    again. Resumed, it sends the failed request again, which the session recognises
    as a retry (nothing logged twice).
    """

    messages: tuple[Any, ...] = ()
    steps: int = 0
    #: A response whose tool calls did not all run (a tool's store was down or busy:
    #: the call raised), and those that did; its retry runs the rest instead of asking
    #: the model again (which logged the question twice and ran the tools again).
    calling: Any = None
    ran: tuple[tuple[str, ToolOutcome], ...] = ()
    #: When it was kept (``time.monotonic()``): a ``create()`` with the same messages
    #: long after (``ToolLoop.resume_within_s``) is a new question, not its retry, and
    #: resumed it ran a stale response's tool calls and answered with its reply (a review).
    kept_at: float | None = None


def _messages_key(messages: Any) -> str:
    """The app's messages of a ``create()`` as a key: its retry sends the same."""
    return json.dumps(messages, sort_keys=True, default=str)


@dataclass(frozen=True)
class _Owed:
    """Our results for a response that also called the caller's tools: ``calls`` is
    every call id of that response, ``results`` ours as (call id, outcome)."""

    calls: frozenset[str]
    results: tuple[tuple[str, ToolOutcome], ...]

    @property
    def ours(self) -> frozenset[str]:
        return frozenset(cid for cid, _ in self.results)

    def answered_by(self, ids: set[str]) -> bool:
        """Whether results for ``ids`` answer one of the caller's calls of the response."""
        return bool(ids & (self.calls - self.ours))


def _core_edited(progress: _Unfinished) -> bool:
    """Whether kept progress called a core-memory edit (:data:`CORE_EDIT_TOOLS`): its
    assistant messages' tool calls, either API's wire form, or the response whose calls
    did not all run."""
    messages = [*progress.messages]
    if progress.calling is not None:
        messages.append({"content": field_of(progress.calling, "content")})
        for choice in field_of(progress.calling, "choices") or []:
            messages.append({"tool_calls": field_of(field_of(choice, "message"), "tool_calls")})
    for message in messages:
        blocks = field_of(message, "content")
        uses = (
            [b for b in blocks if field_of(b, "type") == "tool_use"]
            if isinstance(blocks, list)
            else []
        )
        functions = [field_of(c, "function") for c in field_of(message, "tool_calls") or []]
        if any(field_of(c, "name") in CORE_EDIT_TOOLS for c in [*uses, *functions]):
            return True
    return False


def _thinking(kwargs: Mapping[str, Any]) -> bool:
    """Whether an (Anthropic) request has extended thinking on (as ``thinking=``, or in
    ``extra_body``, which the SDK merges into the body)."""
    extra = kwargs.get("extra_body")
    thinking = kwargs.get("thinking")
    if isinstance(extra, Mapping) and "thinking" in extra:
        thinking = extra["thinking"]
    return isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled")


def _tool_name(tool: Any) -> Any:
    """The name of a caller's tool as either API lists it (Anthropic: ``name``; OpenAI:
    ``function.name`` or ``custom.name``), or None."""
    name = field_of(tool, "name")
    if name is None:
        for kind in ("function", "custom"):
            inner = field_of(tool, kind)
            if inner is not None and (name := field_of(inner, "name")) is not None:
                break
    return name


def _refuse_our_names(tools: Any) -> None:
    """Refuse a caller's tool named as one of the memory tools, before anything is sent.

    Why: the loop appends its own five, so the request named the tool twice (the
    Messages API answers such a request with a 400, "tools: Tool names must be
    unique."), and the loop ran the model's calls of the caller's tool as its own,
    never handing them to the caller (a review)."""
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        return
    for tool in tools:
        name = _tool_name(tool)
        if isinstance(name, str) and name in TOOL_NAMES:
            raise TypeError(
                f"tools: {name!r} is one of memory_tools' own tools (the loop adds and "
                "runs it); rename yours, or wrap without memory_tools"
            )


def _relaxed(body: dict[str, Any], provider: str) -> dict[str, Any]:
    """``body`` (a follow-up carrying our tools' results) with a ``tool_choice`` that
    forces a call of our tools no longer forcing it.

    A choice naming one of ours (Anthropic ``{"type": "tool"}``, OpenAI a named function
    or custom tool, ``allowed_tools`` in ``"required"`` mode listing only ours) goes to
    auto. Any tool (Anthropic ``{"type": "any"}``, OpenAI ``"required"``): to auto when
    the caller has no tools of its own; to the caller's tool by name when it has one;
    with several, OpenAI to ``allowed_tools`` in ``"required"`` mode listing the
    caller's, Anthropic (which cannot force one of a few) to auto. Anthropic keeps
    ``disable_parallel_tool_use``.

    Why: both APIs make the model call a tool in every response while the choice is
    forced, so after each of our results it called ours again: the same edit made
    seven times, then ``ProviderError`` (a review). And why not always auto: an app that
    forces a call of its own tool (structured output) must still get it after the model
    used ours first (a review of the first fix)."""
    choice = body.get("tool_choice")
    apps = [t for t in body.get("tools") or [] if _tool_name(t) not in TOOL_NAMES]
    if provider == "anthropic":
        if not isinstance(choice, Mapping) or choice.get("type") not in ("any", "tool"):
            return body
        kept = {k: v for k, v in choice.items() if k == "disable_parallel_tool_use"}
        if choice.get("type") == "any" and len(apps) == 1:
            return {**body, "tool_choice": {"type": "tool", "name": _tool_name(apps[0]), **kept}}
        return {**body, "tool_choice": {"type": "auto", **kept}}
    if choice == "required":
        named = [_openai_choice(t) for t in apps]
        if len(named) > 1:
            listed = {"mode": "required", "tools": named}
            return {**body, "tool_choice": {"type": "allowed_tools", "allowed_tools": listed}}
        return {**body, "tool_choice": named[0] if named else "auto"}
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind in ("function", "custom"):
            return {**body, "tool_choice": "auto"}  # it named ours: the first step called it
        allowed = choice.get("allowed_tools")
        if (
            kind == "allowed_tools"
            and isinstance(allowed, Mapping)
            and allowed.get("mode") == "required"
            and all(_tool_name(t) in TOOL_NAMES for t in allowed.get("tools") or [])
        ):
            relaxed = {**allowed, "mode": "auto"}
            return {**body, "tool_choice": {**choice, "allowed_tools": relaxed}}
    return body


def _openai_choice(tool: Any) -> dict[str, Any]:
    """The ``tool_choice`` that names an OpenAI tool: ``{"type": "function", "function":
    {"name": ...}}``, or ``custom`` for a custom (free-form) tool."""
    kind = "custom" if field_of(tool, "type") == "custom" else "function"
    return {"type": kind, kind: {"name": _tool_name(tool)}}


def _anthropic_with_owed(message: Any, owed: Sequence[_Owed]) -> Any:
    """A user turn carrying the caller's ``tool_result`` blocks for a response in
    ``owed``, with ours after theirs (and before any other block, as the API wants)."""
    if not isinstance(message, Mapping) or message.get("role") != "user":
        return message
    content = message.get("content")
    if not isinstance(content, list):
        return message
    ids = {
        str(b.get("tool_use_id"))
        for b in content
        if isinstance(b, Mapping) and b.get("type") == "tool_result"
    }
    for group in owed:
        if not group.answered_by(ids):
            continue
        kept = [
            b
            for b in content
            if not (
                isinstance(b, Mapping)
                and b.get("type") == "tool_result"
                and b.get("tool_use_id") in group.ours
            )
        ]
        at = max(
            (
                i + 1
                for i, b in enumerate(kept)
                if isinstance(b, Mapping) and b.get("type") == "tool_result"
            ),
            default=0,
        )
        content = [*kept[:at], *(_anthropic_result(c, o) for c, o in group.results), *kept[at:]]
        return {**message, "content": content}
    return message


def _openai_with_owed(messages: list[Any], owed: Sequence[_Owed]) -> list[Any]:
    """``messages`` with our ``tool`` messages after each run of the caller's ``tool``
    messages that answers a response in ``owed``."""

    def is_tool(m: Any) -> bool:
        return isinstance(m, Mapping) and m.get("role") == "tool"

    out: list[Any] = []
    i = 0
    while i < len(messages):
        if not is_tool(messages[i]):
            out.append(messages[i])
            i += 1
            continue
        run = []
        while i < len(messages) and is_tool(messages[i]):
            run.append(messages[i])
            i += 1
        ids = {str(m.get("tool_call_id")) for m in run}
        for group in owed:
            if group.answered_by(ids):
                run = [m for m in run if m.get("tool_call_id") not in group.ours]
                run += [_openai_result(c, o) for c, o in group.results]
                break
        out += run
    return out


def _core_block(system: Sequence[Any], core: str) -> dict[str, Any]:
    """The core-memory snapshot as the system text block after the caller's ``system``
    blocks, with the ``cache_control`` mark of the caller's last non-blank block, if any
    (blank blocks are not sent).

    Why: the wrapper reads an unmarked system block after the caller's last mark as one
    that changes per call (a timestamp) and places no breakpoint after it. The snapshot
    is byte-stable between compaction points (:class:`CorePrefix`), yet with an app that
    marks its system prompt, as Anthropic's caching guide has it, it was read as such a
    block: no request of a ``memory_tools`` session cached its history (a review). After a
    caller's unmarked block the snapshot follows a changing block and stays unmarked.
    """
    block = {"type": "text", "text": core}
    written = [b for b in system if str(field_of(b, "text") or "").strip()]
    mark = field_of(written[-1], "cache_control") if written else None
    return {**block, "cache_control": mark} if mark else block


def _keeping_core_edits(managed: Any) -> dict[str, Any] | None:
    """``context_management`` with :data:`CORE_EDIT_TOOLS` added to the ``exclude_tools``
    of each ``clear_tool_uses_20250919`` edit; None when it has no such edit.

    Why: the pinned snapshot is rendered again at the session's next compaction point,
    and until then the model sees its own edit only as the call and its result in the
    history. The server cleared them (with ``clear_tool_inputs``, the call's arguments
    too) and the model saw the edit nowhere until the session compacted (a review)."""
    edits = managed.get("edits") if isinstance(managed, Mapping) else None
    if not isinstance(edits, list) or not any(map(_clears_tool_uses, edits)):
        return None
    out = [
        {**e, "exclude_tools": [*kept, *(n for n in CORE_EDIT_TOOLS if n not in kept)]}
        if _clears_tool_uses(e) and isinstance(kept := e.get("exclude_tools") or [], list)
        else e
        for e in edits
    ]
    return {**managed, "edits": out}


def _clears_tool_uses(edit: Any) -> bool:
    return isinstance(edit, Mapping) and edit.get("type") == "clear_tool_uses_20250919"


def _anthropic_result(call_id: str, outcome: ToolOutcome) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": outcome.text} | (
        {"is_error": True} if outcome.is_error else {}
    )


def _openai_result(call_id: str, outcome: ToolOutcome) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": outcome.text}


def tool_loop_for_wrap(
    option: Any,
    provider: str,
    *,
    memory: Any,
    context: Any,
    user_id: str | None,
    agent_id: str | None,
) -> ToolLoop:
    """The loop ``wrap(memory_tools=...)`` asks for: True builds one, a ToolLoop is used as is."""
    flush = getattr(context, "flush", None)
    if isinstance(option, ToolLoop):
        if option.flush is None:
            option.flush = flush
        return _rendered_after_compaction(option, context)
    if option is not True:
        raise TypeError("memory_tools must be True, False or a contextos.agent.ToolLoop")
    if memory is None:
        raise TypeError("memory_tools=True needs memory= (core and archival memory live there)")
    from .core_memory import CoreMemory

    session = getattr(context, "session", None)
    core = CoreMemory(
        memory,
        user_id=user_id or getattr(context, "user_id", None),
        agent_id=agent_id or getattr(context, "agent_id", None),
    )
    # A session that never compacts has no compaction point for own edits to wait for.
    waits = getattr(context, "compaction", "summarize") is not None
    loop = ToolLoop(AgentTools(core, session=session), provider, edits_wait=waits, flush=flush)
    return _rendered_after_compaction(loop, context)


def _rendered_after_compaction(loop: ToolLoop, context: Any) -> ToolLoop:
    """``loop``, its snapshot rendered again by ``context`` after each call's compaction
    (:meth:`ToolLoop.after_compaction`), where the context can (a session context)."""
    if hasattr(context, "system_after_compaction"):
        context.system_after_compaction = loop.after_compaction
    return loop


__all__ = [
    "CORE_EDIT_TOOLS",
    "MAX_EXECUTED",
    "MAX_OWED",
    "MAX_STEPS",
    "MAX_UNFINISHED",
    "ToolLoop",
    "tool_loop_for_wrap",
]
