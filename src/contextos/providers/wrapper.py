"""``contextos.wrap(client)``: the SDK you already use, with contextos managing the window.

    >>> import anthropic, contextos                                    # doctest: +SKIP
    >>> memory = contextos.Memory("memory.db")                          # doctest: +SKIP
    >>> client = contextos.wrap(anthropic.Anthropic(), memory=memory,   # doctest: +SKIP
    ...                         session="chat-1", user_id="ana")
    >>> client.messages.create(model="claude-haiku-4-5", max_tokens=512,  # doctest: +SKIP
    ...                        messages=[{"role": "user", "content": "What do I eat?"}])

The wrapped client has the SDK's own call shape (``messages.create`` and
``beta.messages.create`` for ``anthropic.Anthropic``, ``chat.completions.create``
for ``openai.OpenAI``, whose ``responses.create`` passes through unmanaged but
recorded; everything else is the SDK's, untouched) and returns the SDK's own response
objects, streams included. Each call:

1. assembles the window from the session log and memory (a
   :class:`~contextos.engine.context.ContextSource`; injectable),
2. renders it with cache breakpoints, sends it through the real SDK client,
3. records usage (input, output, cache writes 5m/1h, cache reads) in
   :attr:`WrappedClient.calls` and, with a session, in the session log.

Without memory and session it is a pass-through: the request goes out as
given and only usage is recorded. Streams (``stream=True``, and Anthropic's
``messages.stream(...)`` helper) come back as the SDK's stream objects;
usage is recorded when the stream ends. SDK exceptions
become :mod:`contextos.errors` (see :mod:`contextos.providers.errors`), except
those the SDKs' ``parse``/``stream`` helpers raise on a reply that came back
(recorded, then raised as the SDK raises them: :class:`_ParseInTwo`); the
SDK's own retries (``max_retries``) are the only ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from ..cache.accounting import field_of
from ..types import Message, Usage
from .base import (
    CallRecord,
    ChatRequest,
    EditReport,
    Prepared,
    ProviderAdapter,
    StreamAccumulator,
    as_wire,
    edit_report,
)
from .errors import mapped_errors
from .streams import OpenStreams, instrument

if TYPE_CHECKING:
    from contextos.engine.context import ContextOptions
    from contextos.engine.session import MemoryLike

Recorder = Callable[[CallRecord], None]
T = TypeVar("T")

log = logging.getLogger(__name__)


#: How many call records a :class:`UsageLog` keeps by default (the newest): a
#: long-running process makes calls for ever, and each record holds its reply.
KEEP_CALLS = 1000


class UsageLog:
    """The newest calls a wrapped client made, in order, and totals over all (thread-safe).

    Only the latest ``keep`` records are kept (``None``: all), because a record holds
    the reply and the messages it logged, and a server process calls for ever;
    :meth:`total` and :meth:`edits` are running sums over every call ever recorded,
    kept or not, and :attr:`count` says how many that was.

    This is the application's in-memory log, not memory: ``Memory.forget`` and
    ``delete(purge=True)`` do not reach it, and the records kept still hold what was
    said (the messages, the reply) after the user is erased from the store. An
    application that erases a user its client talked for drops them with
    :meth:`clear` (or keeps none: ``wrap(..., keep_calls=0)``).
    """

    def __init__(self, keep: int | None = KEEP_CALLS) -> None:
        if keep is not None and keep < 0:
            raise ValueError(f"keep must be None or >= 0, not {keep}")
        self._calls: deque[CallRecord] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._count = 0
        self._usage = dict.fromkeys(Usage.__dataclass_fields__, 0)
        self._edits = dict.fromkeys(EditReport.__dataclass_fields__, 0)

    def append(self, call: CallRecord) -> None:
        """Record ``call``: kept (the oldest record dropped past ``keep``), and summed."""
        edits = edit_report([call])
        with self._lock:
            self._calls.append(call)
            self._count += 1
            for name in self._usage:
                self._usage[name] += getattr(call.usage, name)
            for name in self._edits:
                self._edits[name] += getattr(edits, name)

    @property
    def keep(self) -> int | None:
        """How many records are kept (None: all)."""
        return self._calls.maxlen

    @property
    def count(self) -> int:
        """How many calls were recorded in all, the dropped ones included."""
        return self._count

    def __iter__(self) -> Iterator[CallRecord]:
        with self._lock:
            return iter(list(self._calls))

    def __len__(self) -> int:
        """How many records are kept (at most ``keep``; :attr:`count` counts all)."""
        return len(self._calls)

    @overload
    def __getitem__(self, index: int) -> CallRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[CallRecord]: ...

    def __getitem__(self, index: int | slice) -> CallRecord | list[CallRecord]:
        """A kept record by position (``[-1]`` is the latest), or a list of them."""
        with self._lock:
            if isinstance(index, slice):
                return list(self._calls)[index]
            return self._calls[index]

    def clear(self) -> None:
        """Drop every kept record, and with them the texts they hold (the totals and
        :attr:`count`, numbers only, stay)."""
        with self._lock:
            self._calls.clear()

    def total(self) -> Usage:
        """The sum of every recorded call's usage (kept or not)."""
        with self._lock:
            return Usage(**self._usage)

    def edits(self) -> EditReport:
        """What the provider's server-side context editing did, and the cache around it,
        over every recorded call (kept or not)."""
        with self._lock:
            return EditReport(**self._edits)


@contextmanager
def failing(context: Any, prepared: Prepared | None) -> Iterator[None]:
    """Around a call whose question ``prepare`` logged: if it ends before any reply,
    the question is still remembered
    (:meth:`~contextos.engine.context.SessionContext.failed`), then the error goes on to
    the caller as it was.

    Why every ``BaseException``: a Ctrl-C, or the CLI's SIGTERM/SIGHUP (a
    ``KeyboardInterrupt``), while the provider was answering left the question in the log,
    sent on every later call and never remembered (a review: ``contextos chat`` with a
    provider lost "I am vegetarian" that way). Only ``failed``'s own ``Exception`` is
    swallowed: the call's error is the one to raise."""
    try:
        yield
    except BaseException:
        # An injected source need not have it (``ContextSource`` asks for two methods).
        failed = getattr(context, "failed", None) if prepared is not None else None
        if failed is not None:
            try:
                failed(prepared)
            except Exception:  # noqa: BLE001 - the call's own error is the one to raise
                log.exception("remembering the question of a failed call failed")
        raise


class _Core:
    """Shared by the per-SDK facades: prepare, send, record."""

    def __init__(
        self,
        adapter: ProviderAdapter,
        context: Any,
        recorders: list[Recorder],
        stream_usage: bool,
        calls: UsageLog,
    ) -> None:
        self.adapter = adapter
        self.context = context
        self.calls = calls
        #: the application's callbacks (``on_call``), run after the call is recorded
        self.recorders = list(recorders)
        self.stream_usage = stream_usage
        self.tool_loop: Any = None  # a contextos.agent.ToolLoop with memory_tools
        #: streams not yet reported; every call first reports them (see streams.py), and
        #: another client's managed call of the same session log those it needs logged
        self.open_streams = OpenStreams(getattr(context, "log_key", None))
        self._on_close = _StreamsOnClose.register(self.open_streams, context)

    def passthrough(self, adapter: ProviderAdapter) -> _Core:
        """A core for another API of the same client: never managed, recorded in this log.

        It shares this core's open streams: a stream of either API that the collector
        queued is reported at the next call of either, and one its caller left at the
        client's ``flush()``, which sees only this core's set; this core's calls, never
        managed, leave the caller's open streams alone (see :meth:`_prepare`)."""
        other = _Core(adapter, None, [], stream_usage=False, calls=self.calls)
        other.recorders = self.recorders
        other.open_streams = self.open_streams
        return other

    def entry(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A managed call's arguments with its ``messages`` as plain JSON: the SDK's own
        response models (``completion.choices[0].message``, which OpenAI's tool-calling
        guide appends to ``messages``) dumped once, here, so that everything after reads
        dicts. Pass-through (nothing managed) keeps the request as given."""
        if self.context is None and self.tool_loop is None:
            return kwargs
        messages = kwargs.get("messages")
        if messages is None or isinstance(messages, (str, bytes, Mapping)):
            return kwargs  # not a list of messages: the SDK will say what is wrong
        return {**kwargs, "messages": [as_wire(m) for m in messages]}

    def _prepare(self, kwargs: dict[str, Any]) -> tuple[Prepared | None, dict[str, Any], str]:
        """Assemble and render the window (pass-through without a context source).

        First the streams the collector queued are reported, and, before a managed call,
        the managed streams this caller read part of and left: the window needs their
        replies logged (their responses are closed). A pass-through call needs nothing
        logged, so it leaves the caller's streams alone: the app may read on after it
        (see :mod:`contextos.providers.streams`)."""
        self.open_streams.before_call(managed=self.context is not None)
        if self.context is None:
            return None, kwargs, ""
        request = self.adapter.parse(kwargs)
        prepared = self.context.prepare(request, reserve_tokens=_reserve(request, kwargs))
        with failing(self.context, prepared):  # the question is logged from here on
            rendered, prefix = self.adapter.render(prepared, kwargs)
        return prepared, rendered, prefix

    def call(
        self,
        send: Callable[..., Any],
        kwargs: dict[str, Any],
        then: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Send ``kwargs`` (the window rendered into them) with ``send`` and record the
        call; ``then``: what the caller gets from a reply that is not streamed, made from
        it once the call is recorded (:class:`_ParseInTwo`), its errors unmapped."""
        prepared, kwargs, prefix = self._prepare(kwargs)
        stream = bool(kwargs.get("stream"))
        hide_usage_chunk = False
        if stream and self.adapter.name == "openai" and self.stream_usage:
            kwargs, hide_usage_chunk = _with_stream_usage(kwargs)
        started = time.perf_counter()
        with failing(self.context, prepared), mapped_errors(self.adapter.name):
            response = send(**kwargs)
        model = str(kwargs.get("model", ""))
        if not stream:
            self._finish(
                prepared,
                CallRecord(
                    self.adapter.name,
                    model,
                    self.adapter.usage(response),
                    self.adapter.reply(response),
                    False,
                    time.perf_counter() - started,
                    prefix,
                    prepared.new_messages if prepared else (),
                    _request_id(response),
                    extra=_extra(self.adapter, response),
                ),
            )
            return response if then is None else then(response)
        return self.observe(
            response,
            prepared,
            prefix,
            model,
            started,
            hide=_usage_only if hide_usage_chunk else None,
        )

    def observe(
        self,
        stream: Any,
        prepared: Prepared | None,
        prefix: str,
        model: str,
        started: float,
        hide: Callable[[Any], bool] | None = None,
    ) -> Any:
        """Instrument an SDK stream so its usage is recorded when it ends."""
        acc = self.adapter.accumulator()

        def done(recorded: Callable[[], None]) -> None:
            record = _stream_record(self.adapter.name, model, acc, started, prefix, prepared)
            self._finish(prepared, record, recorded)

        return instrument(
            stream,
            acc,
            done,
            provider=self.adapter.name,
            hide=hide,
            open_streams=self.open_streams,
            commits=prepared is not None,
        )

    def stream_manager(self, open_stream: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """The SDK's ``stream(...)`` helper (Anthropic ``messages``, OpenAI
        ``chat.completions``), with the window managed and usage recorded: as lazy as
        the SDK's, nothing is prepared, logged or sent before its ``with`` (see
        :class:`_ManagedStream`)."""
        return _ManagedStream(open_stream, kwargs, self)

    def _finish(
        self,
        prepared: Prepared | None,
        record: CallRecord,
        recorded: Callable[[], None] | None = None,
    ) -> None:
        """Record the call in ``calls``, commit it (log the reply, remember the exchange),
        call ``recorded`` (a stream's: whoever waits for its report goes on, see
        :mod:`contextos.providers.streams`), then run the application's callbacks
        (``on_call``), even when the commit failed.

        Why in that order: the call was made and billed whatever the commit does; an
        inline commit (``background_commit=False``) that failed used to raise before
        the record reached ``calls`` and ``on_call``, so the usage was lost too. And a
        callback is the application's code (a metrics push that times out): run before
        the commit, its exception skipped it, so the reply was never logged nor
        remembered, a non-streamed caller lost the response it had paid for, and a
        stream's reply, already taken off the open set, was never retried. So a
        callback's exception is logged (logger ``contextos.providers.wrapper``) and
        goes no further: the caller gets its reply, the next callback runs. A failed
        commit still raises, after the callbacks.
        """
        self.calls.append(record)
        try:
            if prepared is not None and self.context is not None:
                self.context.commit(prepared, record)
        finally:
            if recorded is not None:
                recorded()
            for recorder in self.recorders:
                try:
                    recorder(record)
                except Exception:
                    log.exception("on_call callback %r failed; the call is recorded", recorder)


class _StreamsOnClose:
    """What a Memory's ``close()`` waits for (a ``PendingWrites``): the streams of a
    client whose session is kept in it, still open or left, reported as they stand
    (:meth:`OpenStreams.settle`), and their commits.

    Why: a ``with Memory(...)`` block that ended while the app still held a stream it
    had broken out of, or right after it dropped one, closed the store before that
    stream was recorded: its reply, its usage and its question were lost (a review).
    """

    def __init__(self, streams: OpenStreams, context: Any) -> None:
        self._streams = streams
        self._context = context

    @classmethod
    def register(cls, streams: OpenStreams, context: Any) -> _StreamsOnClose | None:
        """One for ``context``'s Memory, registered with its ``wait_on_close`` (held
        weakly there: the client's core keeps it); None without such a Memory."""
        wait_on_close = getattr(getattr(context, "memory", None), "wait_on_close", None)
        if wait_on_close is None:
            return None
        on_close = cls(streams, context)
        wait_on_close(on_close)
        return on_close

    def drain(self, timeout: float | None = None) -> None:
        """Report the streams, then wait for their commits; raise nothing (a failed
        commit is logged: the Memory is closing, no call of this client can raise it)."""
        if not self._streams.settle(timeout):
            return
        flush = getattr(self._context, "flush", None)
        try:
            if flush is not None:
                flush()
        except Exception:
            log.exception("logging the streams left open as their Memory closed failed")


class _ManagedStream:
    """Stands in for ``MessageStreamManager``: entering it prepares the window (logging
    the question), opens the SDK's helper on it and instruments its stream.

    Why at ``__enter__``, not when built: the SDK's manager sends nothing until then,
    and one an app built but never entered (a check failed before its ``with``, a
    ``StreamingResponse`` whose client left first) logged a question the model never
    saw, sent on every later call as said and never remembered (a review); building
    it on an event loop blocked the loop on the log's writes."""

    def __init__(
        self, open_stream: Callable[..., Any], kwargs: dict[str, Any], core: _Core
    ) -> None:
        self._open_stream = open_stream
        self._kwargs = kwargs
        self._core = core
        self._manager: Any = None
        self._raw: Any = None

    def __enter__(self) -> Any:
        core = self._core
        prepared, kwargs, prefix = core._prepare(self._kwargs)
        hide = None
        if core.adapter.name == "openai" and core.stream_usage:
            kwargs, added = _with_stream_usage(kwargs)
            # hidden from the helper too, whose events showed it as a chunk with no
            # choices (a review: an app's ``event.chunk.choices[0]`` failed on it)
            hide = _usage_only if added else None
        started = time.perf_counter()
        with failing(core.context, prepared), mapped_errors(core.adapter.name):
            self._manager = self._open_stream(**kwargs)
            stream = self._manager.__enter__()
        # Both helpers read their raw SDK stream lazily: instrument it before the first event.
        self._raw = stream._raw_stream
        core.observe(self._raw, prepared, prefix, str(kwargs.get("model", "")), started, hide=hide)
        return stream

    def __exit__(self, *exc: Any) -> Any:
        """The SDK's exit, then the instrumented raw stream's ``close``, so a stream left
        early is reported as the block ends. Why both: openai's ``ChatCompletionStream``
        closes its HTTP response directly, never the raw stream's ``close``, so the
        call would otherwise wait for the next call or ``flush()`` to be recorded."""
        try:
            return self._manager.__exit__(*exc)
        finally:
            if self._raw is not None:
                self._raw.close()


def _reserve(request: ChatRequest, kwargs: Mapping[str, Any]) -> int:
    """The tokens a call keeps free outside the window: its output (``max_tokens`` or
    ``max_completion_tokens``, else the model's default output reserve) plus the tools
    that travel verbatim (not placed in the window, e.g. OpenAI ``strict`` tools).

    The default is taken here, not left to the context source for a reserve of 0: with
    verbatim tools and no ``max_tokens`` the reserve was the tools' tokens alone, and the
    window could fill the whole context, leaving the reply no room."""
    from contextos.engine.context import model_info

    out = int(kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or 0)
    if not out:
        out = model_info(request.model).default_output_reserve()
    if kwargs.get("tools") and not request.tools:  # verbatim tools: not in the window
        out += json_tokens(kwargs["tools"])
    return out


def json_tokens(value: Any) -> int:
    """The tokens of ``value`` as JSON: how a request's parts that travel outside the
    window (server tools, ``strict`` tools) are counted, by the wrapper's budget and by
    ``contextos count`` alike."""
    import json

    from contextos.llm.tokens import default_tokenizer

    return default_tokenizer().count(json.dumps(value, default=str))


def _request_id(response: Any) -> str | None:
    """The response's ``id``: every wrapped API (Messages, Chat Completions, Responses)
    names its response by that field."""
    value = field_of(response, "id")
    return str(value) if value else None


def _extra(source: Any, *args: Any) -> dict[str, Any]:
    """The adapter's (or stream accumulator's) ``extra`` report; {} when it has none."""
    getter = getattr(source, "extra", None)
    return dict(getter(*args)) if getter is not None else {}


def _stream_record(
    provider: str,
    model: str,
    acc: StreamAccumulator,
    started: float,
    prefix: str,
    prepared: Prepared | None,
) -> CallRecord:
    """The record of a stream as far as it got; whole when the protocol said it ended
    (``acc.finished``), however the caller's iteration ended.

    A reply that cannot be read (the accumulator raises) is recorded all the same: what
    can still be read (its usage, its id, what the server did to the context) with an
    empty reply, incomplete, so its commit goes as a failed stream's: no reply logged,
    the question remembered; the error is logged. Why: the record was lost whole. The
    error went on to the app's loop, the call never reached ``calls`` nor ``on_call``
    (its billed usage gone), and no commit ran, so the question stayed in the log, never
    remembered (a review, s47: an Anthropic ``input_json_delta`` whose ``partial_json``
    was null; the accumulators read that now)."""
    try:
        reply, complete = acc.reply(), acc.finished
    except Exception:  # noqa: BLE001 - the call was made and billed: record it
        log.exception(
            "%s: reading a streamed reply failed; the call is recorded with its usage, "
            "as incomplete and with no reply, and its question remembered",
            provider,
        )
        reply, complete = Message("assistant", ""), False
    return CallRecord(
        provider,
        model,
        _or_else("usage", acc.usage, Usage()),
        reply,
        True,
        time.perf_counter() - started,
        prefix,
        prepared.new_messages if prepared else (),
        _or_else("id", lambda: getattr(acc, "message_id", None), None),
        complete,
        _or_else("server context report", lambda: _extra(acc), {}),
    )


def _or_else(what: str, read: Callable[[], T], default: T) -> T:
    """``read()``, or ``default`` should it raise (logged, naming ``what`` was read)."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - a record with less in it beats none
        log.exception("reading a stream's %s failed", what)
        return default


def _with_stream_usage(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Ask for the usage chunk; True when the caller had not (so we hide it)."""
    options = dict(kwargs.get("stream_options") or {})
    if options.get("include_usage"):
        return kwargs, False
    options["include_usage"] = True
    return {**kwargs, "stream_options": options}, True


def _usage_only(chunk: Any) -> bool:
    from .openai import is_usage_only

    return is_usage_only(chunk)


class _Resource:
    """A proxy of an SDK resource (``client.messages``): ``create`` goes through the core."""

    def __init__(self, inner: Any, core: _Core, provider: str) -> None:
        self._inner = inner
        self._core = core
        self._provider = provider

    def create(self, **kwargs: Any) -> Any:
        """The SDK's ``create``, with the window managed and usage recorded."""
        kwargs = self._core.entry(kwargs)
        if self._core.tool_loop is not None:  # memory_tools: every request of the loop goes
            send = lambda kw: self._core.call(self._inner.create, kw)  # noqa: E731 - through call
            return self._core.tool_loop.create(send, self._core.adapter.reply, **kwargs)
        return self._core.call(self._inner.create, kwargs)

    def stream(self, **kwargs: Any) -> Any:
        """The SDK's ``stream(...)`` context manager, window managed, usage recorded.

        Raises:
            TypeError: the client runs the memory tools (see :func:`_refuse_tool_loop`).
        """
        _refuse_tool_loop(self._core, "stream")
        return self._core.stream_manager(self._inner.stream, self._core.entry(kwargs))

    def parse(self, **kwargs: Any) -> Any:
        """The SDK's ``parse`` (structured outputs), window managed, usage recorded: its
        parsed response is the SDK's message type, read like ``create``'s.

        Raises:
            TypeError: the client runs the memory tools (see :func:`_refuse_tool_loop`).
        """
        _refuse_tool_loop(self._core, "parse")
        kwargs = self._core.entry(kwargs)
        raw = getattr(getattr(self._inner, "with_raw_response", None), "parse", None)
        two_step = _ParseInTwo(raw or _raw_response(self._inner.parse))
        return self._core.call(two_step.send, kwargs, then=two_step.parsed)

    def count_tokens(self, **kwargs: Any) -> Any:
        """The SDK's ``count_tokens`` (Anthropic), errors mapped."""
        with mapped_errors(self._provider):
            return self._inner.count_tokens(**kwargs)

    def __getattr__(self, name: str) -> Any:
        _refuse_unmanaged(name, self._core)
        return getattr(self._inner, name)


#: The header by which both SDKs' ``with_raw_response`` views ask their method for the
#: raw response, whose ``parse()`` then runs the method's own reading of the reply.
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"


def _raw_response(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (an SDK call) made to return the SDK's raw response, as the SDK's own
    ``with_raw_response`` view makes it: :data:`_RAW_RESPONSE_HEADER` added to its
    ``extra_headers``.

    Why: anthropic's ``messages.parse`` has no ``with_raw_response`` form (its beta's
    has), and sent as it was, a reply its output model rejected (cut at ``max_tokens``,
    JSON that fails the model) raised inside the send: the billed call was never
    recorded nor logged (a review). So it goes through :class:`_ParseInTwo` as the
    others do, the SDK's own ``parse`` (its schema, its timeout) doing the sending."""

    def send(**kwargs: Any) -> Any:
        headers = {**(kwargs.get("extra_headers") or {}), _RAW_RESPONSE_HEADER: "raw"}
        return method(**{**kwargs, "extra_headers": headers})

    return send


class _ParseInTwo:
    """``parse`` (OpenAI's ``chat.completions``, Anthropic's ``messages`` and
    ``beta.messages``) in two steps: the reply, recorded and logged
    as ``create``'s is, then the SDK's own reading of it into the response model.

    Why: ``parse`` raises after the reply came (billed) when it rejects it --
    ``finish_reason`` ``length`` (``openai.LengthFinishReasonError``) or
    ``content_filter`` (``ContentFilterFinishReasonError``), JSON that fails the pydantic
    model (``ValidationError``) -- and raised inside the send, such a reply was taken
    for a refused request (a review): no record in ``calls`` nor ``on_call``, the reply
    not logged, and the SDK's errors mapped to a bare ``ProviderError`` (so the SDK's
    ``except openai.LengthFinishReasonError as e: e.completion`` missed). Sent through
    the SDK's public raw-response form (``with_raw_response.parse``, which adds its
    ``X-Stainless-Raw-Response`` header; where there is none, the same header added by
    :func:`_raw_response`), the reply's JSON is recorded first; the raw
    response's ``parse()`` then runs the SDK's own reading (the same ``post_parser``
    the plain ``parse`` runs) and its error reaches the caller as the bare SDK raises
    it, as it does from the ``stream(...)`` helper."""

    def __init__(self, raw_parse: Callable[..., Any]) -> None:
        self._raw_parse = raw_parse
        self._raw: Any = None

    def send(self, **kwargs: Any) -> Any:
        """Send the request; the reply's JSON ({} for a body that is none)."""
        self._raw = self._raw_parse(**kwargs)
        try:
            return self._raw.http_response.json()
        except ValueError:
            return {}  # nothing to record: the SDK's reading says what is wrong

    def parsed(self, _reply: Any) -> Any:
        """The SDK's ``ParsedChatCompletion`` / ``ParsedMessage``, or the SDK's own
        error, unmapped."""
        return self._raw.parse()


def _refuse_tool_loop(core: _Core, name: str) -> None:
    """Refuse ``stream()`` / ``parse()`` on a client that runs the memory tools, as
    ``create(stream=True)`` is refused.

    Why: the tool loop runs inside ``create()`` only. Through the other entry points the
    request went out without the memory tools and the core-memory block, silently, and
    a turn answering a parallel tool call went without the loop's own results (which
    the API requires beside the caller's), so the session log forked.

    Raises:
        TypeError: ``core`` has a tool loop.
    """
    if core.tool_loop is not None:
        raise TypeError(
            f"memory_tools runs a tool loop; call create() without stream=True, not {name}()"
        )


#: SDK entry points that would send a request around the wrapper: the raw-response
#: views, and Anthropic's own tool-use loop (``beta.messages.tool_runner``), which
#: calls the SDK's ``create`` itself (a review: it sent the question without the
#: session's history and logged nothing).
_UNMANAGED = ("with_raw_response", "with_streaming_response", "tool_runner")


def _refuse_unmanaged(name: str, core: _Core, unmanaged: tuple[str, ...] = _UNMANAGED) -> None:
    """Refuse, with a clear error, an SDK entry point that would bypass the managed window.

    Why: ``with_raw_response.create(...)`` reaches the SDK's own ``create``; on a
    managed client the request would go out without the session's context and its
    reply would never be logged, silently. A pass-through client manages nothing, so
    there is nothing to lose.

    Raises:
        TypeError: ``name`` is such an entry point and the client manages a window.
    """
    if name in unmanaged and core.context is not None:
        raise TypeError(
            f"{name} bypasses contextos (no managed window, nothing logged); call "
            "create()/stream()/parse() on the wrapped client, or the SDK client itself "
            "(.unwrapped) for a call outside the session"
        )


class _Recorded:
    """An SDK resource whose ``create`` is sent unchanged and recorded (Responses API)."""

    def __init__(self, inner: Any, core: _Core) -> None:
        self._inner = inner
        self._core = core

    def create(self, **kwargs: Any) -> Any:
        """The SDK's ``create``, as given; usage recorded, errors mapped."""
        return self._core.call(self._inner.create, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Namespace:
    """An SDK namespace (``client.chat``, ``client.beta``) with its ``resource`` wrapped
    (``completions``, ``messages``: context management lives in ``beta.messages``),
    or with no resource wrapped and those of ``refused`` refused on a managed client;
    everything else in it is the SDK's own."""

    def __init__(
        self,
        inner: Any,
        core: _Core,
        resource: str | None,
        provider: str,
        refused: tuple[str, ...] = (),
    ) -> None:
        self._inner = inner
        self._core = core
        self._refused = _UNMANAGED + refused
        if resource is not None:
            setattr(self, resource, _Resource(getattr(inner, resource), core, provider))

    def __getattr__(self, name: str) -> Any:
        _refuse_unmanaged(name, self._core, self._refused)
        return getattr(self._inner, name)


class WrappedClient:
    """An SDK client with contextos in the call path. Build it with :func:`wrap`.

    ``calls`` is the :class:`UsageLog` of this client's calls; ``unwrapped``
    the SDK client itself. Any attribute not overridden is the SDK's.
    """

    def __init__(self, client: Any, core: _Core) -> None:
        self.unwrapped = client
        self._core = core
        self.provider = core.adapter.name
        if self.provider == "anthropic":
            self.messages = _Resource(client.messages, core, "anthropic")
            if hasattr(client, "beta"):
                self.beta = _Namespace(client.beta, core, "messages", "anthropic")
        else:
            self.chat = _Namespace(client.chat, core, "completions", "openai")
            if hasattr(client, "beta"):
                # beta.chat.completions.stream()/parse() call the SDK's own create (a
                # review); chat.completions.stream()/parse() are the managed ones
                self.beta = _Namespace(client.beta, core, None, "openai", refused=("chat",))
            if hasattr(client, "responses"):
                from .openai import RESPONSES_ADAPTER

                self.responses = _Recorded(client.responses, core.passthrough(RESPONSES_ADAPTER))

    @property
    def calls(self) -> UsageLog:
        return self._core.calls

    def flush(self) -> None:
        """Wait until the last call's reply is logged and remembered (see ``background_commit``).

        First the streams left are reported (whole only if their end marker had
        arrived): those dropped or closed inside the garbage collector, whoever opened
        them (or their report, by the reporter thread, waited for); those the caller
        of ``flush()`` opened and alone read (or never read) and still holds, and those
        whose opener, their only reader, is gone (its thread ended, its task done),
        with their responses closed: reading one on raises ``ProviderError``. A stream
        someone else still reads, or that anyone but its opener read, is not reported
        here: it is reported when it ends, at its ``close()``, or once it is dropped
        (by the reporter thread). Without memory or session, the same streams are
        recorded in ``calls``; the Responses API's streams are among them."""
        streams = self._core.open_streams
        flush = getattr(self._core.context, "flush", None)
        while True:  # a commit may let the garbage collector close (queue) another stream
            streams.finish()
            if flush is not None:
                flush()
            if not streams.abandoned:
                return

    @property
    def context(self) -> Any:
        """The :class:`~contextos.engine.context.ContextSource` (None in pass-through)."""
        return self._core.context

    def with_options(self, **options: Any) -> WrappedClient:
        """The SDK's ``with_options`` (timeouts, retries, headers), still wrapped: same
        session, same usage log."""
        return WrappedClient(self.unwrapped.with_options(**options), self._core)

    def copy(self, **options: Any) -> WrappedClient:
        """The SDK's ``copy`` (``with_options`` is its alias in both SDKs), still wrapped.

        Why: reached through ``__getattr__`` it returned the bare SDK client, whose
        calls went out without the session's window and were never logged, silently.
        """
        return WrappedClient(self.unwrapped.copy(**options), self._core)

    def __enter__(self) -> WrappedClient:
        """``with wrap(anthropic.Anthropic(), ...) as client:`` as the SDK client's own
        ``with``: a wrapped client was no context manager (the special methods are not
        reached through ``__getattr__``), so adding ``wrap`` to such code raised
        ``TypeError`` (a review)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Wait for the last call's commit (:meth:`flush`), then close the SDK client, as
        its own ``with`` does; the client is closed even when the commit failed."""
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.unwrapped.close()

    def __getattr__(self, name: str) -> Any:
        _refuse_unmanaged(name, self._core)
        return getattr(self.unwrapped, name)


def _adapter_for(
    client: Any, cache_key: bool | str, cache_options: Mapping[str, Any] | None = None
) -> ProviderAdapter:
    root = type(client).__module__.split(".")[0]
    name = type(client).__name__
    if name.startswith("Async"):
        raise TypeError(f"contextos.wrap supports synchronous clients; got {name}")
    if root == "anthropic" and hasattr(client, "messages"):
        from .anthropic import ADAPTER

        return ADAPTER
    if root == "openai" and hasattr(client, "chat"):
        from .openai import chat_adapter

        return chat_adapter(cache_key=cache_key, cache_options=cache_options)
    raise TypeError(
        f"cannot wrap {type(client).__module__}.{name}: "
        "pass an anthropic.Anthropic or openai.OpenAI client"
    )


def wrap(
    client: Any,
    memory: MemoryLike | None = None,
    session: Any = None,
    *,
    user_id: str | None = None,
    agent_id: str | None = None,
    context: Any = None,
    prompt_cache_key: bool | str = False,
    prompt_cache_options: Mapping[str, Any] | None = None,
    stream_usage: bool = True,
    on_call: Recorder | None = None,
    keep_calls: int | None = KEEP_CALLS,
    memory_tools: Any = False,
    memory_placement: str = "per_call",
    **options: Unpack[ContextOptions],
) -> WrappedClient:
    """Wrap an ``anthropic.Anthropic`` or ``openai.OpenAI`` client (see the module docstring).

    Args:
        client: the SDK client; its ``base_url``, ``max_retries`` and timeouts apply.
        memory: a :class:`~contextos.memory.Memory` to retrieve from and remember into.
        session: a :class:`~contextos.engine.session.Session`, or a session id (the log is
            kept in ``memory``'s store).
        user_id/agent_id: the memory scope. With a Session, its own; ids given beside it
            must be the Session's (and ``memory``'s tenant its tenant).
        context: a ready :class:`~contextos.engine.context.ContextSource`
            (instead of memory/session), e.g. the context engine's session.
        prompt_cache_key: OpenAI only; True for a key derived from the stable prefix.
        prompt_cache_options: OpenAI only; sent on every call that has none of its own
            (``{"mode": "explicit"}``), and the window's cache breakpoints are marked
            with ``prompt_cache_breakpoint`` (see :mod:`contextos.providers.openai`).
        stream_usage: OpenAI only; ask streams for the usage chunk.
        on_call: called with every :class:`~contextos.providers.base.CallRecord`, once
            the call is in ``client.calls`` and handed to the commit; an exception it
            raises is logged (logger ``contextos.providers.wrapper``) and goes no
            further: the caller still gets its reply, and the reply is still logged.
        keep_calls: how many of the newest records ``client.calls`` keeps (1000; None
            keeps all, for ever); its ``total()`` and ``edits()`` count every call.
            ``on_call`` sees every record, to keep them elsewhere.
        memory_tools: True to offer the model the self-editing memory tools (core
            blocks pinned in the prefix, archival memory, conversation search) and run
            them until it answers (see :mod:`contextos.agent.loop`); or a ready ToolLoop.
        memory_placement: ``per_call`` (memories after the history, fresh each call) or
            ``topic`` (a cached topic block before the history plus a small delta after
            it; see :class:`~contextos.engine.context.SessionContext`).
        options: the session context's options, with its defaults
            (:class:`~contextos.engine.context.ContextOptions`):

            - ``memory_limit``/``memory_tokens``: how many memories, and how many
              tokens of them (8, 1024).
            - ``remember``: add each exchange to memory (True).
            - ``budget``: the input token budget, used as given (``max_tokens`` is not
              taken from it). Default: the model's context window less the reserve, which
              is ``max_tokens`` (or ``max_completion_tokens``; without either, the model's
              default output reserve) plus the tokens of tools sent verbatim. A budget over
              that (window less reserve) of a registered model is refused with
              ``BudgetError`` at the call; an unknown model's window is assumed (128,000
              tokens, logged once per model), so its budget is used as given.
            - ``compaction``: the session's compaction strategy (``summarize``, the
              default, ``truncate``, ``clear_tool_results``, ``offload``) or None to
              never compact.
            - ``history_share``: the share of the budget the history may take (0.6);
              ``thresholds``: when compaction starts and down to what, as shares of
              that (:class:`~contextos.engine.compaction.Thresholds`, 0.8 and 0.5). A
              step that adds much (several tool results at once) compacts less often
              with more room between them.
            - ``background_commit``: log the reply and remember the exchange on a
              background thread (the next call or ``flush()`` waits for it, and so do
              ``Memory.close()`` and the interpreter's exit); False to do it inline.

    Raises:
        TypeError: an unsupported client, an unknown option, or ``context`` together
            with memory/session.
        ValueError: an unknown ``memory_placement``, a negative ``keep_calls``.
        ScopeError: a Session whose user, agent or tenant is not the one given with it.
    """
    from contextos.engine.context import PLACEMENTS, ContextOptions

    if memory_placement not in PLACEMENTS:
        raise ValueError(f"memory_placement must be one of {PLACEMENTS}, not {memory_placement!r}")
    if unknown := options.keys() - ContextOptions.__annotations__.keys():
        raise TypeError(f"wrap() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    adapter = _adapter_for(client, prompt_cache_key, prompt_cache_options)
    calls = UsageLog(keep_calls)  # refuses a negative keep_calls before anything is built
    if context is not None and (memory is not None or session is not None):
        raise TypeError("pass either context= or memory=/session=, not both")
    if context is None and (memory is not None or session is not None):
        from contextos.engine.context import SessionContext

        context = SessionContext(
            memory=memory,
            session=session,
            user_id=user_id,
            agent_id=agent_id,
            placement=memory_placement,
            **options,
        )
    core = _Core(adapter, context, [on_call] if on_call else [], stream_usage, calls)
    if memory_tools is not False:
        from ..agent.loop import tool_loop_for_wrap

        core.tool_loop = tool_loop_for_wrap(
            memory_tools,
            adapter.name,
            memory=memory,
            context=context,
            user_id=user_id,
            agent_id=agent_id,
        )
    return WrappedClient(client, core)
