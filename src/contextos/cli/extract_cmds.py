"""`contextos extract FILE` and `contextos bench extract`: the offline extractor in a shell."""

from __future__ import annotations

import dataclasses
import json
import re

import click

from contextos.text.sentences import word_set
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

#: What ``extract`` reads, as its errors name them.
SHAPES = (
    'a JSON list of messages (strings or {"role": ..., "content": ...} objects), '
    '{"messages": [...], "session_time": ...}, or "Speaker: text" lines'
)
#: One word of a speaker's name: a letter (any script), then letters, digits, "_",
#: combining marks and . ' - ("User2", "SPEAKER_00", "al-Sayed"); no "/", "[", "<",
#: quote or brace, nor a digit first ("12/03/2024, 10", "[10", '{"messages"' are not names).
_NAME_WORD = re.compile(r"[^\W\d_][\w.'\u2019\u0300-\u036f-]*")
#: A number after a name's first word ("Speaker 1", "Guest 12").
_NUMBER = re.compile(r"\d{1,4}")
#: What a label may say of its speaker after the name, in parentheses ("Maria (mom)").
_ASIDE = re.compile(r"\s*\([^()]{1,30}\)\s*$")
#: Words a name may hold in lower case between its other words ("Vincent van Gogh").
_PARTICLES = word_set("al bin da das de del della den der di do dos du el ibn la le van von y")
#: Labels written like a speaker that are not one ("Note: I am allergic to nuts").
_LABELS = word_set(
    """note nb n.b. ps p.s. pps edit update warning caution tip hint example reminder
    important fyi btw summary todo re subject source output error result step also"""
)
#: The longest name taken for a speaker, in characters and in words.
NAME_CHARS, NAME_WORDS = 40, 4


def read_turns(text: str) -> tuple[list[Message], object]:
    """Turns from a JSON message list (or {"messages": [...], "session_time": ...}),
    or from plain "Speaker: text" lines; also the session time the file names, as the
    file holds it (any JSON value: the caller checks it).

    JSON of any other shape is refused (``click.BadParameter`` naming :data:`SHAPES`),
    and so is JSON Lines. Why: any JSON but a list of objects was read as lines, its
    first ":" making a speaker ('{"messages"'), and printed as facts, with exit 0 (a
    review, s43)."""
    data = _json(text)
    if data is _NOT_JSON:
        return _lines(text), None
    when = None
    if isinstance(data, dict):
        if "messages" not in data:
            raise click.BadParameter(
                f'a JSON object without "messages"; it may hold {SHAPES}', param_hint="FILE"
            )
        when = data.get("session_time")
        data = data["messages"]
    if not isinstance(data, list):
        raise click.BadParameter(
            f"JSON that is not a list of messages; it may hold {SHAPES}", param_hint="FILE"
        )
    if not data:
        raise click.BadParameter("it holds no messages", param_hint="FILE")
    return to_messages(data), when  # as Memory.add reads them, so add --infer agrees


_NOT_JSON = object()


def _json(text: str) -> object:
    """``text`` read as JSON, or ``_NOT_JSON`` for text that is not (lines). Text that
    starts as JSON does ("{", or "[" before "{", '"' or "]") and is not valid, or that is
    JSON Lines, is refused: read as lines it gave garbage."""
    try:
        return json.loads(text)
    except RecursionError:
        raise click.BadParameter("the JSON is nested too deeply", param_hint="FILE") from None
    except json.JSONDecodeError as exc:
        error = exc
    head = text.strip()
    if not re.match(r"\{|\[\s*[\[{\"\]]", head):
        return _NOT_JSON
    first = head.split("\n", 1)[0].strip()
    if first != head and _is_json_document(first):
        raise click.BadParameter(
            f"one JSON document per line (JSON Lines) is not read; it may hold {SHAPES}",
            param_hint="FILE",
        )
    raise click.BadParameter(
        f"it is not valid JSON: {error.msg} (line {error.lineno} column {error.colno})",
        param_hint="FILE",
    )


def _is_json_document(line: str) -> bool:
    """Whether ``line`` alone is a JSON object or list (a line of JSON Lines)."""
    try:
        return isinstance(json.loads(line), (dict, list))
    except (ValueError, RecursionError):
        return False


def _lines(text: str) -> list[Message]:
    """One turn per non-blank line: "Speaker: text" where the part before the first ":"
    is a name (:func:`speaker_name`), else the whole line. A line without such a prefix,
    or whose prefix is prose, a URL's scheme or a label ("Note:"), is said by the speaker
    of the line before (none before the first name); one whose prefix is neither a name
    nor those (a time, a label not read) by no one. Each turn's id is its line number.

    Why no one: "User2: I work at Siemens" after Ana's line was Ana's, "I" rewritten
    to her (a review, s43); a speaker not known is better than the wrong one."""
    turns = []
    name: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        before, sep, said = line.partition(":")
        if sep and not said.startswith("//"):
            named = speaker_name(before)
            if named is not None:
                name, line = named, said
            elif not _said_by_the_same(before):
                name = None
        turns.append(Message("user", line.strip(), name=name, metadata={"turn_id": str(n)}))
    return turns


def _said_by_the_same(prefix: str) -> bool:
    """Whether a prefix that is no name ("X" of "X: ...") leaves its line to the speaker
    before: a label ("Note", "PS") or prose (a word in lower case: "I went to class
    today: boring", "Check https://...")."""
    words = prefix.split()
    if len(words) == 1 and words[0].lower() in _LABELS:
        return True
    return any(w[0].islower() and w.lower() not in _PARTICLES for w in words)


def speaker_name(text: str) -> str | None:
    """``text`` (what precedes "Speaker:") as a speaker's name, or None when it does not
    look like one: one to :data:`NAME_WORDS` words (:data:`_NAME_WORD`; a number after
    the first: "Speaker 1"), the first not in lower case when there are several, the
    others not either but for particles ("de", "van", "al-Sayed"), and not a label
    ("Note", "PS"); an aside in parentheses may follow ("Maria (mom)") and is kept.

    Why: any text before the first ":" under 40 characters was a speaker: a time
    ("12/03/2024, 10" of "12/03/2024, 10:32 - Ana: ..."), a URL's scheme ("Check https"),
    "Note", and the first person was rewritten to it: "12/03/2024, 10 lives in Paris" (a
    review, s43)."""
    aside = _ASIDE.search(text)
    words = text[: aside.start()].split() if aside else text.split()
    if not words or len(words) > NAME_WORDS or len(" ".join(words)) > NAME_CHARS:
        return None
    if not _NAME_WORD.fullmatch(words[0]) or not all(
        _NAME_WORD.fullmatch(w) or _NUMBER.fullmatch(w) for w in words[1:]
    ):
        return None
    if len(words) == 1:
        if words[0].lower() in _LABELS:
            return None
    elif words[0][0].islower() or any(
        w[0].islower() and w.lower().split("-")[0] not in _PARTICLES for w in words[1:]
    ):
        return None
    name = " ".join(words)
    return f"{name} ({' '.join(aside.group().strip()[1:-1].split())})" if aside else name


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
