"""A newcomer's first-hour mistakes, refused where they are made with a message naming
what to pass (a review, s42): an embedder's name, a path where an object goes, a
message whose content is None, a model's name, a variable set to nothing, a folder or
``:memory:`` given as the database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from cli_support import keyed_server, run_cli
from contextos import Memory, Message, Session, get_model
from contextos.config import load_settings
from contextos.embed import make_embedder
from contextos.errors import ConfigError
from contextos.testing.embedders import HashEmbedder
from contextos.types import Scope, ToolCall
from mcp_support import payload, stdio_call

QUESTION = "Which cake does Ana like?"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home (the default database, if anything opened it), the current folder
    ``tmp_path``, and no contextos variable from the outer environment."""
    folder = tmp_path / "home"
    folder.mkdir()
    for name in ("HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, str(folder))
    for name in ("CONTEXTOS_DB", "CONTEXTOS_TENANT", "CONTEXTOS_EMBEDDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return folder


def _created(tmp_path: Path, home: Path) -> list[str]:
    """What a refused call left behind: files in ``tmp_path`` and databases in ``home``."""
    made = sorted(p for p in os.listdir(tmp_path) if p != "home")
    return made + [str(p) for p in home.rglob("*.db")]


# -- 1. an embedder named, as the CLI and CONTEXTOS_EMBEDDER name it ---------------------


def test_an_embedder_named_is_built_as_the_cli_builds_it(home: Path, tmp_path: Path) -> None:
    """``Memory(embedder="minilm")`` was taken as it was: its worker logged an
    ``AttributeError`` every second for good, ``search`` and ``flush`` raised it, and
    ``add`` reported success."""
    with Memory(tmp_path / "n.db", embedder="hash") as memory:
        assert memory.embedder.model_id == make_embedder("hash").model_id
        memory.add("Ana likes lemon cake.", user_id="ana")
        assert memory.flush(timeout=30)
        hits = memory.search(QUESTION, user_id="ana")
        assert [h.record.text for h in hits] == ["Ana likes lemon cake."]
        assert hits[0].relevance is not None  # found by its vector too
    with pytest.raises(ConfigError, match="unknown embedder 'minilm-int9'; known: "):
        Memory(tmp_path / "u.db", embedder="minilm-int9")


@pytest.mark.parametrize(
    "embedder",
    [{"provider": "huggingface", "config": {"model": "all-MiniLM-L6-v2"}}, object(), 384],
    ids=["mem0-dict", "object", "int"],
)
def test_an_embedder_that_is_no_embedder_is_refused_before_anything_opens(
    home: Path, tmp_path: Path, embedder: object
) -> None:
    with pytest.raises(TypeError, match=r"embedder must be an Embedder .* or its name"):
        Memory(tmp_path / "e.db", embedder=embedder)  # type: ignore[arg-type]
    assert _created(tmp_path, home) == []


# -- 2. other wrong types, refused where they are given ------------------------------------


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"store": "x.db"}, r"pass its path or URL as the first argument: Memory\(path\)"),
        ({"store": Path("x.db")}, r"pass its path or URL as the first argument"),
        ({"store": 3}, "store must be a contextos Store, not int"),
        ({"tokenizer": "cl100k_base"}, r"tokenizer must be a Tokenizer .*, not str"),
        ({"settings": {"db": "s.db"}}, r"settings must be a contextos.config.Settings .*dict"),
        ({"retrieval": {"candidates": 50}}, r"retrieval must be a contextos.RetrievalConfig"),
    ],
    ids=["store-str", "store-path", "store-int", "tokenizer", "settings", "retrieval"],
)
def test_a_part_of_the_wrong_type_is_a_type_error_naming_it(
    home: Path, tmp_path: Path, given: dict[str, Any], says: str
) -> None:
    """Each failed far from here: ``AttributeError`` on the store's ``read_only``, the
    tokenizer's ``name``, ``replace() should be called on dataclass instances``, and
    the retrieval dict at the first search."""
    with pytest.raises(TypeError, match=says):
        Memory(tmp_path / "t.db", embedder=HashEmbedder(), **given)
    assert _created(tmp_path, home) == []


def test_a_message_whose_content_is_none_is_refused_before_it_is_logged(
    home: Path, tmp_path: Path
) -> None:
    """``Message("assistant", reply.content)`` for an OpenAI reply of tool calls: the
    Session raised ``StoreError: NOT NULL constraint failed`` (read as a database
    fault, and retried), an int failed in the tokenizer, and ``Memory.add`` raised
    ``AttributeError``; the dict of the same message was named."""
    call = ToolCall("c1", "lookup", "{}")
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        session = Session(m, "chat-1", user_id="ana")
        with pytest.raises(TypeError, match=r"^message: a Message needs a string 'content' \("):
            session.add(Message("assistant", None))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="content' \\(it has none\\); a message of tool"):
            session.add(Message("assistant", None, tool_calls=(call,)))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^message 1: .*'content', not int$"):
            session.add(Message("user", "hi"), Message("user", 5))  # type: ignore[arg-type]
        # Every append passes the same check: a wrapped client's, the server's.
        with pytest.raises(TypeError, match="a Message needs a string 'content'"):
            m.store.append_turns(
                Scope("default", "ana", None, "chat-1"), [Message("user", None)], [1]
            )  # type: ignore[arg-type]
        assert session.turns() == []  # nothing logged, not even the good first message
        logged = session.add(Message("assistant", "", tool_calls=(call,)))  # as the hint says
        assert [t.message.tool_calls for t in logged] == [(call,)]
        for content in (None, 5):
            with pytest.raises(TypeError, match="^message: a Message needs a string 'content'"):
                m.add(Message("user", content), user_id="ana")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="^message: a message dict needs a string 'content'"):
            m.add({"role": "user", "content": None}, user_id="ana")
        assert m.get_all(user_id="ana") == []


def test_a_window_takes_a_model_by_name(home: Path, tmp_path: Path) -> None:
    """``session.window("claude-sonnet-4-6", q)``, the name as the CLI's ``-m`` takes it,
    raised ``AttributeError: 'str' object has no attribute 'largest_budget'``."""
    with Memory(tmp_path / "w.db", embedder=HashEmbedder(), background_embedding=False) as m:
        session = Session(m, "chat-1", user_id="ana")
        session.add(Message("user", "I like lemon cake."), Message("assistant", "Noted."))
        named = session.window("claude-sonnet-4-6", QUESTION)
        given = session.window(get_model("claude-sonnet-4-6"), QUESTION)
        assert named.budget == given.budget
        assert named.render_text() == given.render_text()
        with pytest.raises(ConfigError, match="unknown model 'claude-sonet'"):
            session.window("claude-sonet", QUESTION)
        with pytest.raises(TypeError, match=r"model must be a ModelInfo or a model name"):
            session.window(None, QUESTION)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get_model takes a model name"):
        get_model(None)  # type: ignore[arg-type]


# -- 3. CONTEXTOS_TENANT= and CONTEXTOS_EMBEDDER= set to nothing ----------------------------


def test_an_empty_contextos_tenant_is_refused_not_tenant_default(tmp_path: Path) -> None:
    """``CONTEXTOS_TENANT: ${TENANT}`` with ``TENANT`` unset wrote tenant acme's memories
    into tenant "default", which other apps of the store read, where a blank one and
    ``--tenant ""`` were refused."""
    db = tmp_path / "t.db"
    assert run_cli("add", "for everyone", "-u", "ana", db=db).returncode == 0
    refused = run_cli(
        "add", "acme: card ends 4242", "-u", "ana", db=db, env={"CONTEXTOS_TENANT": ""}
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.strip() == (
        "error: the tenant is empty: CONTEXTOS_TENANT is set to nothing; set it to a tenant "
        "name, or unset it for the tenant 'default'"
    )
    listed = run_cli("--json", "list", "-u", "ana", db=db)
    assert "4242" not in listed.stdout and "for everyone" in listed.stdout
    # keys read the group's tenant without loading settings: it listed every tenant's.
    keys = run_cli("keys", "list", "--db", str(db), env={"CONTEXTOS_TENANT": ""})
    assert keys.returncode == 1 and "CONTEXTOS_TENANT is set to nothing" in keys.stderr
    given = run_cli("--tenant", "acme", "list", "-u", "ana", db=db, env={"CONTEXTOS_TENANT": ""})
    assert given.returncode == 0, given.stderr  # a tenant given wins, as over any value


def test_an_empty_tenant_or_embedder_variable_is_refused_in_the_library(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "l.db"
    monkeypatch.setenv("CONTEXTOS_TENANT", "")
    with pytest.raises(ConfigError, match="CONTEXTOS_TENANT is set to nothing"):
        Memory(db, embedder=HashEmbedder())
    with Memory(db, tenant="acme", embedder=HashEmbedder()) as memory:
        assert memory.tenant == "acme"
        with pytest.raises(ConfigError, match="CONTEXTOS_TENANT is set to nothing"):
            Session(memory.store, "chat-1", user_id="ana")  # its default tenant
    monkeypatch.delenv("CONTEXTOS_TENANT")
    with pytest.raises(ConfigError, match="CONTEXTOS_EMBEDDER is set to nothing; set it to an"):
        load_settings({"CONTEXTOS_EMBEDDER": ""}, db="x.db")
    assert load_settings({"CONTEXTOS_EMBEDDER": ""}, db="x.db", embedder="hash").embedder == "hash"
    added = run_cli("add", "hi", "-u", "ana", db=db, env={"CONTEXTOS_EMBEDDER": ""})
    assert added.returncode == 1 and "CONTEXTOS_EMBEDDER is set to nothing" in added.stderr


def test_servers_whose_keys_name_the_tenant_start_with_an_empty_contextos_tenant(
    tmp_path: Path,
) -> None:
    """``serve`` and ``mcp`` read no tenant (each key names its own), yet refused to start
    under ``CONTEXTOS_TENANT=`` (a compose file's ``${TENANT}`` unset) like a command that
    acts for the tenant: the deployment was down for a variable it never uses."""
    db = tmp_path / "s.db"
    with keyed_server(str(db), "--embedder", "hash", env={"CONTEXTOS_TENANT": ""}) as (c, key):
        added = c.post("/v1/memories", json={"messages": "Ana likes lemon cake.", "user_id": "ana"})
        assert added.status_code == 201, added.text

    async def listed(session: Any) -> Any:
        return payload(await session.call_tool("list_memories", {"user_id": "ana"}))["results"]

    found = anyio.run(lambda: stdio_call(db, key, listed, env={"CONTEXTOS_TENANT": ""}))
    assert [m["text"] for m in found] == ["Ana likes lemon cake."]


# -- 4. a folder, or :memory:, given as the database ----------------------------------------


def test_a_path_naming_a_folder_is_refused_not_made_a_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--db data/`` with no folder ``data`` created a file named ``data`` and said
    "added": the folder the user meant could no longer be made."""
    added = run_cli("--db", "data/", "add", "hi", "-u", "ana", env={"HOME": str(home)})
    assert added.returncode == 1, added.stderr
    assert "data/ names a folder: give a database file inside it, e.g. data/memory.db" in (
        added.stderr
    )
    keys = run_cli("keys", "create", "--tenant", "acme", "--db", "data/", env={"HOME": str(home)})
    assert keys.returncode == 1 and "data/ names a folder" in keys.stderr  # no Memory opened
    for given in ("store/", "store/.", str(tmp_path / "store") + os.sep):
        with pytest.raises(ConfigError, match="names a folder: give a database file inside"):
            Memory(given, embedder=HashEmbedder())
    monkeypatch.setenv("CONTEXTOS_DB", "store/")
    with pytest.raises(ConfigError, match="store/ names a folder"):
        Memory(embedder=HashEmbedder())
    assert _created(tmp_path, home) == []
    (tmp_path / "data").mkdir()  # what the user meant, and then a file inside it
    there = run_cli("--db", "data/", "add", "hi", "-u", "ana", env={"HOME": str(home)})
    assert there.returncode == 1 and "data/ is a directory: pass a database file" in there.stderr
    inside = run_cli("--db", "data/memory.db", "add", "hi", "-u", "ana", env={"HOME": str(home)})
    assert inside.returncode == 0, inside.stderr


def test_an_existing_folder_named_without_a_slash_is_a_config_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api.md: a path naming a folder is a ``ConfigError``. ``Memory("data")`` on an
    existing folder raised the store's ``StoreError`` (only ``"data/"`` was a
    ``ConfigError``), so an app catching ``ConfigError`` for bad settings missed it (a
    review)."""
    (tmp_path / "data").mkdir()
    for given in ("data", tmp_path / "data"):
        with pytest.raises(ConfigError, match="is a directory: pass a database file inside"):
            Memory(given, embedder=HashEmbedder())
    monkeypatch.setenv("CONTEXTOS_DB", "data")
    with pytest.raises(ConfigError, match="data is a directory"):
        Memory(embedder=HashEmbedder())
    assert list((tmp_path / "data").iterdir()) == []


def test_the_cli_refuses_an_in_memory_database(home: Path, tmp_path: Path) -> None:
    """``--db :memory:`` said "added" for a memory gone when the command ended. The
    library's ``Memory(":memory:")``, a scratch store, still opens."""
    for args, env in (
        (("--db", ":memory:", "add", "hi", "-u", "ana"), {}),
        (("add", "hi", "-u", "ana"), {"CONTEXTOS_DB": ":memory:"}),
        (("keys", "create", "--tenant", "acme", "--db", ":memory:"), {}),
    ):
        refused = run_cli(*args, env={"HOME": str(home), **env})
        assert refused.returncode == 1, refused.stderr
        assert "keeps nothing after the command: give a file path" in refused.stderr
        assert refused.stdout == ""
    assert _created(tmp_path, home) == []
    with Memory(":memory:", embedder=HashEmbedder(), background_embedding=False) as memory:
        memory.add("Ana likes tea.", user_id="ana")
        assert [r.text for r in memory.get_all(user_id="ana")] == ["Ana likes tea."]


def test_an_empty_variable_does_not_refuse_a_value_given_otherwise(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The empty-variable rule refuses only where no value is given: an embedder object
    given to ``Memory`` and a tenant given to ``keys create --tenant`` were refused as if
    the variable were read (``serve --embedder hash`` and ``mcp --embedder hash`` too)."""
    db = tmp_path / "given.db"
    monkeypatch.setenv("CONTEXTOS_EMBEDDER", "")
    with Memory(db, embedder=HashEmbedder()) as memory:
        memory.add("tea", user_id="ana")
    with Memory(db, embedder="hash") as memory:
        assert [r.text for r in memory.get_all(user_id="ana")] == ["tea"]
    monkeypatch.delenv("CONTEXTOS_EMBEDDER")
    created = run_cli(
        "keys", "create", "--tenant", "acme", "--db", str(db), env={"CONTEXTOS_TENANT": ""}
    )
    assert created.returncode == 0, created.stderr
