"""``~`` in ``CONTEXTOS_DB`` or ``--db``, where no shell expands it (systemd's
``Environment=``, a container's env file): one reading everywhere, the home folder. It
was read three ways: ``keys create`` wrote ``$HOME/app.db``, ``keys list`` said nothing
was stored there, and ``add`` and ``serve`` failed with "folder '~' does not exist" (a
review). The real CLI in subprocesses, a real SQLite file in a temporary home."""

from __future__ import annotations

from pathlib import Path

import httpx

from cli_support import run_cli
from contextos.bench.serve import running_server


def test_a_database_under_the_home_folder_named_with_a_tilde(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "CONTEXTOS_DB": "~/app.db"}
    created = run_cli("keys", "create", "--tenant", "acme", env=env)
    assert created.returncode == 0, created.stderr
    listed = run_cli("keys", "list", env=env)
    assert listed.returncode == 0 and "acme" in listed.stdout, listed.stderr
    added = run_cli("--tenant", "acme", "add", "Ana keeps bees.", "-u", "ana", env=env)
    assert added.returncode == 0, added.stderr
    shown = run_cli("--db", "~/app.db", "--tenant", "acme", "list", "-u", "ana", env=env)
    assert "Ana keeps bees." in shown.stdout, shown.stderr
    assert (home / "app.db").is_file() and not (tmp_path / "~").exists()
    # The home folder itself, as a command's --db: refused as any --db naming a
    # directory is, before or after the command (exit 1, config.check_db).
    folder = run_cli("keys", "list", "--db", "~", env=env)
    assert folder.returncode == 1 and "~ is a directory" in folder.stderr, folder.stderr
    secret = created.stdout.split()[0]
    with (
        running_server("~/app.db", "--embedder", "hash", env=env) as (url, _proc),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as client,
    ):
        found = client.get("/v1/memories", params={"user_id": "ana"})
        assert found.status_code == 200, found.text
        assert [m["text"] for m in found.json()["results"]] == ["Ana keeps bees."]
