"""Reading the LoCoMo file (see ../shared/data/locomo/README.md for the format).

LoCoMo is CC BY-NC: it is never copied into this repository. Benchmarks take
its path as an argument, defaulting to ``DEFAULT_LOCOMO`` beside the checkout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def load_locomo(path: str | Path) -> list[LocomoConversation]:
    """Parse the LoCoMo JSON; raises FileNotFoundError with a hint when absent."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"LoCoMo data not found at {p} (pass --data PATH)")
    data = json.loads(p.read_text(encoding="utf-8"))
    return [_conversation(sample) for sample in data]


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
