"""A process that only serves tunes its garbage collector; an app in a host process
(tests, an embedding application) leaves the host's collector alone."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from contextos.server.app import (  # noqa: E402
    SERVING_GC_THRESHOLD,
    ServerConfig,
    close_app,
    create_app,
)
from contextos.testing.embedders import HashEmbedder  # noqa: E402


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Give the test process its collector back as it was. Garbage earlier tests left
    (an unclosed pipe) is finalised first, so the serve-time ``gc.collect()`` does not
    report it here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _serve_once(db: Path, *, close_on_shutdown: bool) -> None:
    app = create_app(
        ServerConfig(db=str(db), embedder="hash"),
        embedder=HashEmbedder(),
        close_on_shutdown=close_on_shutdown,
    )
    try:
        with TestClient(app) as client:  # runs the lifespan: startup, then shutdown
            assert client.get("/healthz").status_code == 200
    finally:
        if not close_on_shutdown:
            close_app(app)


@pytest.mark.usefixtures("restored_gc")
def test_the_serve_process_freezes_its_startup_heap_and_collects_young_objects_less_often(
    tmp_path: Path,
) -> None:
    gc.unfreeze()
    assert gc.get_threshold()[0] != SERVING_GC_THRESHOLD
    older = gc.get_threshold()[1:]
    _serve_once(tmp_path / "m.db", close_on_shutdown=True)
    assert gc.get_threshold() == (SERVING_GC_THRESHOLD, *older)
    assert gc.get_freeze_count() > 10_000  # the modules and the app, out of every pass


@pytest.mark.usefixtures("restored_gc")
def test_an_app_hosted_in_another_process_leaves_its_collector_alone(tmp_path: Path) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    _serve_once(tmp_path / "m.db", close_on_shutdown=False)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
