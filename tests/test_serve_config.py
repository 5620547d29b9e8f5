"""``serve``, ``mcp`` and ``keys`` take their settings as the rest of the CLI does:
refused in one line before anything is served, applied where the docs say (a review of
the configuration, s38)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from cli_support import cli_env, run_cli

pytest.importorskip("uvicorn")

from contextos import Memory  # noqa: E402
from contextos.bench.serve import free_port  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402

CLI = [sys.executable, "-m", "contextos"]

#: A program that registers two embedders in contextos's public registry
#: (``contextos.embed.EMBEDDERS``), as an application with its own embedder does, then
#: runs the CLI with its arguments: ``recording`` writes the size of each batch it
#: embeds to the file named first; ``parent-only`` cannot be built in a worker process
#: of ``serve --workers`` (a setting only the workers' environment gets wrong).
PLUGIN = """\
import sys
from multiprocessing import parent_process
from pathlib import Path

from contextos.embed import EMBEDDERS
from contextos.errors import ConfigError
from contextos.testing.embedders import HashEmbedder

LOG = Path(sys.argv[1])


class Recording(HashEmbedder):
    def embed(self, texts):
        with LOG.open("a", encoding="utf-8") as out:
            out.write(f"{len(texts)}\\n")
        return super().embed(texts)


def parent_only():
    if parent_process() is not None:
        raise ConfigError("this embedder cannot start in a worker")
    return HashEmbedder()


EMBEDDERS["recording"] = Recording
EMBEDDERS["parent-only"] = parent_only

if __name__ == "__main__":
    from contextos.cli.main import main

    main(sys.argv[2:])
"""


def _plugin(tmp_path: Path) -> list[str]:
    """The command line that runs the CLI under :data:`PLUGIN` (batches in batches.log)."""
    program = tmp_path / "with_plugin.py"
    program.write_text(PLUGIN, encoding="utf-8")
    return [sys.executable, str(program), str(tmp_path / "batches.log")]


def _run(
    argv: Sequence[str], env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    ("setting", "status", "said"),
    [
        ({"CONTEXTOS_EMBEDDER": "bogus"}, 1, "unknown embedder 'bogus'"),
        ({"CONTEXTOS_ADMIN_KEY": "short"}, 2, "the admin key must be at least 16 characters"),
        ({"CONTEXTOS_EMBED_BATCH_SIZE": "0"}, 1, "must be at least 1"),
    ],
)
def test_serve_refuses_a_bad_setting_in_one_line_whatever_its_workers(
    tmp_path: Path, workers: str, setting: dict[str, str], status: int, said: str
) -> None:
    """With ``--workers 2`` the same settings were announced as "serving on", every
    request hung, and each worker died with a traceback and was started again, for
    ever; one worker refused them in one line."""
    db = tmp_path / "s.db"
    argv = [*CLI, "serve", "--db", str(db), "--port", "0", "--workers", workers]
    proc = _run(argv, {**cli_env(), **setting}, timeout=60)
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert said in proc.stderr and "Traceback" not in proc.stderr
    assert "serving on" not in proc.stdout


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """A worker that fails on its settings ends with one line in the log, and the server
    stops with exit 1, instead of starting it again for ever (10 tracebacks in 25 s)."""
    argv = _plugin(tmp_path) + ["serve", "--db", str(tmp_path / "w.db"), "--port", "0"]
    argv += ["--embedder", "parent-only", "--workers", "2"]
    proc = _run(argv, cli_env(), timeout=90)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "a server worker could not start" in proc.stderr
    tries = proc.stderr.count("cannot start: this embedder cannot start in a worker")
    assert 1 <= tries <= 2, proc.stderr[-3000:]  # each of the 2 workers once, at most
    assert "Traceback" not in proc.stderr


class _OtherModel(HashEmbedder):
    """Vectors of a model the server does not use, so it embeds every record again."""

    model_id = "other-bow"


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_the_servers_embedding_worker_takes_the_batch_size_setting(
    tmp_path: Path, command: str
) -> None:
    """``CONTEXTOS_EMBED_BATCH_SIZE`` was checked by ``serve`` and then not used: the
    server's embedding worker embedded 64 records a pass whatever it said."""
    db = tmp_path / "b.db"
    with Memory(str(db), embedder=_OtherModel()) as memory:
        for i in range(10):  # of another model: the server's worker embeds them again
            memory.add(f"note number {i}", user_id="ana")
        assert memory.flush(timeout=30)
    port = str(free_port())
    served = ["serve", "--port", port] if command == "serve" else ["mcp", "--port", port]
    if command == "mcp":
        served += ["--transport", "streamable-http"]
    argv = _plugin(tmp_path) + [*served, "--db", str(db), "--embedder", "recording"]
    log = tmp_path / "batches.log"
    env = {**cli_env(), "CONTEXTOS_EMBED_BATCH_SIZE": "3"}
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            deadline = time.monotonic() + 60
            sizes: list[int] = []
            while sum(sizes) < 10 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.2)
                text = log.read_text(encoding="utf-8") if log.exists() else ""
                sizes = [int(line) for line in text.split()]
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
    assert sum(sizes) == 10 and max(sizes) <= 3, sizes


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "--tenant", "acme"),
        ("keys", "list"),
        ("serve", "--port", "0"),
        ("mcp", "--transport", "streamable-http", "--port", str(free_port())),
    ],
)
def test_an_empty_db_after_the_command_is_refused_as_the_groups(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """``keys create --db "$DB"`` with ``DB`` unset wrote the key to the default
    database (``serve``/``mcp`` served it), where the group's ``--db ""`` is refused."""
    xdg = tmp_path / "xdg"
    proc = _run([*CLI, *args, "--db", ""], {**cli_env(), "XDG_DATA_HOME": str(xdg)}, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "error: the database path is empty" in proc.stderr
    assert not xdg.exists()  # no default database


@pytest.mark.parametrize("host", ["", "  "])
@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_an_empty_host_is_a_usage_error(tmp_path: Path, host: str, command: str) -> None:
    """``serve --host "$BIND"`` with ``BIND`` unset listened on every interface (Python
    binds "" to all) and announced ``http://:PORT``; the default is loopback only."""
    db = tmp_path / "h.db"
    args = ["--port", "0"] if command == "serve" else ["--transport", "streamable-http"]
    argv = [*CLI, command, "--db", str(db), "--host", host, *args]
    proc = _run(argv, cli_env(), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--host" in proc.stderr and "every interface" in proc.stderr
    assert "serving" not in proc.stdout and not db.exists()


def _keys(db: Path, *args: str, env: dict[str, str] | None = None) -> object:
    proc = run_cli(*args, "--json", db=db, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_keys_commands_act_for_the_groups_tenant(tmp_path: Path) -> None:
    """``CONTEXTOS_TENANT=acme keys list`` listed every tenant's keys, ``keys revoke``
    revoked any tenant's, and ``--tenant acme keys create`` said "Missing option
    '--tenant'"; the group's tenant is "the tenant to act for"."""
    db = tmp_path / "k.db"
    acme = _keys(db, "--tenant", "acme", "keys", "create")
    beta = _keys(db, "keys", "create", env={"CONTEXTOS_TENANT": "beta"})
    assert isinstance(acme, dict) and isinstance(beta, dict)
    assert (acme["tenant"], beta["tenant"]) == ("acme", "beta")
    # The command's own --tenant wins over the group's.
    own = _keys(db, "--tenant", "acme", "keys", "create", "--tenant", "gamma")
    assert isinstance(own, dict) and own["tenant"] == "gamma"

    def tenants(*args: str, env: dict[str, str] | None = None) -> list[str]:
        listed = _keys(db, *args, env=env)
        assert isinstance(listed, list)
        return [k["tenant"] for k in listed]

    assert tenants("keys", "list", env={"CONTEXTOS_TENANT": "acme"}) == ["acme"]
    assert tenants("--tenant", "beta", "keys", "list") == ["beta"]
    assert tenants("--tenant", "beta", "keys", "list", "--tenant", "acme") == ["acme"]
    assert tenants("keys", "list") == ["acme", "beta", "gamma"]
    # Filtered by the group's tenant, the list says so on stderr, and --all-tenants lists
    # every tenant's (a review: CONTEXTOS_TENANT=default listed nothing, without a word).
    noted = run_cli("keys", "list", db=db, env={"CONTEXTOS_TENANT": "default"})
    assert noted.returncode == 0 and noted.stdout == ""
    assert "keys of tenant 'default'" in noted.stderr and "--all-tenants" in noted.stderr
    every = ("keys", "list", "--all-tenants")
    assert tenants(*every, env={"CONTEXTOS_TENANT": "acme"}) == ["acme", "beta", "gamma"]

    refused = run_cli("--tenant", "acme", "keys", "revoke", beta["id"], db=db)
    assert refused.returncode == 1, refused.stderr
    assert "nothing revoked" in refused.stderr and "'beta'" in refused.stderr
    assert [k["revoked_at"] for k in _keys(db, "keys", "list", "--tenant", "beta")] == [None]  # type: ignore[attr-defined]
    revoked = run_cli("keys", "revoke", beta["id"], db=db, env={"CONTEXTOS_TENANT": "beta"})
    assert revoked.returncode == 0, revoked.stderr

    missing = run_cli("keys", "create", db=db)
    assert missing.returncode == 2 and "keys create needs a tenant" in missing.stderr
