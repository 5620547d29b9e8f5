"""Reading the LoCoMo file (see ../shared/data/locomo/README.md for the format).

LoCoMo is CC BY-NC: it is never copied into this repository. Benchmarks take
its path as an argument, defaulting to ``DEFAULT_LOCOMO`` beside the checkout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_LOCOMO = "../shared/data/locomo/locomo-dev.json"
_EVIDENCE = re.compile(r"D:?(\d+):0*(\d+)")


@dataclass(frozen=True)
class LocomoTurn:
    dia_id: str
    speaker: str
    text: str
    caption: str
    session: int
    time: datetime  # the session's start plus a minute per turn


@dataclass(frozen=True)
class LocomoQA:
    question: str
    answer: str
    evidence: tuple[str, ...]  # normalised dia ids that exist in the conversation
    category: int


@dataclass(frozen=True)
class LocomoConversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    turns: tuple[LocomoTurn, ...]
    qa: tuple[LocomoQA, ...]
    observations: tuple[tuple[str, str, str], ...]  # (speaker, fact, dia_id)


#: What a LoCoMo file holds, for the message that says a file is not one.
EXPECTED = (
    "expected a JSON list of conversations, each an object with sample_id, conversation "
    "(speaker_a, speaker_b, session_N, session_N_date_time) and qa"
)


def load_locomo(path: str | Path) -> list[LocomoConversation]:
    """Parse the LoCoMo JSON; raises FileNotFoundError with a hint when absent, and
    :class:`~contextos.errors.ConfigError` naming the file when it is not LoCoMo data
    (not JSON, another shape, no conversations)."""
    return _parse(path)[1]


def locomo_samples(path: str | Path) -> list[dict[str, Any]]:
    """The file's conversations as parsed JSON objects, checked as :func:`load_locomo`
    checks them (for a reader of its own, such as ``bench extract``'s)."""
    return _parse(path)[0]


def _parse(path: str | Path) -> tuple[list[dict[str, Any]], list[LocomoConversation]]:
    """The parsed JSON and its conversations, or one error naming the file.

    Why: a damaged or wrong file gave ``KeyError: 'conversation'`` tracebacks, JSON errors
    that named no file, or (an empty list) a report of zeros and "None records/s"."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"LoCoMo data not found at {p} (pass --data PATH)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read LoCoMo data at {p}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{p} is not a LoCoMo file: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{p} is not a LoCoMo file: {EXPECTED}, not a JSON {_kind(data)}")
    if not data:
        raise ConfigError(f"no conversations in {p}: its list is empty")
    conversations = []
    for i, sample in enumerate(data):
        if not isinstance(sample, dict):
            raise ConfigError(
                f"{p} is not a LoCoMo file: item {i} is a JSON {_kind(sample)} ({EXPECTED})"
            )
        for key, kind, name in (("conversation", dict, "an object"), ("qa", list, "a list")):
            if key not in sample:
                why = f"item {i} has no {key!r}"
            elif not isinstance(sample[key], kind):
                why = f"item {i}'s {key!r} is a JSON {_kind(sample[key])}, not {name}"
            else:
                continue
            raise ConfigError(f"{p} is not a LoCoMo file: {why} ({EXPECTED})")
        with locomo_shape(p, i, sample):
            conversations.append(_conversation(sample))
    return data, conversations


@contextmanager
def locomo_shape(path: str | Path, index: int, sample: dict[str, Any]) -> Iterator[None]:
    """Reading conversation ``index`` of ``path``: a missing key or a value of the wrong
    kind inside it becomes one :class:`~contextos.errors.ConfigError` naming the file
    and the conversation."""
    where = f"conversation {index}"
    if isinstance(sample.get("sample_id"), str):
        where += f" ({sample['sample_id']})"
    try:
        yield
    except KeyError as exc:
        raise ConfigError(
            f"{path} is not a LoCoMo file: {where} has no {exc.args[0]!r} ({EXPECTED})"
        ) from None
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ConfigError(f"{path} is not a LoCoMo file: {where}: {exc} ({EXPECTED})") from None


def _kind(value: object) -> str:
    """The JSON name of ``value``'s type."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def session_time(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (UTC)."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def normalise_evidence(raw: list[str]) -> list[str]:
    out: list[str] = []
    for item in raw:
        for s, t in _EVIDENCE.findall(item):
            out.append(f"D{int(s)}:{int(t)}")
    return out


def _sessions(conv: dict) -> Iterator[tuple[int, datetime, list[dict]]]:  # type: ignore[type-arg]
    numbers = sorted(
        int(k.split("_")[1])
        for k in conv
        if re.fullmatch(r"session_\d+", k) and isinstance(conv[k], list)
    )
    for n in numbers:
        yield n, session_time(conv[f"session_{n}_date_time"]), conv[f"session_{n}"]


def _conversation(sample: dict) -> LocomoConversation:  # type: ignore[type-arg]
    conv = sample["conversation"]
    turns = []
    for n, start, items in _sessions(conv):
        for k, t in enumerate(items):
            turns.append(
                LocomoTurn(
                    dia_id=t["dia_id"],
                    speaker=t["speaker"],
                    text=t.get("text", ""),
                    caption=t.get("blip_caption", "") or "",
                    session=n,
                    time=start + timedelta(minutes=k),
                )
            )
    known = {t.dia_id for t in turns}
    qa = tuple(
        LocomoQA(
            q["question"],
            str(q.get("answer", q.get("adversarial_answer", ""))),
            tuple(e for e in normalise_evidence(q.get("evidence", [])) if e in known),
            int(q["category"]),
        )
        for q in sample["qa"]
    )
    obs = []
    for _key, by_speaker in sorted(sample.get("observation", {}).items()):
        for speaker, facts in by_speaker.items():
            for fact, dia in facts:
                ev = normalise_evidence([dia] if isinstance(dia, str) else list(dia))
                obs.append((speaker, fact, ev[0] if ev else ""))
    return LocomoConversation(
        sample["sample_id"], conv["speaker_a"], conv["speaker_b"], tuple(turns), qa, tuple(obs)
    )
