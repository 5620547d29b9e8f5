"""What core-memory edits cost the prompt cache: a scripted session priced offline.

    python -m contextos.agent.bench --turns 30 --edits 5

A deterministic 30-turn conversation (user question, assistant answer) in
which the model edits its ``human`` block ``edits`` times (a tool call, its
result, then the answer: two model calls). Every model call's window is the
session's standard layout with the core-memory prefix in its ``rules``, priced
by :class:`contextos.cache.CacheSimulator` (Anthropic rules). Policies:

- ``snapshot``: the pinned blocks are re-rendered at compaction points only
  (:class:`~contextos.agent.core_memory.CorePrefix`); edits reach the model as
  the tool results in the history;
- ``live``: the blocks are re-rendered on every call (each edit rewrites the
  prefix and everything cached after it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contextos.engine.session import Session
from contextos.llm.models import ModelInfo, get_model

from ..cache import CacheReport, CacheSimulator, cache_request, report
from ..errors import ConfigError
from ..types import Message, ToolCall, Usage
from .core_memory import CoreMemory, CorePrefix, compaction_point
from .tools import SCHEMAS, AgentTools

_GUIDES = (
    "Answer in the user's language and keep answers short unless asked for detail.",
    "When the user shares a lasting fact about themselves, save it to core memory.",
    "Never invent facts about the user; check core memory and the conversation first.",
    "Prefer concrete next steps over general advice, and say what you are unsure of.",
    "Use archival memory for long documents; keep core memory to what matters every turn.",
    "Be careful with dates and times; state the time zone when it matters.",
)
#: A realistic agent system prompt (about 1,300 tokens), deterministic.
SYSTEM = "You are Ada, a personal assistant with long-term memory.\n" + "\n".join(
    f"{i + 1}. {_GUIDES[i % len(_GUIDES)]} (rule {i + 1})" for i in range(60)
)
_TOPICS = ("travel plans", "a recipe", "running shoes", "a tax form", "a birthday gift", "a book")


def _question(i: int) -> str:
    topic = _TOPICS[i % len(_TOPICS)]
    return f"Turn {i}: can you help me with {topic}? I have a few constraints to mention."


def _answer(i: int) -> str:
    topic = _TOPICS[i % len(_TOPICS)]
    return (
        f"Sure. For {topic}, here is a short plan: first list the constraints, then compare "
        f"two options, then pick one by cost and time. Tell me more and I will refine it ({i})."
    )


@dataclass(frozen=True)
class BenchResult:
    """The priced session: cache report, model calls, edits made, prefix refreshes."""

    policy: str
    report: CacheReport
    calls: int
    edits: int
    refreshes: int


class _Agent:
    """The scripted agent: logs each turn, edits on cue, prices every model call."""

    def __init__(self, tools: AgentTools, prefix: CorePrefix, info: ModelInfo) -> None:
        if tools.session is None:
            raise ValueError("the scripted agent needs tools with a session log")
        self.session: Session = tools.session
        self.tools = tools
        self.prefix = prefix
        self.info = info
        self.sim = CacheSimulator("anthropic", min_tokens=info.min_cache_tokens)
        self.usages: list[Usage] = []

    def call(self, question: str | None, at: float) -> None:
        rules = [self.prefix.text(compaction_point(self.session))]
        window = self.session.window(self.info, question, system=SYSTEM, rules=rules, tools=SCHEMAS)
        self.usages.append(self.sim.send(cache_request(window, self.info, "anthropic", at=at)))

    def turn(self, i: int, at: float, edit: bool) -> None:
        question = _question(i)
        self.call(question, at)
        self.session.add(Message("user", question))
        if edit:  # the model's tool call, its result, then a second call for the answer
            args = json.dumps({"label": "human", "content": f"Fact {i}: {_TOPICS[i % 6]}."})
            tc = ToolCall(f"call_{i}", "core_memory_append", args)
            self.session.add(Message("assistant", "", tool_calls=(tc,)))
            outcome = self.tools.execute(tc.name, tc.arguments)
            self.session.add(Message("tool", outcome.text, tool_call_id=tc.id))
            self.call(None, at + 2.0)  # after its tools ran: no new question
        self.session.add(Message("assistant", _answer(i)))


def simulate(
    *,
    turns: int = 30,
    edits: int = 5,
    policy: str = "snapshot",
    model: ModelInfo | None = None,
    gap_seconds: float = 30.0,
    workdir: Path | None = None,
) -> BenchResult:
    """Run the scripted session under ``policy`` and price every model call."""
    from ..memory import Memory
    from ..testing.embedders import HashEmbedder

    if policy not in ("snapshot", "live"):
        raise ValueError("policy must be 'snapshot' or 'live'")
    if not 0 <= edits <= turns:
        raise ValueError("edits must be between 0 and turns")
    info = model or get_model("claude-sonnet-4-6")
    edit_turns = {round((k + 0.5) * turns / edits) for k in range(edits)} if edits else set()
    with tempfile.TemporaryDirectory() as tmp:
        db = (workdir or Path(tmp)) / f"bench-{policy}.db"
        with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
            core = CoreMemory(memory, user_id="ana")
            core.set("persona", "I am Ada, a careful personal assistant.")
            prefix = CorePrefix(core, live=policy == "live")
            session = Session(memory.store, "bench", tenant=memory.tenant, user_id="ana")
            agent = _Agent(AgentTools(core, session=session, prefix=prefix), prefix, info)
            for i in range(turns):
                agent.turn(i, i * gap_seconds, i in edit_turns)
            made = len(core.get("human").value.splitlines())
    usages = agent.usages
    return BenchResult(policy, report(usages, info), len(usages), made, prefix.refreshes)


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    parse.__name__ = "count"  # argparse names the type in its message
    return parse


def _model(name: str) -> ModelInfo:
    """An argparse type: a model the cache pricing knows."""
    try:
        return get_model(name)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Bad arguments are a usage line and exit 2, as argparse does, not a traceback."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=_count(1), default=30, help="turns (at least 1)")
    parser.add_argument(
        "--edits", type=_count(0), default=5, help="core-memory edits (0 to --turns)"
    )
    parser.add_argument("--model", type=_model, default="claude-sonnet-4-6", help="model name")
    args = parser.parse_args(argv)
    if args.edits > args.turns:
        parser.error(f"argument --edits: {args.edits} is more than --turns ({args.turns})")
    for policy in ("snapshot", "live"):
        r = simulate(turns=args.turns, edits=args.edits, policy=policy, model=args.model)
        rep = r.report
        print(
            f"{policy:8s} calls={r.calls} edits={r.edits} prefix_renders={r.refreshes} "
            f"input={rep.input_tokens} cache_read={rep.cache_read_tokens} "
            f"cache_write={rep.cache_write_5m_tokens + rep.cache_write_1h_tokens} "
            f"uncached={rep.uncached_tokens} read_share={rep.hit_ratio:.3f} "
            f"cost=${rep.cost_usd:.4f} (no cache ${rep.cost_without_cache_usd:.4f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
