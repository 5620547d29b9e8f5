"""Benchmark plots are optional: without matplotlib (``make demo`` installs none) a
benchmark still writes its JSON report, exits 0 and says in one line how to get plots.

A venv without matplotlib is not available to the suite, so the subprocess tests make
it absent the way Python sees an uninstalled package: ``sys.modules["matplotlib"] =
None`` makes ``import matplotlib`` raise ImportError. Nothing of ours is patched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LITM_DIR, REPO
from contextos.bench.plots import PLOTS_HINT, write_plots

#: A litm report as run_litm shapes it, small enough to plot in a test.
LITM_REPORT = {"datasets": {"tiny": {"slot_histogram": [3, 0, 1, 2], "edge_share": 0.83}}}

_WITHOUT_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; "


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env_path = str(REPO / "src")
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_MATPLOTLIB + code, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        check=False,
    )


def test_with_matplotlib_the_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra (matplotlib) is not installed")
    line = write_plots(LITM_REPORT, tmp_path, "litm")
    png = tmp_path / "litm-tiny.png"
    assert png.stat().st_size > 1000
    assert line == f"wrote {png}"


def test_without_matplotlib_no_plot_and_one_line_saying_how(tmp_path: Path) -> None:
    r = _python(
        "import json, sys; from contextos.bench.plots import write_plots; "
        "print(write_plots(json.loads(sys.argv[1]), sys.argv[2], 'litm'))",
        json.dumps(LITM_REPORT),
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == PLOTS_HINT
    assert "pip install 'contextos[bench]'" in PLOTS_HINT
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no plots for 'scale'"):
        write_plots(LITM_REPORT, tmp_path, "scale")  # type: ignore[arg-type]


@pytest.mark.skipif(not LITM_DIR.exists(), reason=f"LITM data not at {LITM_DIR}")
def test_bench_without_matplotlib_writes_its_report_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "litm.json"
    r = _python(
        "from contextos.cli.main import main; main()",
        *("bench", "litm", "--data", str(LITM_DIR), "--limit", "3", "--out", str(out)),
    )
    assert r.returncode == 0, r.stderr
    assert "edge share" in r.stdout
    assert set(json.loads(out.read_text())["datasets"])
    assert list(tmp_path.glob("*.png")) == []
    assert PLOTS_HINT in " ".join(r.stderr.split())  # one line, however the terminal wraps
