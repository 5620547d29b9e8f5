"""Assemble a context window for a question, for one tenant: what the HTTP
``/v1/sessions/{id}/window`` route and the MCP ``assemble_window`` tool share.

With a session, it is :meth:`contextos.engine.session.Session.window` (rolling
summary, recent turns, retrieved memories at the edges, question last);
without one, the same builder (:func:`contextos.engine.session.context_window`)
holding only memories and the question. Both put the memories under
:data:`~contextos.engine.session.MEMORY_HEADER`, as a wrapped call does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from contextos.cache.render import default_max_tokens, render_anthropic, render_openai
from contextos.engine.recall import RULES_SHARE, Shown, recall, scope_rules, session_recall
from contextos.engine.session import MEMORY_HEADER, context_window, window_budget
from contextos.engine.window import Window, left_out_dict
from contextos.errors import ConfigError
from contextos.llm.models import MODELS, ModelInfo, named_model
from contextos.llm.tokens import Tokenizer
from contextos.types import Scope

from .tenants import TenantMemories

DEFAULT_MODEL = "claude-sonnet-4-6"


@dataclass(frozen=True)
class WindowRequest:
    """What to build a window for; the tenant comes from the caller's key."""

    question: str
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    token_budget: int = 2000
    limit: int = 20
    model: str = DEFAULT_MODEL
    system: str = ""
    rules: tuple[str, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    #: The provider request body to answer too (None: none).
    format: Literal["anthropic", "openai"] | None = None
    #: That body's max_tokens (None: the model's output reserve, at most
    #: :data:`~contextos.cache.render.SDK_MAX_TOKENS`).
    max_tokens: int | None = None


def build_window(
    tenants: TenantMemories, tenant: str, req: WindowRequest, tokenizer: Tokenizer
) -> Window:
    """Search the tenant's memories for the question and place them in a window.

    The memories are those a wrapped client's call in the session retrieves
    (:func:`~contextos.engine.recall.recall`): the session's own exchanges only once
    its history no longer shows their turns. Why: this window searched the user's
    memories as a whole and placed the session's remembered exchanges beside the same
    turns in its history, where they took the places of the user's facts (a review).
    The scope's stored rules follow ``req.rules``
    (:func:`~contextos.engine.recall.scope_rules`), as on a wrapped call.

    Raises:
        ConfigError: an unknown model (:func:`window_model`).
        BudgetError: ``token_budget`` is over the model's context window less its
            output: the request's ``max_tokens`` when given and larger than the model's
            default output reserve, else that reserve
            (:func:`~contextos.engine.session.window_budget`), refused before any search.
    """
    model = window_model(req.model)
    budget = window_budget(model, _checked_for_output(model, req))
    mem = tenants.get(tenant)
    if req.session_id is not None:
        with tenants.sessions.use(
            tenant, req.session_id, user_id=req.user_id, agent_id=req.agent_id, tokenizer=tokenizer
        ) as session:
            got = session_recall(
                mem, session, req.question, limit=req.limit, budget=budget, rules=req.rules
            )
            return session.window(
                model,
                req.question,
                budget=budget,
                system=req.system,
                rules=req.rules,
                stored_rules=got.stored_rules,
                tools=req.tools,
                hits=got.hits,
            )
    owner = Scope(tenant=tenant, user_id=req.user_id, agent_id=req.agent_id)
    share = int(RULES_SHARE * budget)
    pinned = scope_rules(mem, scope=owner, session=None, tokens=share, tokenizer=tokenizer)
    hits = recall(
        mem, req.question, scope=owner, session=None, shown=Shown(), limit=req.limit, pinned=pinned
    )
    return context_window(
        budget,
        tokenizer=tokenizer,
        question=req.question,
        min_cache_tokens=model.min_cache_tokens,
        system=req.system,
        rules=req.rules,
        stored_rules=pinned.beside(req.rules),
        tools=req.tools,
        memories=hits,
        memory_header=MEMORY_HEADER,
    )


def window_model(name: str) -> ModelInfo:
    """The model a window is built for: the registry's entry, named as the caller named it
    (:func:`~contextos.llm.models.named_model`), so the ready ``request`` calls the
    snapshot asked for.

    Raises:
        ConfigError: the registry does not know ``name``; the message says how a client
            of this API goes on, since it cannot register a model itself.
    """
    try:
        return named_model(name)
    except ConfigError:
        raise ConfigError(
            f"unknown model {name!r}: a window is budgeted by its model's context window, "
            "and this server does not know that one. Name a model it knows whose context "
            "window is no larger than yours (a dated snapshot, a Bedrock or Vertex AI id of "
            "one is known too) and send the request with your own model id; or have the "
            "server's operator declare it (contextos.llm.models.register_model, in the "
            f"server's process). Known models: {', '.join(sorted(MODELS))}"
        ) from None


def _checked_for_output(model: ModelInfo, req: WindowRequest) -> int:
    """``req.token_budget``, once it leaves the model's window room for ``req.max_tokens``
    as well: refused as ``wrap()`` refuses it
    (:meth:`~contextos.llm.models.ModelInfo.check_budget`, the same ``BudgetError``).

    Why: the budget was checked against the model's default output reserve alone, and the
    ready request was rendered with the ``max_tokens`` asked for, so input and output
    passed the context window, and the provider refused the body this server built (a
    review). A ``max_tokens`` under the default reserve does not widen the budget: the
    session's window keeps that reserve (:func:`~contextos.engine.session.window_budget`).
    """
    if req.max_tokens is not None:
        model.check_budget(req.token_budget, max(req.max_tokens, model.default_output_reserve()))
    return req.token_budget


def window_dict(window: Window) -> dict[str, Any]:
    """A window as plain JSON: rendered text, blocks, what was left out and why
    (listed up to :data:`~contextos.engine.window.MAX_LEFT_OUT` items a segment, see
    :func:`~contextos.engine.window.left_out_dict`)."""
    return {
        "text": window.render_text(),
        "tokens": window.total_tokens,
        "budget": window.budget,
        "memory_ids": [
            b.key.removeprefix("memory:") for b in window.blocks if b.key.startswith("memory:")
        ],
        "blocks": [
            {"segment": b.segment, "role": b.role, "text": b.text, "tokens": b.tokens}
            for b in window.blocks
        ],
        **left_out_dict(window.overflow),
    }


def request_body(window: Window, req: WindowRequest) -> dict[str, Any] | None:
    """The provider request body for ``window`` in ``req.format`` (None: not asked for):
    :func:`~contextos.cache.render.render_anthropic` (``cache_control`` on the planned
    breakpoints) or :func:`~contextos.cache.render.render_openai` (``prompt_cache_key``
    set), so a client in another language sends what the library would, byte for byte;
    ``model`` the id the request gave (:func:`window_model`); ``max_tokens`` (openai:
    ``max_completion_tokens``) as asked, else the model's output reserve, at most 16,384
    (:func:`~contextos.cache.render.default_max_tokens`, the default of
    ``render_anthropic`` and ``contextos window`` too)."""
    if req.format is None:
        return None
    model = window_model(req.model)
    max_tokens = req.max_tokens or default_max_tokens(model)
    if req.format == "anthropic":
        return render_anthropic(window, model, max_tokens=max_tokens)
    return {**render_openai(window, model), "max_completion_tokens": max_tokens}


def window_answer(window: Window, req: WindowRequest) -> dict[str, Any]:
    """The answer of ``POST /v1/sessions/{id}/window`` and MCP ``assemble_window``:
    :func:`window_dict`, the planned cache breakpoints and the request body asked for."""
    return {
        **window_dict(window),
        "breakpoints": [
            {
                "after_block": b.after,
                "ttl": b.ttl,
                "segment": b.segment,
                "prefix_tokens": b.prefix_tokens,
            }
            for b in window.breakpoints
        ],
        "request": request_body(window, req),
    }
