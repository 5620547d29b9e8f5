"""``contextos bench wrap`` and ``contextos chat``: the provider adapters from the shell."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Literal, cast

import click

from ..engine.message_text import lone_surrogate_at
from ..errors import BudgetError
from .bench_frame import hangup_terminates, terminable
from .common import (
    CliState,
    choice_option,
    console,
    embedding_memory,
    err_console,
    group_options,
    json_option,
    number_option,
    pass_state,
    print_json,
    scope_id_param,
    settle,
)
from .text import SafeText

if TYPE_CHECKING:
    from ..providers.chat import ChatProvider, ChatTurn


@click.command("wrap")
@choice_option("--provider", ["anthropic", "openai", "both"], "both", "Which SDK client to wrap.")
@choice_option(
    "--mode",
    ["passthrough", "session", "both"],
    "both",
    "passthrough: wrap(client); session: with memory and a session log.",
)
@number_option(
    "--calls",
    200,
    click.IntRange(1),
    "Measured calls of each kind (bare and wrapped, interleaved).",
)
@number_option("--warmup", 10, click.IntRange(0), "Unmeasured calls first.")
@click.option("--stream", is_flag=True, help="Stream the responses (and read them whole).")
@choice_option(
    "--embedder",
    ["hash", "minilm-int8", "minilm"],
    "hash",
    "Embedder of the session mode's memory.",
)
@json_option
@pass_state
@terminable
def bench_wrap(
    state: CliState, provider: str, mode: str, calls: int, warmup: int, stream: bool, embedder: str
) -> None:
    """Time a wrapped SDK call against the bare one on a loopback fake server."""
    from ..bench.wrap_overhead import TARGET_MS, measure

    providers = cast(
        list[Literal["anthropic", "openai"]],
        ["anthropic", "openai"] if provider == "both" else [provider],
    )
    modes = cast(
        list[Literal["passthrough", "session"]],
        ["passthrough", "session"] if mode == "both" else [mode],
    )
    results = [
        measure(p, mode=m, calls=calls, warmup=warmup, stream=stream, embedder=embedder)
        for p in providers
        for m in modes
    ]
    if state.as_json:
        print_json(
            [
                {
                    **dataclasses.asdict(r),
                    "overhead_ms": r.overhead_ms,
                    "target_ms": TARGET_MS,
                    "within_target": r.within_target,
                }
                for r in results
            ]
        )
        return
    for r in results:
        verdict = "[green]ok[/green]" if r.within_target else "[red]over target[/red]"
        console.print(
            f"{r.provider:9} {r.mode:11} {'stream' if r.stream else 'json':6} "
            f"calls={r.calls}  bare median {r.bare_median_ms:.2f} ms  "
            f"wrapped median {r.wrapped_median_ms:.2f} ms  "
            f"overhead {r.overhead_ms:+.2f} ms (target <= {TARGET_MS:.0f} ms: {verdict})"
        )


def _print_turn(turn: ChatTurn, show_window: bool) -> None:
    if show_window and turn.window is not None:
        console.rule("window")
        console.print(SafeText(turn.window.render_text()), highlight=False)
        sizes = ", ".join(f"{k}={v}" for k, v in turn.window.segment_tokens().items())
        console.print(SafeText(f"{turn.window.total_tokens} tokens ({sizes})", style="dim"))
        console.rule()
    console.print(SafeText.assemble(("assistant>", "bold"), " ", turn.reply), highlight=False)
    u = turn.usage
    console.print(
        SafeText(
            f"usage: in {u.input_tokens} out {u.output_tokens} "
            f"cache write {u.cache_creation_input_tokens} "
            f"read {u.cache_read_input_tokens}",
            style="dim",
        )
    )


#: The user ``contextos chat`` speaks for without ``--user-id``.
DEFAULT_CHAT_USER = "me"


def default_chat_session(user_id: str) -> str:
    """``chat`` for the default user, ``chat-<user>`` for another. Why: every user's
    chat continued the one log "chat", so ``chat -u ana`` showed bob's messages (a
    passport number) in ana's window, and sent them to the provider in her requests."""
    return "chat" if user_id == DEFAULT_CHAT_USER else f"chat-{user_id}"


def _read_line(stdin: IO[str]) -> str:
    """The next line of ``stdin`` ("" at its end), read as bytes and decoded as UTF-8, a
    byte that is not UTF-8 kept as a lone surrogate (``surrogateescape``) for the chat
    to skip that line with a note.

    Why bytes: under a UTF-8 locale other than C.UTF-8 (``en_US.UTF-8``: most desktops
    and servers) Python's stdin decodes strictly, so one such byte raised in
    ``readline`` and ended the chat (exit 2); the text layer had decoded a whole chunk
    at once, so the valid lines read with it were lost too, and the rest never read (a
    review). A stdin with no bytes under it (a test's StringIO) is read as text."""
    raw = getattr(stdin, "buffer", None)
    if raw is None:
        return stdin.readline()
    return cast(bytes, raw.readline()).decode("utf-8", errors="surrogateescape")


def _line_too_long(exc: BudgetError) -> bool:
    """Whether ``exc``, raised by sending a chat line, says that line (the question)
    does not fit the window: the line is skipped then. Any other budget error (the
    instructions alone, a floor) would refuse every line alike, and ends the chat.
    The question is refused before the window is assembled (``ContextEngine``'s room
    for the history) or, failing that, by the window's required segment: both name it
    (``BudgetError.segment``)."""
    return exc.segment == "question"


@click.command()
@choice_option(
    "--provider",
    ["offline", "anthropic", "openai"],
    "offline",
    "offline needs no key: it shows the window and answers from memory.",
)
@click.option("--model", "-m", default=None, help="Model name (default per provider).")
@click.option(
    "--session",
    "session_id",
    default=None,
    callback=scope_id_param,
    help="Session id: the conversation log to continue (default: chat, and chat-USER "
    "with --user-id USER, so two users never share a log by default).",
)
@click.option(
    "--user-id",
    "-u",
    default=DEFAULT_CHAT_USER,
    show_default=True,
    callback=scope_id_param,
    help="Whose memories.",
)
@click.option(
    "--base-url", default=None, help="An OpenAI-compatible server (with --provider openai)."
)
@click.option(
    "--show-window/--no-show-window",
    default=True,
    show_default=True,
    help="Print the assembled window before each answer.",
)
@group_options()
@json_option
@pass_state
@terminable
@hangup_terminates
def chat(
    state: CliState,
    provider: str,
    model: str | None,
    session_id: str | None,
    user_id: str,
    base_url: str | None,
    show_window: bool,
) -> None:
    """Chat with memory; one line per message, /quit or end of input to stop.

    With --json, each reply is one JSON object on one line (JSON Lines)."""
    from ..llm.clients import naming_server
    from ..providers.chat import Chat
    from ..store.records import refuse_nul

    if base_url is not None and provider != "openai":
        # It chatted offline, the URL unused, and exited 0 (a review).
        raise click.UsageError(
            "--base-url names an OpenAI-compatible server: add --provider openai"
        )
    session_id = session_id or default_chat_session(user_id)
    # The OpenAI-compatible server a connection error names (None: OpenAI's own).
    server = (base_url or state.settings.openai_base_url) if provider == "openai" else None

    # The CLI's Memory, whose worker never queues again the vectors another model wrote
    # (an application's store, re-embedded with the chat's model: a review).
    held = ExitStack()
    memory = held.enter_context(embedding_memory(state.settings))
    chat: Chat | None = None
    try:
        chat = Chat(
            memory,
            provider=cast("ChatProvider", provider),
            session_id=session_id,
            user_id=user_id,
            model=model,
            settings=state.settings,
            base_url=base_url,
        )
        stdin = sys.stdin
        interactive = stdin.isatty()
        number = 0
        while True:
            if interactive:
                # On stderr: on stdout it led every line of `chat --json | tee chat.jsonl`
                # (a terminal typing, a pipe reading), and no line parsed (a review).
                err_console.print("[bold]you>[/bold] ", end="")
            line = _read_line(stdin)
            number += 1
            if not line or line.strip() in ("/quit", "/exit"):
                break
            if not line.strip():
                continue
            if lone_surrogate_at(line) is not None:
                # Python reads a byte that is not UTF-8 as a lone surrogate: sent on, it
                # ended the chat with a tokenizer's error naming neither (a review).
                err_console.print(
                    f"stdin line {number} is not UTF-8 text: skipped", highlight=False
                )
                continue
            try:
                refuse_nul(f"stdin line {number}", line)  # what every store refuses
            except ValueError as exc:
                # Refused at the store, it ended the chat (exit 2), the lines after it
                # unread and the line unnamed (a review).
                err_console.print(f"{exc}: skipped", highlight=False, markup=False)
                continue
            try:
                with naming_server(server):
                    turn = chat.send(line.strip())
            except BudgetError as exc:
                if not _line_too_long(exc):
                    raise
                # It ended the chat (exit 1), the lines after it unread, the line
                # unnamed, and advised a --budget that chat has not (a review). Nothing
                # of it was logged or remembered.
                err_console.print(
                    f"stdin line {number} does not fit the model's window beside the "
                    f"instructions (needs {exc.requested} tokens, has {exc.available}): "
                    "skipped (send less, or use a model with a larger window: -m)",
                    highlight=False,
                    markup=False,
                )
                continue
            if state.as_json:
                # One compact object per reply and line (JSON Lines): indented, the
                # replies were a stream of documents that neither json.load nor a
                # line-at-a-time reader could take.
                print_json(
                    {
                        "reply": turn.reply,
                        "usage": turn.usage,
                        "memories": turn.memories,
                        "window": turn.window.render_text() if turn.window else None,
                    },
                    one_line=True,
                )
            else:
                _print_turn(turn, show_window)
        # What the chat remembered gets its vectors before it ends, as an add's does (at
        # most a few seconds): the last exchange was found by its words only until the
        # next process opened the database.
        chat.close()
        settle(memory)
    finally:
        if chat is not None:
            chat.close()
        held.close()


def register(cli: click.Group, bench: click.Group) -> None:
    """Add ``bench wrap`` and ``chat``."""
    bench.add_command(bench_wrap)
    cli.add_command(chat)
