"""What `make demo` installs: scripts/requirements.py splits pyproject.toml's list so
that no requirement is lost, and the packages installed without their dependencies
(NO_DEPS in the Makefile) really run without them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "requirements.py"
MAKEFILE = (REPO / "Makefile").read_text()


def _make_var(name: str) -> str:
    match = re.search(rf"^{name} := (.+)$", MAKEFILE, re.M)
    assert match, f"the Makefile lost {name}"
    return match.group(1).strip()


def _requirements(*args: str) -> list[str]:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_the_split_loses_no_requirement_of_the_demo_extras() -> None:
    extras, no_deps = _make_var("DEMO_EXTRAS"), _make_var("NO_DEPS").split()
    every = _requirements("--extras", extras)
    only = _requirements("--extras", extras, "--only", *no_deps)
    rest = _requirements("--extras", extras, "--except", *no_deps)
    assert sorted(only + rest) == sorted(every)
    assert len(only) == len(no_deps) and not set(only) & set(rest)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = list(project["dependencies"])
    for extra in extras.split(","):
        expected += project["optional-dependencies"][extra]
    assert every == list(dict.fromkeys(expected))


def test_self_references_expand_and_unknown_names_are_refused() -> None:
    dev = _requirements("--extras", "dev")
    assert "matplotlib>=3.8" in dev and "onnx>=1.15" in dev  # dev -> all -> bench
    assert not any(line.startswith("contextos") for line in dev)
    for args, message in (
        (["--extras", "nosuch"], "unknown extra 'nosuch'"),
        (["--only", "torch"], "'torch' is not a requirement"),
    ):
        r = subprocess.run(
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
        )
        assert r.returncode != 0 and message in r.stderr, r.stderr


# What each NO_DEPS package declares and contextos never needs at run time.
UNUSED_AT_RUN_TIME = {"tokenizers": ["huggingface_hub"]}
#: Dev-extra packages the embedder once needed: onnx built the graph.
DEV_ONLY = ["onnx"]


@pytest.mark.slow
def test_embedding_runs_with_the_skipped_dependencies_unimportable(tmp_path: Path) -> None:
    """``sys.modules[name] = None`` makes ``import name`` fail, as in the venv that
    `make demo` made; building the graph (first use), tokenizing and embedding must
    need neither the skipped dependencies nor the dev-only onnx."""
    assert set(_make_var("NO_DEPS").split()) == set(UNUSED_AT_RUN_TIME)
    blocked = [m for mods in UNUSED_AT_RUN_TIME.values() for m in mods] + DEV_ONLY
    code = (
        "import sys; from pathlib import Path; "
        f"sys.modules.update(dict.fromkeys({blocked!r})); "
        "from contextos.embed import MiniLMEmbedder; "
        "v = MiniLMEmbedder(cache_path=Path(sys.argv[1])).embed(['tea', 'green tea']); "
        "print(round(float(v[0] @ v[1]), 4))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert 0.5 < float(r.stdout) < 1.0
    assert len(list(tmp_path.glob("*.onnx"))) == 1  # built here, not found in a cache
