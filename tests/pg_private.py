"""A PostgreSQL cluster of a test's own, for what the shared test server must not get:
``wal_level = logical`` (a replication slot), a hot standby, a setting only a reload
changes. It uses the binaries scripts/postgres.sh found (its ``bindir`` file, else
``pg_config`` on PATH), so pgvector is there too; the test skips when there are none.

Why not the shared server: a slot or a standby holds the cleanup horizon of every
database of its cluster, so the other tests' vacuums would see it, and changing
``wal_level`` needs a restart that would cut their connections.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pg_support import connect


def bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``pg_basebackup``; skips without it."""
    found = []
    test_dir = os.environ.get("CONTEXTOS_TEST_PG_DIR", "")
    if test_dir and (Path(test_dir) / "bindir").is_file():
        found.append(Path((Path(test_dir) / "bindir").read_text(encoding="utf-8").strip()))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        found.append(Path(out.stdout.strip()))
    for path in found:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    pytest.skip(
        "no initdb/pg_ctl: run the suite with `make test` (scripts/postgres.sh installs "
        "PostgreSQL and writes its bindir), or put pg_config on PATH"
    )


def _as_owner(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run as the ``postgres`` user."""
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        pytest.skip("running as root, and there is no runuser to run PostgreSQL as postgres")
    return [runuser, "-u", "postgres", "--", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """One running server: its data directory, port and binaries."""

    data: Path
    port: int
    bin: Path
    settings: dict[str, object]

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def set(self, **settings: object) -> None:
        """Append ``settings`` to its configuration (``set.conf``, read last; a standby
        made later does not copy it) and reload it."""
        lines = "".join(f"{k} = '{v}'\n" for k, v in settings.items())
        with (self.data / "set.conf").open("a", encoding="utf-8") as f:
            f.write(lines)
        with connect(self.url()) as conn:
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the postmaster signals its children; they reread it


def _start(data: Path, bin_: Path, settings: dict[str, object]) -> Cluster:
    for _ in range(3):
        port = _free_port()
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": port,
            "unix_socket_directories": str(data),
            "max_connections": 30,
            "shared_buffers": "16MB",
            "fsync": "off",
            "logging_collector": "off",
            **settings,
        }
        (data / "private.conf").write_text(
            "".join(f"{k} = '{v}'\n" for k, v in conf.items()), encoding="utf-8"
        )
        log = data.parent / f"{data.name}.log"
        run = subprocess.run(
            _as_owner([str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start"]),
            capture_output=True,
            text=True,
        )
        if run.returncode == 0:
            return Cluster(data, port, bin_, settings)
        if "could not bind" not in log.read_text(encoding="utf-8", errors="replace"):
            break
    pytest.fail(f"a private PostgreSQL did not start: {log.read_text(errors='replace')[-800:]}")


def _stop(cluster: Cluster) -> None:
    subprocess.run(
        _as_owner(
            [str(cluster.bin / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate"] + ["stop"]
        ),
        capture_output=True,
    )


@contextmanager
def private_cluster(**settings: object) -> Iterator[Cluster]:
    """A fresh cluster with ``settings`` (and a database ``ctx`` holding ``vector``),
    stopped and deleted afterwards."""
    bin_ = bindir()
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' user to run PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="contextos-pgpriv."))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "primary"
    clusters: list[Cluster] = []
    try:
        init = subprocess.run(
            _as_owner(
                [str(bin_ / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
                + ["--no-locale", "--no-sync", "--auth=trust"]
            ),
            capture_output=True,
            text=True,
        )
        assert init.returncode == 0, init.stdout + init.stderr
        with (data / "postgresql.conf").open("a", encoding="utf-8") as f:
            f.write("include 'private.conf'\ninclude_if_exists 'set.conf'\n")
        clusters.append(_start(data, bin_, settings))
        with connect(clusters[0].url()) as conn:
            conn.execute("CREATE DATABASE ctx")
        try:
            with connect(clusters[0].url("ctx")) as conn:
                conn.execute("CREATE EXTENSION vector")
        except Exception as exc:  # psycopg's error: which one does not matter here
            pytest.skip(f"pgvector is not installed for {bin_}: {exc}")
        yield clusters[0]
    finally:
        for cluster in clusters:
            _stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def standby_of(primary: Cluster, **settings: object) -> Iterator[Cluster]:
    """A hot standby streaming from ``primary`` (``pg_basebackup -R``), with
    ``settings``; stopped and deleted afterwards."""
    data = primary.data.parent / "standby"
    backup = subprocess.run(
        _as_owner(
            [str(primary.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)]
            + ["-U", "postgres", "-D", str(data), "-R", "-X", "stream", "--no-sync"]
        ),
        capture_output=True,
        text=True,
    )
    assert backup.returncode == 0, backup.stdout + backup.stderr
    (data / "set.conf").unlink(missing_ok=True)
    # A standby needs the primary's settings (max_wal_senders, ...) at least as high.
    standby = _start(data, primary.bin, {**primary.settings, "hot_standby": "on", **settings})
    try:
        yield standby
    finally:
        _stop(standby)
        shutil.rmtree(data, ignore_errors=True)
