"""Meta-tests: the public API is complete and the README's example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import contextos

README = Path(__file__).resolve().parent.parent / "README.md"


def test_all_names_resolve_and_are_documented() -> None:
    for name in contextos.__all__:
        obj = getattr(contextos, name)
        if callable(obj) and not name.startswith("_"):
            assert obj.__doc__, f"contextos.{name} has no docstring"


def test_memory_verbs_have_docstrings() -> None:
    for verb in (
        "add",
        "search",
        "get",
        "get_all",
        "update",
        "delete",
        "history",
        "forget",
        "flush",
        "close",
    ):
        assert getattr(contextos.Memory, verb).__doc__, verb


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"## Ten lines\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTEXTOS_EMBEDDER", "hash")
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102
    hits = namespace["hits"]
    assert [h.record.text for h in hits] == ["I'm allergic to peanuts"]  # type: ignore[attr-defined]
    namespace["memory"].close()  # type: ignore[attr-defined]


def test_readme_keeps_exactly_the_two_setup_commands() -> None:
    text = README.read_text()
    setup = text.split("## Set-up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", setup, re.M)
    assert commands == ["make demo", "make test"]
