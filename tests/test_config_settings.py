"""Settings read as the docs say, however they reach contextos: a hand-built
``Settings``, the environment, the CLI (a review of the configuration, s38)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import cli_env, run_cli
from contextos import Memory
from contextos.config import Settings, load_settings
from contextos.errors import ConfigError, ProviderError
from contextos.llm.clients import llm_from_settings
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_openai import FakeOpenAI
from contextos.types import Message


def test_a_hand_built_settings_with_a_batch_of_zero_is_refused(tmp_path: Path) -> None:
    """``Settings(embed_batch_size=0)`` made a worker that embedded nothing, silently,
    for ever (``flush`` just ran out), where ``CONTEXTOS_EMBED_BATCH_SIZE=0`` is refused."""
    db = str(tmp_path / "m.db")
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(ConfigError, match="CONTEXTOS_EMBED_BATCH_SIZE"):
            Memory(settings=Settings(db=db, embedder="hash", embed_batch_size=bad))  # type: ignore[arg-type]
    assert not Path(db).exists()  # refused before anything was opened
    with Memory(settings=Settings(db=db, embedder="hash", embed_batch_size=2)) as memory:
        memory.add("Ana keeps bees.", user_id="ana")
        assert memory.flush(timeout=30)


def test_a_hand_built_settings_reads_a_tilde_as_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Settings(db="~/x.db")`` looked for a folder named ``~`` (and wrote into one
    where it existed), where ``Memory("~/x.db")`` and ``CONTEXTOS_DB`` expand it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with Memory(settings=Settings(db="~/x.db", embedder="hash")) as memory:
        memory.add("Ana keeps bees.", user_id="ana")
    assert (home / "x.db").is_file() and not (tmp_path / "~").exists()


def test_an_empty_contextos_db_is_refused_not_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CONTEXTOS_DB=`` (a compose file's ``${DB_PATH}`` unset) opened the shared
    default database; the docs call it a ConfigError, as ``"  "`` and ``--db ""`` are."""
    xdg = tmp_path / "xdg"
    listed = run_cli("list", "-u", "ana", env={"CONTEXTOS_DB": "", "XDG_DATA_HOME": str(xdg)})
    assert listed.returncode == 1, listed.stderr
    assert "CONTEXTOS_DB is set to nothing" in listed.stderr
    assert not xdg.exists()  # no default database, not even its folder
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    monkeypatch.setenv("CONTEXTOS_DB", "")
    with pytest.raises(ConfigError, match="the database path is empty"):
        Memory(embedder=HashEmbedder())
    with pytest.raises(ConfigError, match="the database path is empty"):
        load_settings(db="")
    assert not xdg.exists()
    # A caller that brings its own store needs no database setting at all.
    assert load_settings(default_db=False).db == ""


@pytest.mark.parametrize("how", ["flag", "env", "library"])
def test_a_sqlite_uri_filename_is_refused(tmp_path: Path, how: str) -> None:
    """``--db file:notes.db`` wrote ``notes.db`` (where SQLite parses URIs) while every
    check looked for ``file:notes.db``: ``list`` and ``get`` then said nothing was
    stored. It is refused in one line, as ``sqlite://`` is."""
    target = f"file:{tmp_path / 'notes.db'}"
    if how == "library":
        with pytest.raises(ConfigError, match="SQLite URI filename"):
            Memory(target, embedder=HashEmbedder())
    else:
        where = ["--db", target] if how == "flag" else []
        env = {"CONTEXTOS_DB": target} if how == "env" else {}
        for command in (["add", "Ana keeps bees."], ["list"]):
            done = run_cli(*where, *command, "-u", "ana", env=env)
            assert done.returncode == 1, done.stderr
            assert "SQLite URI filename" in done.stderr and "Traceback" not in done.stderr
            assert str(tmp_path / "notes.db") in done.stderr  # the path to give instead
    assert list(tmp_path.iterdir()) == []


def test_the_cache_dir_reads_a_tilde_as_the_home_folder(tmp_path: Path) -> None:
    """``CONTEXTOS_CACHE_DIR=~/ctx-cache`` where no shell expands it (systemd, an env
    file) made a ``./~/ctx-cache`` tree in the working directory, as ``CONTEXTOS_DB``
    no longer does."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    text = work / "note.txt"
    text.write_text("How many tokens is this?", encoding="utf-8")
    env = {**cli_env(), "HOME": str(home), "CONTEXTOS_CACHE_DIR": "~/ctx-cache"}
    counted = subprocess.run(
        [sys.executable, "-m", "contextos", "count", str(text)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert counted.returncode == 0, counted.stderr
    assert any((home / "ctx-cache").iterdir())  # the token counter's table is kept there
    assert not (work / "~").exists()


def test_contextos_model_is_the_model_on_the_openai_path() -> None:
    """docs/api.md: ``CONTEXTOS_MODEL`` is the model ``contextos.llm`` clients use when
    none is given; on the OpenAI path ``gpt-4.1-mini`` went to a local server that
    serves ``llama3``."""
    with FakeOpenAI() as fake:
        base = {"OPENAI_BASE_URL": fake.base_url}
        env = {**base, "CONTEXTOS_MODEL": "llama3"}
        with llm_from_settings(load_settings(env, db="x")) as chosen:
            chosen.complete("Be brief.", [Message(role="user", content="hi")])
        with llm_from_settings(load_settings(base, db="x")) as default:
            default.complete("Be brief.", [Message(role="user", content="hi")])
        assert chosen.client.is_closed() and default.client.is_closed()  # and its sockets
        models = [r.json()["model"] for r in fake.completions_requests()]
    assert models == ["llama3", "gpt-4.1-mini"]
    with llm_from_settings(
        load_settings({**base, "CONTEXTOS_MODEL": "llama3"}, db="x"), model="m"
    ) as given:
        assert given.model == "m"


def _closed_port() -> int:
    from contextos.bench.serve import free_port

    return free_port()  # nothing listens there once the probe socket closed


def test_an_openai_connection_error_names_the_server_it_tried(tmp_path: Path) -> None:
    """``OPENAI_BASE_URL`` at a server that is not running gave ``openai: ConnectError:
    Connection error.``, naming neither the URL nor the setting."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with (
        llm_from_settings(load_settings({"OPENAI_BASE_URL": url}, db="x"), timeout=5) as llm,
        pytest.raises(ProviderError) as raised,
    ):
        llm.complete("Be brief.", [Message(role="user", content="hi")])
    assert url in str(raised.value) and "OPENAI_BASE_URL" in str(raised.value)
    chat = run_cli(
        "chat", "--provider", "openai", "--base-url", url, stdin="hi\n", db=tmp_path / "c.db"
    )
    assert chat.returncode == 1, chat.stderr
    assert url in chat.stderr and "Connection error" in chat.stderr


def test_a_bad_contextos_tenant_is_named_as_the_variable(tmp_path: Path) -> None:
    """The error named ``--tenant``, a flag the user never typed."""
    db = tmp_path / "t.db"
    env = run_cli("list", "-u", "ana", db=db, env={"CONTEXTOS_TENANT": "bad tenant"})
    assert env.returncode == 2
    assert "CONTEXTOS_TENANT" in env.stderr and "--tenant" not in env.stderr.split("(see")[0]
    flag = run_cli("--tenant", "bad tenant", "list", "-u", "ana", db=db)
    assert flag.returncode == 2 and "Invalid value for --tenant" in flag.stderr
