"""``contextos bench serve --routes``: CPU per request of each route, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from contextos.bench.serve_routes import route_cpu
from contextos.cli.main import cli

pytest.importorskip("fastapi")


def test_routes_report_cpu_per_request_of_each_route(tmp_path: Path) -> None:
    out = tmp_path / "routes.json"
    args = ["bench", "serve", "--routes", "--embedder", "hash", "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    costs = report["cpu_ms_per_request"]
    assert set(costs) == {"healthz", "add", "search"}
    assert all(ms > 0 for ms in costs.values())
    # A search runs the framework's floor and a store query besides: it costs more.
    assert costs["search"] > costs["healthz"]
    assert "search:" in result.output and "ms CPU per request" in result.output


def test_routes_refuse_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="requests"):
        route_cpu(embedder="hash", requests=0)
