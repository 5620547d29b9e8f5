"""``update`` refuses a value for a library key the memory does not hold, ``None`` too.

The s41 review (diff41A, finding 2): ``add`` refuses ``metadata={"fact_of": None}``, but
``update`` took it on a session turn (a missing key and an explicit null were both read
as "the value stored", None). The turn then stopped being a session turn: nothing
re-quoted it, and redacting it left the old text in its reply's indexed context, found by
a keyword search for it. Over HTTP, ``PATCH`` with ``"fact_of": null`` answered 200.

Real SQLite files and PostgreSQL (the ``store`` fixture), a real ``contextos serve`` on
loopback, the hash embedder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import keyed_client
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope

#: ``add``'s refusal of the key, word for word (ingest.build_records).
ADDS_REFUSAL = "metadata key 'fact_of' is reserved: it marks a fact stored beside a turn"
CARD = "4111222233334444"


def _keyword_texts(memory: Memory, query: str) -> list[str]:
    """The texts of the session's memories the lexical index finds for ``query``."""
    scope = Filter(scope=Scope(memory.tenant, session_id="s"))
    ids = [r.id for r in memory.store.keyword_search(scope, query, limit=10)]
    return [r.text for r in memory.store.get_many(memory.tenant, ids)]


def test_update_refuses_null_for_a_library_key_the_turn_does_not_hold(store: Store) -> None:
    """The review's repro: refused with add's words and nothing written, so the turn
    stays one and a later redaction reaches its reply's context and index."""
    m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    message = {"role": "user", "content": f"my card is {CARD}", "name": "Ann"}
    [turn] = m.add(message, user_id="ann", session_id="s")
    [reply] = m.add({"role": "assistant", "content": "noted"}, agent_id="bot", session_id="s")
    [note] = m.add("a loose note", user_id="ann")
    assert "fact_of" not in turn.metadata and "turn_facts" not in turn.metadata

    with pytest.raises(ValueError) as added:
        m.add("x", user_id="ann", metadata={"fact_of": None})
    assert str(added.value) == ADDS_REFUSAL
    refused = [
        (turn, {"fact_of": None}, "'fact_of' is reserved"),
        (turn, {"fact_of": ""}, "'fact_of' is reserved"),
        (turn, {"turn_facts": None}, "'turn_facts' is reserved in a session"),
        (note, {"fact_of": None}, "'fact_of' is reserved"),
    ]
    for record, metadata, message in refused:
        with pytest.raises(ValueError, match=message) as updated:
            m.update(record.id, metadata={**record.metadata, **metadata})
        if "fact_of" in metadata:
            assert str(updated.value).startswith(ADDS_REFUSAL)
        assert m.get(record.id).metadata == record.metadata  # nothing written

    # Echoing the stored metadata (no key it lacks) still passes, as before.
    assert m.update(turn.id, metadata={**turn.metadata, "tag": "q"}).metadata["seq"] == 0

    m.update(turn.id, "my card is [redacted]")
    assert CARD not in m.get(reply.id).context
    assert _keyword_texts(m, CARD) == []


def test_patch_with_a_null_library_key_is_a_400_that_writes_nothing(tmp_path: Path) -> None:
    """``PATCH /v1/memories/{id}`` with ``"fact_of": null`` (a form editor sending every
    known key back) answered 200 and stored it; now it is refused as ``add`` refuses it."""
    db = tmp_path / "m.db"
    with Memory(db, tenant="acme", embedder=HashEmbedder(), background_embedding=False) as m:
        [turn] = m.add({"role": "user", "content": "hello", "name": "Ann"}, session_id="s")
    with keyed_client(str(db), "--embedder", "hash") as http:
        patched = http.patch(
            f"/v1/memories/{turn.id}", json={"metadata": {**turn.metadata, "fact_of": None}}
        )
        assert patched.status_code == 400, patched.text
        assert ADDS_REFUSAL in patched.text
        assert http.get(f"/v1/memories/{turn.id}").json()["metadata"] == turn.metadata
