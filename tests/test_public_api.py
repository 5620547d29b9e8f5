"""Meta-tests: the public API is complete and the README's example runs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import contextos

README = Path(__file__).resolve().parent.parent / "README.md"


def test_exported_members() -> None:
    """Like httpx's test: ``__all__`` is exactly the package's public names, sorted:
    those it defines and those it imports on first use (PEP 562, ``dir()``)."""
    public = {
        name
        for name in dir(contextos)
        if not name.startswith("_")
        and not isinstance(getattr(contextos, name), types.ModuleType)  # submodules
        and name != "annotations"  # from __future__
    }
    assert set(contextos.__all__) == public | {"__version__"}
    assert contextos.__all__ == sorted(contextos.__all__, key=lambda n: (n.islower(), n))
    assert len(contextos.__all__) == len(set(contextos.__all__))


def test_import_contextos_loads_no_submodule_until_a_name_is_used() -> None:
    """``import contextos`` stays light (a console script's Ctrl-C, every CLI start):
    the public names are imported from their modules on first use."""
    code = (
        "import sys, contextos\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('contextos.'))\n"
        "assert loaded == [], loaded\n"
        "assert 'numpy' not in sys.modules\n"
        "from contextos import Memory\n"
        "assert contextos.Memory is Memory and 'contextos.memory.api' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_all_names_resolve_and_are_documented() -> None:
    """Every exported name exists and says what it is for, and so does every public
    method and property of an exported class (what a user reaches with one dot)."""
    missing = []
    for name in contextos.__all__:
        obj = getattr(contextos, name)  # AttributeError: __all__ names a ghost
        if name == "__version__":
            assert isinstance(obj, str) and obj
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = value.fget if isinstance(value, property) else value
                func = getattr(func, "__func__", func)  # classmethod/staticmethod
                if (inspect.isfunction(func) or isinstance(value, property)) and not (func.__doc__):
                    missing.append(f"{name}.{attr}")
    assert not missing, f"undocumented public API: {missing}"


def test_memory_verbs_have_docstrings() -> None:
    for verb in (
        "add",
        "search",
        "get",
        "get_all",
        "update",
        "delete",
        "delete_many",
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
    monkeypatch.setenv("CONTEXTOS_DB", str(tmp_path / "default.db"))  # what Memory() opens
    for run in (1, 2):  # a second run finds the fact stored once (no duplicate)
        namespace: dict[str, object] = {}
        exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102
        hits = namespace["hits"]
        assert [h.record.text for h in hits] == ["I'm allergic to peanuts"], run  # type: ignore[attr-defined]
        namespace["memory"].close()  # type: ignore[attr-defined]
    assert (tmp_path / "default.db").exists()


def test_readme_keeps_exactly_the_two_setup_commands() -> None:
    text = README.read_text()
    setup = text.split("## Set-up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", setup, re.M)
    assert commands == ["make demo", "make test"]


def _extras(names: set[str], optional: dict[str, list[str]]) -> set[str]:
    """Extras with the ones they pull in (``all = ["contextos[server,...]"]``)."""
    out = set(names)
    for name in names:
        for req in optional.get(name, []):
            inner = re.fullmatch(r"contextos\[([\w,]+)\]", req)
            if inner:
                out |= _extras(set(inner.group(1).split(",")), optional)
    return out


def test_make_demo_installs_what_the_readme_uses_next() -> None:
    """The README's steps after `make demo` (serve, mcp, chat --provider, a postgresql://
    --db) must not fail for a missing extra in the .venv that `make demo` made."""
    import tomllib

    makefile = (README.parent / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "--extras $(DEMO_EXTRAS)" in recipe, "make demo installs no extras"
    named = re.findall(r"^DEMO_EXTRAS := ([\w,]+)$", makefile, re.M)
    assert named, "make demo installs no extras"
    optional = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installed = _extras({e for group in named for e in group.split(",")}, optional)
    readme = README.read_text()
    needs = {"server": "contextos serve", "mcp": "contextos mcp", "postgres": "postgresql://"}
    needs |= {"anthropic": "anthropic", "openai": "OpenAI"}
    for extra, mention in needs.items():
        assert mention in readme, mention  # the README still uses it
        assert extra in installed, f"make demo does not install contextos[{extra}]"


def test_every_module_imports_first_in_a_fresh_process() -> None:
    """Any module a user or the docs name can be the first one imported: a circular
    import that works only when another module came first (``contextos.engine.context``
    before ``contextos.providers``) fails in users' apps and never in a test run that
    imported the package whole. Each module is imported in a forked child of a process
    that has imported no contextos module (third-party packages preloaded for speed)."""
    code = r"""
import os, sys, traceback
import numpy, sqlite3, httpx, pydantic, fastapi, starlette, click, rich  # not ours
root = os.path.dirname(sys.argv[1])
names = sorted(
    os.path.relpath(os.path.join(d, f), root)[:-3].replace(os.sep, ".").removesuffix(".__init__")
    for d, _, files in os.walk(sys.argv[1]) for f in files
    if f.endswith(".py") and f != "__main__.py"  # runs the CLI
)
assert not [m for m in sys.modules if m.startswith("contextos")]
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print(len(names), "modules")
assert not failed, failed
"""
    import contextos as package

    folder = Path(package.__file__).parent
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert int(out.stdout.split()[0]) > 100
