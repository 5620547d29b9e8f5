"""`contextos extract FILE` and `contextos bench extract`: the offline extractor in a shell."""

from __future__ import annotations

import dataclasses
import json

import click

from contextos.text.temporal import parse_session_time

from ..engine.message_text import check_text
from ..errors import ConfigError
from ..memory.extract import Candidate, OfflineExtractor
from ..memory.ingest import to_messages
from ..types import Message
from .bench_frame import terminable
from .common import (
    CliState,
    console,
    int_range,
    json_option,
    number_option,
    pass_state,
    print_json,
    progress_bar,
    read_text_arg,
)
from .text import SafeText


def read_turns(text: str) -> tuple[list[Message], object]:
    """Turns from a JSON message list (or {"messages": [...], "session_time": ...}),
    or from plain "Speaker: text" lines; also the session time the file names, as the
    file holds it (any JSON value: the caller checks it)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    except RecursionError:
        raise click.BadParameter("the JSON is nested too deeply", param_hint="FILE") from None
    when = None
    if isinstance(data, dict):
        when = data.get("session_time")
        data = data.get("messages")
    if isinstance(data, list) and all(isinstance(m, dict) for m in data):
        return to_messages(data), when  # as Memory.add reads them, so add --infer agrees
    turns = []
    for n, line in enumerate(text.splitlines(), 1):
        speaker, sep, said = line.partition(":")
        if line.strip():
            name = speaker.strip() if sep and len(speaker) < 40 else None
            body = said.strip() if name else line.strip()
            turns.append(Message("user", body, name=name, metadata={"turn_id": str(n)}))
    return turns, when


def _line(c: Candidate) -> str:
    when = f" {c.event_time.date().isoformat()}" if c.event_time else ""
    source = f"  ({', '.join(c.provenance)})" if c.provenance else ""
    return f"[{c.memory_type}{when}] {c.text}{source}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def register(cli: click.Group, bench: click.Group) -> None:
    """Add ``extract`` to the top-level group and ``extract`` to ``bench``."""

    @cli.command()
    @click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
    @click.option(
        "--session-time",
        default=None,
        metavar="WHEN",
        help="When the conversation took place (ISO, or '1:56 pm on 8 May, 2023'); "
        "anchors 'yesterday', 'last week', ...",
    )
    @json_option
    @pass_state
    def extract(state: CliState, file: str, session_time: str | None) -> None:
        """Extract candidate memories from FILE (JSON messages or 'Speaker: text' lines)."""
        text = read_text_arg(file)
        turns, file_time = read_turns(text)
        for n, turn in enumerate(turns, 1):  # a "\\ud800" escape in a JSON file
            try:
                check_text(turn, f"turn {n}")
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="FILE") from None
        if session_time is not None:
            when = parse_session_time(session_time)
            if when is None:
                raise click.BadParameter(
                    f"cannot read the time {session_time!r}", param_hint="--session-time"
                )
        else:
            when = parse_session_time(file_time) if isinstance(file_time, str) else None
            if file_time is not None and when is None:
                # The file's field, not the option: the user never typed --session-time.
                raise click.BadParameter(
                    f'cannot read its "session_time" {file_time!r} (ISO, or '
                    "'1:56 pm on 8 May, 2023'; --session-time WHEN overrides it)",
                    param_hint="FILE",
                )
        found = OfflineExtractor().extract(turns, session_time=when)
        if state.as_json:
            print_json([dataclasses.asdict(c) for c in found])
            return
        for cand in found:
            console.print(SafeText(_line(cand)), highlight=False)

    @bench.command("extract")
    @click.option(
        "--data",
        default=None,
        metavar="PATH",
        help="LoCoMo file (default ../shared/data/locomo/locomo-dev.json).",
    )
    @number_option("--repeat", 3, click.IntRange(1), "Passes; the fastest counts.")
    @click.option("--limit", default=None, type=int_range(1), help="Only the first N sessions.")
    @click.option(
        "--min-confidence",
        default=0.0,
        show_default=True,
        help="Drop candidates below this confidence (smaller memory, lower recall).",
    )
    @json_option
    @pass_state
    @terminable
    def bench_extract(
        state: CliState, data: str | None, repeat: int, limit: int | None, min_confidence: float
    ) -> None:
        """Offline extraction speed (turns/s) and memory size vs the raw conversation."""
        from ..bench import extract_speed as eb

        try:
            sessions = eb.load_locomo_sessions(data or eb.DEFAULT_LOCOMO)
            evidence = eb.load_locomo_evidence(data or eb.DEFAULT_LOCOMO)
        except ConfigError as exc:  # click prints it as one unwrapped line
            raise click.ClickException(str(exc)) from None
        extractor = OfflineExtractor(min_confidence=min_confidence)
        chosen = sessions[:limit] if limit else sessions
        passes = max(1, repeat)
        with progress_bar() as bar:
            task = bar.add_task(
                f"extract ({passes} passes)", total=passes * sum(len(s.messages) for s in chosen)
            )
            result = eb.run_extract_bench(
                chosen,
                extractor=extractor,
                repeat=repeat,
                evidence=evidence,
                progress=lambda n: bar.advance(task, n),
            )
        if state.as_json:
            print_json(result)
            return
        console.print(
            f"{result.turns:,} turns in {result.sessions} sessions -> {result.candidates:,} "
            f"memories · {result.turns_per_second:,.0f} turns/s (best of {repeat}, before "
            f"embedding) · memory {result.memory_tokens:,} tokens vs raw {result.raw_tokens:,} "
            f"= {result.size_ratio:.1%} · turns kept {result.turns_with_memory:.0%} · "
            f"evidence turns kept {_share(result.evidence_coverage)} · types {result.by_type}",
            highlight=False,
        )
