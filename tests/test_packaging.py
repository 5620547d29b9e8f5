"""What ships: the wheel holds every file the package reads at run time, and the sdist
what it takes to build that wheel again and run the suite (a review, session 34: the
sdist took the test files but not their helpers, and the unpacked suite did not
collect). Built from a clean copy of the tracked files, as a release would be."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built from the tracked files of this checkout."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    tree = tmp_path_factory.mktemp("tree")
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = tree / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    out = tree / "dist"
    code = (
        "import setuptools.build_meta as b, sys; "
        f"s = b.build_sdist({str(out)!r}); w = b.build_wheel({str(out)!r}); print(s); print(w)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sdist, wheel = done.stdout.split()[-2:]
    return out / sdist, out / wheel


def test_the_sdist_holds_the_suite_and_what_make_test_runs(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tests = {n for n in names if n.startswith("tests/") and n.endswith(".py") and "/" not in n[6:]}
    listed = subprocess.run(
        ["git", "ls-files", "tests/*.py"], cwd=REPO, capture_output=True, text=True, check=True
    )
    tracked = {n for n in listed.stdout.split() if "/" not in n[6:]}
    assert tracked <= tests, sorted(tracked - tests)[:10]
    assert {"Makefile", "scripts/postgres.sh", "scripts/test.sh", "pyproject.toml"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_holds_every_file_the_package_reads(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    listed = subprocess.run(
        ["git", "ls-files", "src/contextos"], cwd=REPO, capture_output=True, text=True, check=True
    )
    shipped = {name.removeprefix("src/") for name in listed.stdout.split()}
    assert shipped <= names, sorted(shipped - names)[:10]
