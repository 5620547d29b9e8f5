"""Facts of messages without ids keep their message's place, time and question.

A plain chat call sends role and content only. Its messages had no turn id, so their
facts took the first message's place (a reply's fact got the question's ``seq``), no
context (the question it answers: searching "paint" missed the reply), and the call's
time instead of each message's; a model was shown list indexes as turn ids, and they
were stored as provenance (a review). Each message without an id now has its place in
the add for an id, never stored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from contextos import Memory
from contextos.memory.extract_llm import LLMExtractor
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM

EXCHANGE = [
    {"role": "user", "name": "Bob", "content": "What did you paint last weekend?"},
    {"role": "user", "name": "Ann", "content": "Here is my latest one, a sunset over the lake."},
]


def test_a_replys_fact_without_ids_is_placed_and_indexed_as_with_ids(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        found = {}
        for sid, ids in (("with-ids", ("D1:1", "D1:2")), ("no-ids", None)):
            said = [dict(x) for x in EXCHANGE]
            if ids:
                for message, dia in zip(said, ids, strict=True):
                    message["dia_id"] = dia
            m.add(
                {"role": "user", "name": "Ann", "content": "Hello there."},
                user_id=sid,
                session_id=sid,
            )
            (fact,) = m.add(said, user_id=sid, session_id=sid, infer=True)
            found[sid] = fact
            assert any(h.record.id == fact.id for h in m.search("paint", user_id=sid))
        plain, given = found["no-ids"], found["with-ids"]
        assert plain.metadata["seq"] == given.metadata["seq"] == 2  # after "Hello there."
        assert plain.context == given.context == "paint last weekend"
        assert plain.provenance == () and given.provenance == ("D1:2",)


def test_each_message_without_an_id_dates_its_facts(tmp_path: Path) -> None:
    said = [
        {"role": "user", "content": "I moved to Lisbon.", "event_time": "2021-03-01T00:00:00Z"},
        {
            "role": "user",
            "content": "I adopted a dog named Rex.",
            "event_time": "2023-07-01T00:00:00Z",
        },
    ]
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        facts = m.add(said, user_id="ana", infer=True)
        assert sorted((f.text, f.event_time) for f in facts) == [
            ("User adopted a dog named Rex.", datetime(2023, 7, 1, tzinfo=UTC)),
            ("User moved to Lisbon.", datetime(2021, 3, 1, tzinfo=UTC)),
        ]


def test_a_model_cites_the_place_of_a_message_and_it_is_not_stored(tmp_path: Path) -> None:
    prompts: list[str] = []

    class Seeing(ScriptedLLM):
        def complete(self, *args: object, **kwargs: object) -> object:
            prompts.append(json.dumps([args, kwargs], default=str, ensure_ascii=False))
            return super().complete(*args, **kwargs)  # type: ignore[arg-type]

    reply = {"facts": [{"text": "Ann painted a sunset.", "type": "episodic", "source": "§1"}]}
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        extractor = LLMExtractor(Seeing([json.dumps(reply)]))
        (fact,) = m.add(EXCHANGE, user_id="ann", infer=True, extractor=extractor)
        assert fact.provenance == ()
        assert fact.context == "paint last weekend"  # the question before message 1
        assert "§1" in prompts[0]
