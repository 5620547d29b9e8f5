"""The assembly step of a wrapped call: session log + memory -> a budgeted Window.

:func:`contextos.providers.wrap` depends only on the small
:class:`ContextSource` protocol (``prepare`` before the call, ``commit``
after), so the context engine can be swapped or injected in tests. The
default, :class:`SessionContext`, works on the Store's session log and a
:class:`~contextos.memory.Memory`:

1. Messages the caller sent that the log already holds are recognised and
   not logged twice (callers may send only the new turn, or the whole
   conversation every time; a retry of the last question is recognised too).
   New turns are appended to the log *before* the call, so a crash loses
   nothing.
2. The window is assembled with :func:`contextos.window.assemble`: system
   prompt, the logged history (newest kept when short of budget), memories
   retrieved for the question (strongest at the edges) and the question last,
   with cache breakpoints after the system prompt and the history.
3. After the call the reply is logged, with the call's usage in its metadata,
   and the exchange is added to memory (``remember=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from ..errors import ConfigError
from ..models import ModelInfo, Prices, get_model
from ..tokens import Tokenizer, default_tokenizer
from ..types import Message, Scope, Turn, Usage
from ..window import Item, Segment, assemble, message_item, text_item
from .base import WIRE_KEY, CallRecord, ChatRequest, Prepared

#: Introduces the retrieved memories in the final user message.
MEMORY_HEADER = "Relevant memories from earlier conversations (may be outdated):"

#: Window size assumed for models the registry does not know (OpenAI-compatible servers).
UNKNOWN_MODEL_WINDOW = 128_000


class ContextSource(Protocol):
    """Builds the window before a call and records the outcome after it."""

    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        """The window for ``request``, leaving ``reserve_tokens`` free (output, tools)."""
        ...

    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Record the call's reply and usage (the session log, memory)."""
        ...


def model_info(name: str, *, window: int | None = None) -> ModelInfo:
    """The registry entry for ``name``, or a priced-at-zero stand-in for unknown models."""
    try:
        info = get_model(name)
    except ConfigError:
        return ModelInfo(name, "open", window or UNKNOWN_MODEL_WINDOW, 8192, 0,
                         Prices(0.0, 0.0, 0.0, 0.0, 0.0))
    return replace(info, name=name) if window is None else replace(info, name=name,
                                                                 context_window=window)


def _same(a: Message, b: Message) -> bool:
    return (a.role, a.content, a.tool_call_id, a.tool_calls) == (
        b.role, b.content, b.tool_call_id, b.tool_calls)


def split_new(sent: Sequence[Message], logged: Sequence[Message]) -> tuple[int, bool]:
    """(how many leading ``sent`` messages the log already ends with, is-a-retry).

    A retry is a request whose every message is already logged and whose last
    one is the log's unanswered last user message.
    """
    if sent and logged and sent[-1].role == "user" and len(sent) <= len(logged):
        tail = logged[len(logged) - len(sent):]
        if all(_same(a, b) for a, b in zip(sent, tail, strict=True)):
            return len(sent), True
    for k in range(min(len(sent) - 1, len(logged)), 0, -1):
        if _same(sent[k - 1], logged[-1]) and all(
                _same(a, b) for a, b in zip(sent[:k], logged[-k:], strict=True)):
            return k, False
    return 0, False


def _strip_wire(message: Message) -> Message:
    meta = {k: v for k, v in message.metadata.items() if k != WIRE_KEY}
    return replace(message, metadata=meta)


def _usage_json(usage: Usage) -> dict[str, int]:
    return {k: int(getattr(usage, k)) for k in Usage.__dataclass_fields__}


class SessionContext:
    """The default :class:`ContextSource`: a session log in a Store, plus Memory.

    ``memory`` may be None (history only) and ``session_id`` may be None
    (memory only: nothing is logged, the caller's messages are sent as given).
    """

    def __init__(self, *, memory: Any = None, store: Any = None, session_id: str | None = None,
                 tenant: str | None = None, user_id: str | None = None,
                 agent_id: str | None = None, tokenizer: Tokenizer | None = None,
                 memory_limit: int = 8, memory_tokens: int = 1024, remember: bool = True,
                 cache_ttl: str = "5m", budget: int | None = None) -> None:
        if store is None and memory is not None:
            store = memory.store
        if session_id is not None and store is None:
            raise ValueError("a session needs a store: pass memory= or store=")
        self.memory = memory
        self.store = store
        self.scope = Scope(tenant=tenant or getattr(memory, "tenant", None) or "default",
                           user_id=user_id, agent_id=agent_id, session_id=session_id)
        self.tokenizer = tokenizer or getattr(memory, "tokenizer", None) or default_tokenizer()
        self.memory_limit = memory_limit
        self.memory_tokens = memory_tokens
        self.remember = remember
        self.cache_ttl = cache_ttl
        self.budget = budget

    # -- before the call ---------------------------------------------------------
    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        model = model_info(request.model)
        turns = self._turns()
        history = [t.message for t in turns]
        known, retry = split_new(request.messages, history) if self._logging else (0, False)
        new = list(request.messages[known:])
        question: Message | None = None
        if retry:
            question, turns = request.messages[-1], turns[:-1]
        elif new and new[-1].role == "user" and not new[-1].tool_calls:
            question = new.pop()
        logged = self._log(new + ([question] if question is not None and not retry else []))
        if self._logging:
            turns = turns + logged[: len(new)]
            history_items = [message_item(f"turn:{t.seq}", t.message, self.tokenizer,
                                          tokens=t.tokens) for t in turns]
        else:  # nothing logged: the caller's own messages are the history
            history_items = [message_item(f"msg:{i}", m, self.tokenizer)
                             for i, m in enumerate(new)]
        segments = self._segments(request, history_items, question)
        budget = (self.budget or model.context_window) - reserve_tokens
        window = assemble(segments, budget, min_cache_tokens=model.min_cache_tokens)
        return Prepared(window, model, question, tuple(t.message for t in logged))

    @property
    def _logging(self) -> bool:
        return self.scope.session_id is not None

    def _turns(self) -> list[Turn]:
        return list(self.store.turns(self.scope)) if self._logging else []

    def _log(self, messages: Sequence[Message]) -> list[Turn]:
        if not self._logging or not messages:
            return []
        clean = [_strip_wire(m) for m in messages]
        tokens = [self.tokenizer.count_messages([m]) - 3 for m in clean]
        return list(self.store.append_turns(self.scope, clean, tokens))

    def _segments(self, request: ChatRequest, history: list[Item],
                  question: Message | None) -> list[Segment]:
        ttl: Any = self.cache_ttl
        system = tuple(text_item(f"system:{i}", text, self.tokenizer, role="system")
                       for i, text in enumerate(request.system))
        segments = [
            Segment("system", "system", system, floor=sum(i.tokens for i in system),
                    priority=100, cache_ttl=ttl),
            Segment("history", "messages", tuple(history), keep="newest", priority=10,
                    cache_ttl=ttl, anchor_every=10),
        ]
        memories = self._memories(request.last_user_text() or (question.content if question
                                                                  else ""))
        if memories:
            header = text_item("memories:header", MEMORY_HEADER, self.tokenizer)
            segments.append(Segment("memory_header", "context", (header,), priority=20))
            segments.append(Segment("memories", "context", memories, keep="strongest",
                                    placement="edges", ceiling=self.memory_tokens, priority=20))
        if question is not None:
            item = message_item("question", question, self.tokenizer)
            segments.append(Segment("question", "question", (item,), required=True,
                                    priority=1000))
        return segments

    def _memories(self, query: str) -> tuple[Item, ...]:
        if self.memory is None or not query.strip() or not self.scope.is_scoped():
            return ()
        from ..memory.render import render

        hits = self.memory.search(query, user_id=self.scope.user_id,
                                  agent_id=self.scope.agent_id, limit=self.memory_limit * 2,
                                  token_budget=self.memory_tokens * 2)
        if self._logging:  # this session's own turns are in the history already
            hits = [h for h in hits if h.record.session_id != self.scope.session_id]
        hits = hits[: self.memory_limit]
        return tuple(text_item(f"memory:{h.record.id}", render(h.record), self.tokenizer,
                               rank=rank, provenance=h.record.provenance)
                     for rank, h in enumerate(hits, start=1))

    # -- after the call --------------------------------------------------------------
    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        reply = call.reply
        if reply is None:
            return
        meta = {**reply.metadata, "usage": _usage_json(call.usage), "model": call.model,
                "provider": call.provider}
        if call.request_id:
            meta["request_id"] = call.request_id
        logged = replace(reply, metadata=meta)
        if self._logging:
            tokens = call.usage.output_tokens or self.tokenizer.count(reply.content)
            self.store.append_turns(self.scope, [logged], [tokens])
        if self.remember and self.memory is not None and self.scope.is_scoped():
            said = [m for m in (prepared.question, reply) if m is not None and m.content.strip()]
            if said:
                self.memory.add([_strip_wire(replace(m, metadata={})) for m in said],
                                user_id=self.scope.user_id, agent_id=self.scope.agent_id,
                                session_id=self.scope.session_id)
