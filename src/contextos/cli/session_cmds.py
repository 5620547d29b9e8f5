"""Context-engine commands: ``session add/list/show``, ``window``, ``compact``, and the
``bench replay``, ``bench litm`` and ``bench assemble`` benchmarks."""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import click

from contextos.engine.compaction import STRATEGIES, Thresholds
from contextos.engine.session import (
    ONLY_PROTECTED,
    RACED,
    UNDER_TRIGGER,
    CompactionResult,
    Session,
    never_sent,
    window_budget,
)
from contextos.engine.window import Window, left_out_dict
from contextos.llm.models import ModelInfo, get_model, named_model

from ..cache import CacheSimulator, cache_request, render, report
from ..errors import BudgetError, NotFound
from ..types import Message, Role, Turn
from .bench_frame import report_path_param, terminable, write_json
from .common import (
    CliState,
    FiniteFloatRange,
    choice_option,
    console,
    embedding_memory,
    err_console,
    group_options,
    held_interrupt,
    int_range,
    json_option,
    missing_db,
    missing_db_found,
    model_param,
    note_missing_db,
    open_memory,
    pass_state,
    plural,
    print_json,
    print_table,
    progress_bar,
    read_text_arg,
    reported_after_write,
    scope_id_param,
    settle,
)
from .text import SafeText, id_is_escaped, shown_id

if TYPE_CHECKING:
    from ..engine.recall import Recalled

#: Memories retrieved for ``window`` (as many as the demo and the SDK wrappers use).
WINDOW_MEMORIES = 8


def _session(
    state: CliState, session_id: str, user_id: str | None, *, create: bool = False
) -> Session:
    """The session, in a store opened for it. Only a command that logs (``create``)
    makes a new database file; on a missing path the others read an empty in-memory
    store (``common.missing_db``). ``session show`` and ``compact`` then fail with "no
    session", which names the missing database in its one line
    (``common.with_missing_db``); ``window`` says after its answer that there is no
    database there (``common.note_missing_db``)."""
    from ..store import open_store

    settings = state.settings
    missing = missing_db(state, create=create)
    store = open_store(":memory:" if missing else settings.db)
    return Session(store, session_id, tenant=settings.tenant, user_id=user_id)


def _non_empty(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty", param=param)
    return value


def _stdin_content() -> str:
    """``session add ID -``: the message on stdin, less one final newline (``\\n`` or
    ``\\r\\n``), so ``echo "$msg" | session add ID -`` logs the turn ``session add ID
    "$msg"`` logs, as ``add -`` stores the text ``add "$msg"`` does. Why only one: the
    rest of a tool's output is logged verbatim, indentation and blank lines included."""
    content = read_text_arg("-", param="CONTENT")
    if content.endswith("\n"):
        content = content[:-1].removesuffix("\r")
    if not content.strip():
        raise click.BadParameter("stdin is empty", param_hint="CONTENT")
    return content


def _append(s: Session, message: Message) -> list[Turn]:
    """Log ``message`` in ``s``; a tool result no window can hold is said so on stderr
    (:func:`~contextos.engine.session.never_sent`; the CLI cannot log an assistant's
    tool call). A warning, not a refusal: the log keeps what happened, and exit 0 keeps
    a script that logs tool output going."""
    turns = s.add(message)
    for warning in never_sent(s, turns):
        err_console.print(SafeText(f"warning: {warning}"), highlight=False)
    return turns


def _memories_for(state: CliState, s: Session, question: str, budget: int) -> Recalled:
    """What long-term memory holds for ``question``: the user's memories when a user is
    given, else the memories filed under this session, as a wrapped client's call in the
    session retrieves them (:func:`~contextos.engine.recall.session_recall`: the
    session's own exchanges only once its history no longer shows their turns), and
    the stored rules the window of ``budget`` tokens pins."""
    from ..engine.recall import session_recall
    from ..memory import Memory

    memory = Memory(
        store=s.store,
        tenant=state.settings.tenant,
        settings=state.settings,
        background_embedding=False,
    )
    return session_recall(memory, s, question, limit=WINDOW_MEMORIES, budget=budget)


#: The window's segments that hold the session's history.
HISTORY_SEGMENTS = ("summary", "topic", "turns")


def _warn_if_no_history(window: Window, session_id: str) -> None:
    """Say on stderr when the window holds nothing of the session's history: a session
    id typed wrong (or one with no turns yet) gave a window of the question and
    memories alone, which looks like any other window. A warning, not an error: the
    first question of a new conversation has no history either."""
    if any(u.items or u.dropped for u in window.usage if u.name in HISTORY_SEGMENTS):
        return
    err_console.print(
        SafeText(
            f"note: session {session_id!r} has no turns: the window holds the question "
            "and memories only",
            style="yellow",
        )
    )


def _window_report(window: Window, model_name: str) -> dict[str, Any]:
    """The window's facts for ``--json`` and the table. What it left out is reported as
    the HTTP, MCP and inspector windows report it (:func:`~contextos.engine.window.left_out_dict`:
    the last :data:`~contextos.engine.window.MAX_LEFT_OUT` items a segment, the rest
    counted). Why: every item was listed, 1.4 MB of JSON (4,849 lines of table) for a
    5,200-turn session, growing with the log (a review)."""
    model = get_model(model_name)
    usage = CacheSimulator(
        "anthropic" if model.provider == "anthropic" else "openai",
        min_tokens=model.min_cache_tokens,
    ).send(
        cache_request(
            window, model, "anthropic" if model.provider == "anthropic" else "openai", at=0.0
        )
    )
    cold = report([usage], model)
    return {
        "total_tokens": window.total_tokens,
        "budget": window.budget,
        "segments": [asdict(u) for u in window.usage],
        "breakpoints": [asdict(b) for b in window.breakpoints],
        **left_out_dict(window.overflow),
        "cost_cold_usd": cold.cost_usd,
        "cost_if_prefix_cached_usd": _warm_cost(window, model),
    }


def _warm_cost(window: Window, model: ModelInfo) -> float:
    """Input cost when everything up to the last breakpoint is read from the cache."""
    cached = window.breakpoints[-1].prefix_tokens if window.breakpoints else 0
    rest = window.total_tokens - cached
    return (cached * model.prices.cache_read + rest * model.prices.input) / 1e6


def _print_window(window: Window, info: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"window: {info['total_tokens']:,} of {info['budget']:,} tokens")
    for col in ("segment", "tokens", "items", "dropped", "floor", "ceiling"):
        table.add_column(col)
    for u in window.usage:
        table.add_row(
            SafeText(u.name),
            f"{u.tokens:,}",
            str(u.items),
            str(u.dropped),
            str(u.floor),
            "-" if u.ceiling is None else str(u.ceiling),
        )
    print_table(table)
    for bp in window.breakpoints:
        console.print(
            SafeText(
                f"breakpoint after block {bp.after} ({bp.segment}, {bp.ttl}, "
                f"{bp.prefix_tokens:,} prefix tokens)"
            )
        )
    unlisted = {r["segment"]: r for r in info["left_out_not_listed"]}
    for o in info["left_out"]:
        if (rest := unlisted.pop(o["segment"], None)) is not None:
            _print_unlisted(rest)  # they come before the segment's listed ones
        console.print(SafeText(f"dropped {o['key']} ({o['tokens']} tokens): {o['reason']}"))
    for rest in unlisted.values():
        _print_unlisted(rest)
    console.print(
        f"input cost: ${info['cost_cold_usd']:.5f} cold, "
        f"${info['cost_if_prefix_cached_usd']:.5f} with the prefix cached "
        "(list prices; the cache simulator's estimate)",
        highlight=False,
    )


def _print_unlisted(rest: dict[str, Any]) -> None:
    """The line that stands for a segment's items left out and not listed (the oldest)."""
    console.print(
        SafeText(
            f"... {rest['count']:,} more dropped from {rest['segment']} before these "
            f"({rest['tokens']:,} tokens), not listed"
        ),
        highlight=False,
    )


def register(cli: click.Group, bench: click.Group) -> None:
    """Add ``session``, ``window``, ``compact`` and the context-engine benchmarks."""
    _register_session(cli)
    _register_window(cli)
    _register_bench(bench)


#: The options several session commands share, defined once so their help agrees.
_owner_option = click.option(
    "--user-id", "-u", default=None, callback=scope_id_param, help="Owner of the session."
)
_session_option = click.option(
    "--session", "session_id", required=True, callback=scope_id_param, help="Session id."
)


def _register_session(cli: click.Group) -> None:
    @cli.group()
    def session() -> None:
        """Durable conversation logs (append-only)."""

    @session.command("add")
    @click.argument("session_id", callback=scope_id_param)
    @click.argument("content", callback=_non_empty)
    @choice_option("--role", ["user", "assistant", "system", "tool"], "user", "Who said it.")
    @click.option("--name", default=None, help="Speaker name.")
    @click.option(
        "--tool-call-id",
        default=None,
        callback=lambda ctx, param, value: None if value is None else _non_empty(ctx, param, value),
        help="With --role tool: the id of the tool call this is the result of.",
    )
    @_owner_option
    @group_options()
    @json_option
    @pass_state
    def session_add(
        state: CliState,
        session_id: str,
        content: str,
        role: str,
        name: str | None,
        tool_call_id: str | None,
        user_id: str | None,
    ) -> None:
        """Append one message to SESSION_ID's log (CONTENT, or - for stdin)."""
        if tool_call_id is not None and role != "tool":
            raise click.BadParameter("is for --role tool", param_hint="--tool-call-id")
        if content == "-":
            content = _stdin_content()
        message = Message(
            role=cast(Role, role), content=content, name=name, tool_call_id=tool_call_id
        )
        turns = _append(_session(state, session_id, user_id, create=True), message)
        with reported_after_write(
            f"logged as {', '.join(f'#{t.seq}' for t in turns)} of session {session_id!r}"
        ):
            if state.as_json:
                print_json(turns)
                return
            for t in turns:
                console.print(
                    SafeText(f"{shown_id(session_id)} #{t.seq}: {t.tokens} tokens"),
                    highlight=False,
                )

    @session.command("list")
    @_owner_option
    @click.option("--agent-id", "-a", default=None, callback=scope_id_param, help="Agent id.")
    @click.option(
        "--newest",
        is_flag=True,
        help="Most recently active first (default: least recently active first).",
    )
    @click.option("--limit", default=100, show_default=True, type=int_range(1, 1000))
    @click.option("--offset", default=0, show_default=True, type=int_range(0))
    @click.option(
        "--by-id",
        is_flag=True,
        help="In id order: pages that skip and repeat nothing while the app logs "
        "(activity order moves a session at each turn); go on with --after.",
    )
    @click.option(
        "--after",
        default=None,
        callback=scope_id_param,
        help="The sessions whose id sorts after this one, in id order (--by-id implied): "
        "the last id of the page before.",
    )
    @group_options()
    @json_option
    @pass_state
    def session_list(
        state: CliState,
        user_id: str | None,
        agent_id: str | None,
        newest: bool,
        limit: int,
        offset: int,
        by_id: bool,
        after: str | None,
    ) -> None:
        """List session ids, of one user/agent when given, least recently active first
        (Memory.sessions; GET /v1/sessions); with --by-id or --after, in id order."""
        if newest and (by_id or after is not None):
            raise click.UsageError("--newest is an order of its own: give no --by-id or --after")
        if after is not None and offset:
            raise click.UsageError("--after is the page's key: give no --offset with it")
        order: Literal["oldest", "newest", "id"] = (
            "id" if by_id or after is not None else "newest" if newest else "oldest"
        )
        owner = dict(user_id=user_id, agent_id=agent_id, order=order)
        _list_sessions(state, owner, limit, offset, after)

    @session.command("show")
    @click.argument("session_id", callback=scope_id_param)
    @click.option("--seq", type=int_range(0), default=None, help="Show only this turn, whole.")
    @click.option(
        "--after-seq",
        type=int_range(-1),
        default=-1,
        show_default=True,
        help="Only the turns after this one (the last one shown, to page on).",
    )
    @click.option("--limit", type=int_range(1), default=None, help="At most this many turns (all).")
    @_owner_option
    @group_options()
    @json_option
    @pass_state
    def session_show(
        state: CliState,
        session_id: str,
        seq: int | None,
        after_seq: int,
        limit: int | None,
        user_id: str | None,
    ) -> None:
        """Print a session's turns and its compaction state: each turn's text up to
        2,000 characters (--seq N shows one whole; --json gives every one whole), and
        the tool calls an assistant turn made."""
        # The number is SHOWN_CHARS, written out: click prints this docstring as the
        # help, and showed the constant's name (tests check that the two agree).
        _show(state, _session(state, session_id, user_id), seq, after_seq, limit)


def _list_sessions(
    state: CliState, owner: dict[str, Any], limit: int, offset: int, after: str | None
) -> None:
    """``session list``: one page of session ids, one a line (:func:`~.text.shown_id`:
    an id holding a newline or tab is escaped, and stderr says ``--json`` gives it
    exactly); whether more follow on stderr, so that stdout stays the list (or JSON) a
    script reads."""
    with open_memory(state, embed=False) as memory:
        ids = memory.sessions(**owner, limit=limit, offset=offset, after=after)
        by_id = owner["order"] == "id"
        more = len(ids) == limit and (
            memory.sessions(**owner, limit=1, after=ids[-1])
            if by_id
            else memory.sessions(**owner, limit=1, offset=offset + limit)
        )
    if state.as_json:
        print_json(ids)
    else:
        for session_id in ids:
            console.print(SafeText(shown_id(session_id)), highlight=False)
        if escaped := sum(map(id_is_escaped, ids)):
            err_console.print(
                f"note: {plural(escaped, 'id')} printed with control characters escaped "
                "(\\n, \\t, \\xNN): --json gives every id exactly",
                highlight=False,
            )
    if more:
        # In id order the key is the last id, shell-quoted; one shown escaped is not the
        # key (paging with it skipped sessions: a review): --json gives it exactly.
        last = ids[-1]
        given = (
            None
            if not by_id
            else "--after with the last id of --json's list"
            if id_is_escaped(last)
            else f"--after {shlex.quote(last)}"
        )
        err_console.print(
            SafeText(f"more follow: {given or f'--offset {offset + limit}'} shows the next page"),
            highlight=False,
        )


#: How much of a turn's text ``session show`` prints (a 5 MB tool result was printed
#: whole, 8.8 MB for one session: a review); ``--seq N`` and ``--json`` show it whole.
SHOWN_CHARS = 2_000


def _show(state: CliState, s: Session, seq: int | None, after_seq: int, limit: int | None) -> None:
    """``session show``: the turns after ``after_seq`` (at most ``limit``), or turn
    ``seq`` whole, and the compaction state."""
    logged = [s.turn(seq)] if seq is not None else s.turns()
    if not logged:  # like `get`: an unknown session is an error, not an empty log
        raise NotFound(f"no session {s.session_id!r} (or it has no turns yet)")
    later = [t for t in logged if t.seq > after_seq]
    turns = later[:limit]
    st = s.state()
    # The --after-seq of the next page, None at the end (as GET .../turns' next_after_seq).
    next_after = turns[-1].seq if len(later) > len(turns) else None
    if state.as_json:
        print_json({"turns": turns, "state": st.to_json(), "next_after_seq": next_after})
        if next_after is not None:  # on stderr too, as `list --json` and `session list --json`
            err_console.print(
                f"more follow: --after-seq {next_after} shows the next page", highlight=False
            )
        return
    for t in turns:
        compacted = t.seq < st.start_seq and t.seq not in st.pinned
        _print_turn(t, compacted, whole=seq is not None)
    if next_after is not None:
        console.print(
            SafeText(
                f"{len(later) - len(turns):,} more turns: --after-seq {next_after} shows the next"
            ),
            highlight=False,
        )
    console.print(f"compactions: {st.compactions}, first verbatim turn: {st.start_seq}")


def _print_turn(t: Turn, compacted: bool, *, whole: bool) -> None:
    """One turn of ``session show``: its text (up to :data:`SHOWN_CHARS` unless
    ``whole``), then each tool call it made."""
    mark = " (compacted)" if compacted else ""
    text = t.message.content
    if not whole and len(text) > SHOWN_CHARS:
        more = len(text) - SHOWN_CHARS
        text = f"{text[:SHOWN_CHARS]}… ({more:,} more characters: --seq {t.seq} shows it whole)"
    line = f"#{t.seq} {t.message.role}{mark} [{t.tokens}]: {text}"
    console.print(SafeText(line), highlight=False)
    for call in t.message.tool_calls:
        args = call.arguments
        args = args if whole or len(args) <= SHOWN_CHARS else f"{args[:SHOWN_CHARS]}…"
        console.print(SafeText(f"    -> {call.name}({args}) [{call.id}]"), highlight=False)


def _compact(
    state: CliState,
    s: Session,
    strategy: str,
    budget: int,
    force: bool,
    report: Callable[[CompactionResult], None],
) -> CompactionResult:
    """``s.compact``, then ``report`` of what it did; with offload, into a Memory on the
    same store (the CLI's, that never re-embeds another model's vectors:
    :func:`embedding_memory`), which is closed after (a Memory dropped unclosed warns).

    Why an offload reports before it waits for its archive's vectors, held and settled
    as ``add`` and ``update`` (:func:`held_interrupt`, :func:`settle`): it waited first,
    and a Ctrl-C in that wait (about 3 s for a long session) said "aborted", exit 130,
    with no report, though the compaction had committed (a review)."""
    if strategy != "offload":
        result = s.compact(budget, strategy, force=force)  # type: ignore[arg-type]
        report(result)
        return result
    with embedding_memory(state.settings, store=s.store) as memory:
        result = s.compact(budget, strategy, memory=memory, force=force)  # type: ignore[arg-type]
        if result.plan is None:  # nothing written: nothing to wait for, a Ctrl-C aborts
            report(result)
            return result
        with held_interrupt() as held:  # from the compaction's return to its report
            report(result)
        settle(memory, held)
        return result


def _register_window(cli: click.Group) -> None:
    @cli.command("window")
    @_session_option
    @click.option(
        "--model", "-m", default="claude-sonnet-4-6", show_default=True, callback=model_param
    )
    @click.option(
        "--question", "-q", required=True, callback=_non_empty, help="The current question."
    )
    @click.option(
        "--budget",
        type=int_range(1),
        default=None,
        help="Input tokens (default: model window minus reserved output; no more than "
        "that for a known model).",
    )
    @click.option("--system", default="", help="System prompt.")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "anthropic", "openai"]),
        default="table",
        show_default=True,
        help="Print the table or a request body.",
    )
    @click.option(
        "--user-id",
        "-u",
        default=None,
        callback=scope_id_param,
        help="Owner of the session; their memories are retrieved for the question "
        "(without it, the memories filed under this session).",
    )
    @group_options()
    @json_option
    @pass_state
    def window_cmd(
        state: CliState,
        session_id: str,
        model: str,
        question: str,
        budget: int | None,
        system: str,
        fmt: str,
        user_id: str | None,
    ) -> None:
        """Assemble the window for a question: memories retrieved for it, the session's
        history, segments, breakpoints, overflow, cost."""
        info = named_model(model)  # the body names the snapshot asked for, as given
        if budget is not None:
            try:
                info.check_budget(budget)  # over the model's window: a usage error (exit 2)
            except BudgetError as exc:
                raise click.BadParameter(str(exc), param_hint="--budget") from None
        s = _session(state, session_id, user_id)
        got = _memories_for(state, s, question, window_budget(info, budget))
        w = s.window(
            info,
            question,
            budget=budget,
            system=system,
            stored_rules=got.stored_rules,
            hits=got.hits,
        )
        _warn_if_no_history(w, session_id)
        missing = missing_db_found()
        if fmt != "table":
            print_json(render(w, info, fmt))  # type: ignore[arg-type]
        elif state.as_json:
            print_json(_window_report(w, model))
        else:
            _print_window(w, _window_report(w, model))
        if missing is not None:
            # After the answer, as every reading command says it: "session 'X' has no
            # turns" alone read as the session gone, not the --db mistyped (a review).
            note_missing_db(missing)

    @cli.command("compact")
    @_session_option
    @choice_option("--strategy", list(STRATEGIES), "summarize", "How to compact.")
    @click.option("--budget", type=int_range(1), required=True, help="Tokens for the history.")
    @click.option("--force", is_flag=True, help="Compact even under the trigger threshold.")
    @_owner_option
    @group_options()
    @json_option
    @pass_state
    def compact_cmd(
        state: CliState,
        session_id: str,
        strategy: str,
        budget: int,
        force: bool,
        user_id: str | None,
    ) -> None:
        """Compact a session's history (offload archives into this database's memory)."""
        s = _session(state, session_id, user_id)
        if not s.turns():  # like `session show`: an unknown session is an error
            raise NotFound(f"no session {session_id!r} (or it has no turns yet)")

        def report(done: CompactionResult) -> None:
            if state.as_json:
                print_json(done.to_json())
            else:
                _print_compaction(done, strategy)

        result = _compact(state, s, strategy, budget, force, report)
        if result.raced:  # nothing was done: not a success, with --json or without
            raise SystemExit(1)


#: What ``compact`` says when it compacted nothing, by ``CompactionResult.reason``.
_NOTHING_DONE = {
    RACED: "another writer changed this session meanwhile: nothing done, run again",
    ONLY_PROTECTED: "nothing can be compacted (only recent or pinned turns left)",
    UNDER_TRIGGER: "under the trigger threshold: nothing to do (use --force)",
}


def _print_compaction(result: CompactionResult, strategy: str) -> None:
    """What ``compact`` did, in one line."""
    if result.plan is None:
        console.print(_NOTHING_DONE.get(result.reason or "", "nothing was compacted"))
        return
    p = result.plan
    console.print(
        f"{strategy}: {p.before_tokens:,} -> ~{p.after_tokens:,} tokens, "
        f"{plural(len(p.rotate), 'turn')} rotated, "
        f"{plural(len(p.clear), 'result')} cleared"
    )


def _register_bench(bench: click.Group) -> None:
    from ..bench.litm import DEFAULT_LITM
    from ..bench.locomo_data import DEFAULT_LOCOMO
    from ..bench.replay import STRATEGIES as REPLAY_STRATEGIES

    @bench.command("replay")
    @click.option("--data", default=DEFAULT_LOCOMO, show_default=True, help="LoCoMo JSON.")
    @click.option(
        "--budget",
        "budgets",
        type=int_range(1),
        multiple=True,
        default=(4000, 16000),
        show_default=True,
        help="Window budget(s).",
    )
    @click.option(
        "--strategy",
        "strategies",
        type=click.Choice(list(REPLAY_STRATEGIES)),
        multiple=True,
        default=REPLAY_STRATEGIES,
        help="Strategies to run (all).",
    )
    @click.option(
        "--limit", type=int_range(1), default=None, help="Only the first N conversations."
    )
    @click.option(
        "--out",
        default="bench-out/replay.json",
        show_default=True,
        callback=report_path_param,
        help="JSON report, checked before the run; PNG plots go next to it.",
    )
    @click.option(
        "--trigger", type=FiniteFloatRange(0, 1, min_open=True), default=0.8, show_default=True
    )
    @click.option(
        "--target", type=FiniteFloatRange(0, 1, min_open=True), default=0.5, show_default=True
    )
    @click.option("--plots/--no-plots", default=True, help="Write PNG plots.")
    @json_option
    @pass_state
    @terminable
    def replay_cmd(
        state: CliState,
        data: str,
        budgets: tuple[int, ...],
        strategies: tuple[str, ...],
        limit: int | None,
        out: str,
        trigger: float,
        target: float,
        plots: bool,
    ) -> None:
        """Replay LoCoMo chats per compaction strategy: recall, tokens, cache, cost."""
        from ..bench.replay import run_replay

        rep = _run_data_bench(
            "replay",
            data,
            lambda update: run_replay(
                data,
                budgets=budgets,
                strategies=strategies,
                limit=limit,
                thresholds=Thresholds(trigger=trigger, target=target),
                progress=None if state.as_json else console.print,
                on_step=lambda done, total, label: update(
                    completed=done, total=total, description=label
                ),
            ),
        )
        if state.as_json:
            print_json(_without_series(rep))
        else:
            _print_replay(rep)
        _write(rep, out, plots, "replay")

    @bench.command("litm")
    @click.option(
        "--data",
        default=DEFAULT_LITM,
        show_default=True,
        help="Folder with the Lost-in-the-Middle files.",
    )
    @click.option("--limit", type=int_range(1), default=None, help="Examples per data set.")
    @click.option(
        "--out",
        default="bench-out/litm.json",
        show_default=True,
        callback=report_path_param,
        help="JSON report, checked before the run; PNG plots go next to it.",
    )
    @click.option("--plots/--no-plots", default=True, help="Write PNG plots.")
    @json_option
    @pass_state
    @terminable
    def litm_cmd(state: CliState, data: str, limit: int | None, out: str, plots: bool) -> None:
        """Where the gold item lands after retrieval and edge placement."""
        from ..bench.litm import run_litm

        rep = _run_data_bench(
            "litm",
            data,
            lambda update: run_litm(
                data, limit=limit, on_example=lambda name: update(advance=1, description=name)
            ),
        )
        if state.as_json:
            print_json(rep)
        else:
            console.print(rep["why"])
            for name, r in rep["datasets"].items():
                console.print(
                    f"{name}: edge share {r['edge_share']:.3f} over {r['examples']} "
                    f"examples; gold ranked 1-2 at an edge {r['rank_le2_at_edge']}/"
                    f"{r['rank_le2']}; rank histogram (1..5) {r['rank_histogram'][:5]}"
                )
        _write(rep, out, plots, "litm")

    @bench.command("assemble")
    @click.option("--turns", type=int_range(1), default=100, show_default=True)
    @click.option("--budget", type=int_range(1), default=200_000, show_default=True)
    @click.option("--repeat", type=int_range(1), default=200, show_default=True)
    @json_option
    @pass_state
    def assemble_cmd(state: CliState, turns: int, budget: int, repeat: int) -> None:
        """Time window assembly (and rendering) of an N-turn session, retrieval excluded."""
        from ..bench.replay import time_assembly

        rep = time_assembly(turns=turns, budget=budget, repeat=repeat)
        if state.as_json:
            print_json(rep)
            return
        console.print(
            f"{turns} turns, budget {budget:,}: assemble median "
            f"{rep['assemble_ms_median']:.3f} ms (p95 {rep['assemble_ms_p95']:.3f}), "
            f"assemble+render median {rep['render_ms_median']:.3f} ms"
        )


#: What each data benchmark reads (named when it is missing) and its progress label.
_DATA_BENCHES = {
    "replay": ("LoCoMo data", "replaying"),
    "litm": ("Lost-in-the-Middle data", "scoring"),
}


def _run_data_bench(
    kind: Literal["replay", "litm"],
    data: str,
    run: Callable[[Callable[..., None]], dict[str, Any]],
) -> dict[str, Any]:
    """The one frame of ``bench replay`` and ``bench litm``: a missing data path is one
    clean line before anything starts; ``run`` gets the update function of the single
    progress-bar task. The command prints the report, then writes it (:func:`_write`)."""
    what, label = _DATA_BENCHES[kind]
    if not Path(data).exists():
        raise click.ClickException(f"{what} not found at {data} (pass --data PATH)")
    with progress_bar() as bar:
        task = bar.add_task(label, total=None)
        return run(functools.partial(bar.update, task))


def _without_series(rep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(rep))
    for by_strategy in out.get("budgets", {}).values():
        for res in by_strategy.values():
            res.pop("series", None)
    return out


def _write(rep: dict[str, Any], out: str, plots: bool, kind: Literal["replay", "litm"]) -> None:
    """The report to ``out`` and its plots beside it, after the results were printed: a
    write that fails even so loses nothing shown (:func:`~.bench_frame.write_json`)."""
    write_json(out, rep)
    path = Path(out)
    if plots:
        from ..bench.plots import write_plots

        # stderr, as plain text: --json keeps stdout for JSON, and "[bench]" is no markup
        err_console.print(SafeText(write_plots(rep, path.parent, kind)))


def _print_replay(rep: dict[str, Any]) -> None:
    from rich.table import Table

    for budget, by_strategy in rep["budgets"].items():
        table = Table(title=f"replay at {int(budget):,} tokens ({rep['turns']:,} turns)")
        for col in (
            "strategy",
            "recall 1-4",
            "peak",
            "input tok",
            "read share",
            "limit",
            "limit w/ expiry",
            "cost $",
            "no-cache $",
            "compactions",
        ):
            table.add_column(col)
        for name, r in by_strategy.items():
            table.add_row(
                name,
                f"{r['evidence_recall']:.3f}",
                f"{r['peak_window_tokens']:,}",
                f"{r['input_tokens']:,}",
                f"{r['cache_read_share']:.3f}",
                f"{r['cache_read_limit']:.3f}",
                f"{r['cache_read_limit_with_expiry']:.3f}",
                f"{r['cost_usd']:.2f}",
                f"{r['cost_without_cache_usd']:.2f}",
                str(r["compactions"]),
            )
        print_table(table)
