"""Each inferred fact says what extracted it (``metadata["extracted_by"]``): the LLM
extractor's prompt id, or ``offline`` for the rule-based extractor and for the LLM
extractor's fallback, on both stores. prompts.py promised the prompt id on records
while no candidate carried it (session 15's LLM review)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from contextos.llm.prompts import EXTRACT_V2
from contextos.memory import Memory
from contextos.memory.extract import OFFLINE_EXTRACTOR_ID
from contextos.memory.extract_llm import LLMExtractor
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM


@pytest.fixture
def mem(store: Store) -> Iterator[Memory]:
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        yield memory


def said(text: str) -> dict[str, str]:
    return {"role": "user", "name": "Alice", "content": text}


def test_the_llm_prompt_id_is_stored(mem: Memory) -> None:
    reply = json.dumps({"facts": [{"text": "Alice lives in Porto.", "type": "semantic"}]})
    wrote = mem.add(
        said("I live in Porto."),
        user_id="alice",
        infer=True,
        extractor=LLMExtractor(ScriptedLLM([reply])),
    )
    assert [(r.text, r.metadata["extracted_by"]) for r in wrote] == [
        ("Alice lives in Porto.", EXTRACT_V2.id)
    ]
    (stored,) = mem.get_all(user_id="alice")
    assert stored.metadata["extracted_by"] == "extract@2"


def test_offline_and_fallback_facts_say_offline(mem: Memory) -> None:
    offline = mem.add(said("I live in Porto."), user_id="alice", infer=True)
    fallback = mem.add(
        said("I work at a bakery."),
        user_id="bob",
        infer=True,
        extractor=LLMExtractor(ScriptedLLM(["not json"])),
    )
    assert offline and fallback
    assert {r.metadata["extracted_by"] for r in offline + fallback} == {OFFLINE_EXTRACTOR_ID}
    assert {r.metadata["extracted_by"] for r in mem.get_all(user_id="bob")} == {"offline"}
