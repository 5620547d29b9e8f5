"""Code ported from mem0 fails loudly where contextos differs (a review that ported a
mem0 app): ``Memory(config_dict)`` and ``Memory("")`` are refused instead of opening a
file named after the dict or the shared default database; a caller's own ``role`` /
``speaker`` / session ``seq`` in metadata is refused instead of replaced without a word;
and the history of a fact an inferring add replaced shows the fact that replaced it.
Real SQLite files, and PostgreSQL for the history."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contextos.errors import ConfigError
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter


@pytest.mark.parametrize(
    ("given", "error", "says"),
    [
        ({"vector_store": {"provider": "chroma"}}, TypeError, "not a dict of settings"),
        (42, TypeError, "not int"),
        (b"m.db", TypeError, "not bytes"),
        ("", ConfigError, "the database path is empty"),
        ("   ", ConfigError, "the database path is empty"),
    ],
    ids=["mem0-config", "int", "bytes", "empty", "blank"],
)
def test_a_database_argument_that_is_no_path_is_refused_before_anything_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: object, error: type, says: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for name in ("HOME", "XDG_DATA_HOME"):  # the default database, if anything opened it
        monkeypatch.setenv(name, str(home))
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(error, match=says):
        Memory(given, embedder=HashEmbedder(), background_embedding=False)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == before  # no file named after the dict
    assert not any(home.rglob("*.db"))  # and not the shared default database


def test_paths_and_urls_still_open(tmp_path: Path) -> None:
    for given in (tmp_path / "a.db", str(tmp_path / "b.db"), ":memory:"):
        with Memory(given, embedder=HashEmbedder(), background_embedding=False) as m:
            m.add("Ana likes tea.", user_id="ana")
            assert [r.text for r in m.get_all(user_id="ana")] == ["Ana likes tea."]


@pytest.mark.parametrize(
    ("messages", "metadata", "key"),
    [
        ("Ana approves budgets.", {"role": "manager"}, "role"),
        ({"role": "assistant", "content": "Done."}, {"role": "user"}, "role"),
        ({"role": "user", "content": "Hi.", "name": "ana"}, {"speaker": "bob"}, "speaker"),
    ],
    ids=["role", "role-of-a-message", "speaker-of-a-named-message"],
)
def test_metadata_naming_someone_else_as_the_speaker_is_refused(
    memory: Memory, messages: object, metadata: dict[str, str], key: str
) -> None:
    with pytest.raises(ValueError, match=f"metadata key '{key}' is reserved"):
        memory.add(messages, user_id="ana", metadata=metadata)  # type: ignore[arg-type]
    assert memory.get_all(user_id="ana") == []


def test_metadata_that_agrees_with_the_speaker_is_kept(memory: Memory) -> None:
    """Metadata copied from a stored memory (its ``role`` the one it was said with)."""
    [first] = memory.add("Ana approves budgets.", user_id="ana", metadata={"team": "ops"})
    [copy] = memory.add("Ana approves budgets too.", user_id="ana", metadata=first.metadata)
    assert copy.metadata == {"team": "ops", "role": "user"}
    hits = memory.get_all(filters=Filter(metadata={"team": "ops"}), user_id="ana")
    assert len(hits) == 2


def test_a_seq_of_its_own_in_a_session_is_refused(memory: Memory) -> None:
    with pytest.raises(ValueError, match="metadata key 'seq' is reserved in a session"):
        memory.add("Hello.", user_id="ana", session_id="s1", metadata={"seq": 5})
    [turn] = memory.add("Hello.", user_id="ana", session_id="s1")
    assert turn.metadata["seq"] == 0
    [outside] = memory.add("A note.", user_id="ana", metadata={"seq": 5})  # no session: kept
    assert outside.metadata["seq"] == 5


def test_the_history_of_a_replaced_fact_shows_no_update_that_changed_nothing(store: Store) -> None:
    """An inferring add's UPDATE writes the new fact as a memory of its own and closes
    the old one: its history said "UPDATE 'User lives in Lisbon.' -> 'User lives in
    Lisbon.'", an update that changed nothing. A purge of the new fact leaves its text
    nowhere in the old fact's history."""
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    [first] = memory.add("I live in Lisbon.", user_id="ana", infer=True)
    [second] = memory.add("I live in Porto now.", user_id="ana", infer=True)
    assert second.metadata.get("supersedes") == first.id
    assert memory.get(first.id).metadata.get("superseded_by") == second.id
    events = [(e.event, e.old_text, e.new_text) for e in memory.history(first.id)]
    assert events == [("ADD", None, first.text), ("UPDATE", first.text, None)]
    memory.delete(second.id, purge=True)
    texts = [t for e in memory.history(first.id) for t in (e.old_text, e.new_text) if t]
    assert not [t for t in texts if "Porto" in t]


@pytest.mark.parametrize(
    ("meta", "name"),
    [
        ({"role": "admin"}, None),
        ({"seq": 41}, None),
        ({"speaker": "alice"}, "al"),
        ({"speaker": "alice"}, None),
        ({"utc_offset": 60}, None),  # the zone of its time: the turns are logged in UTC
    ],
    ids=["role", "seq", "speaker-of-a-named-turn", "speaker-of-an-unnamed-turn", "utc_offset"],
)
def test_an_offload_archives_turns_whose_own_metadata_names_reserved_keys(
    tmp_path: Path, meta: dict[str, object], name: str | None
) -> None:
    """An app's own keys on its logged turns are copied into their archived memories,
    which ``add`` refuses for those three: every offload failed, after the turns had
    left the history, and they never became memories (a review)."""
    from contextos.engine.session import Session
    from contextos.types import Message

    said = "the build server disk filled up again on night {}. "
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        session = Session(m, "ops", user_id="ana")
        for i in range(12):
            session.add(
                Message(
                    "user", said.format(i) * 5, name=name, metadata={**meta, "source": "slack"}
                ),
                Message("assistant", f"answer {i}: clean /var/tmp and rotate the logs. " * 5),
            )
        session.compact(300, "offload", memory=m, force=True)
        archived = m.get_all(user_id="ana", limit=100)
        assert archived and session.state().archived_to >= 0
        asked = [r for r in archived if r.metadata["role"] == "user"]
        assert asked and all(r.metadata["source"] == "slack" for r in asked)
        # the name is the speaker; without one, the app's own speaker is kept
        assert {r.metadata.get("speaker") for r in asked} == {name or meta.get("speaker")}


def test_an_inferring_add_refuses_the_same_reserved_keys(memory: Memory) -> None:
    with pytest.raises(ValueError, match="metadata key 'seq' is reserved in a session"):
        memory.add(
            "I live in Lisbon.", user_id="ana", session_id="s1", metadata={"seq": 5}, infer=True
        )
    named = {"role": "user", "content": "I live in Lisbon.", "name": "ana"}
    with pytest.raises(ValueError, match="metadata key 'speaker' is reserved"):
        memory.add(named, user_id="ana", metadata={"speaker": "bob"}, infer=True)
    assert memory.get_all(user_id="ana") == []
    [fact] = memory.add(named, user_id="ana", session_id="s1", infer=True)
    assert fact.metadata["seq"] == 0


def test_a_blank_database_from_the_environment_or_settings_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextos.config import Settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTEXTOS_DB", "   ")
    with pytest.raises(ConfigError, match="the database path is empty"):
        Memory(embedder=HashEmbedder(), background_embedding=False)
    for db in ("", "   "):
        with pytest.raises(ConfigError, match="the database path is empty"):
            Memory(settings=Settings(db=db), embedder=HashEmbedder(), background_embedding=False)
    assert os.listdir(tmp_path) == []
