"""Every Python example in README.md and docs/*.md runs, as a reader would run it.

A file's examples run top to bottom in one namespace (later examples use names
that earlier ones defined), in an empty temporary directory, offline: the hash
embedder, the default database in the temp directory, and the SDK clients
pointed at the local fake Anthropic and OpenAI servers through their usual
environment variables. An example that cannot run here says why in a comment
on the line before its fence: ``<!-- not run: REASON -->``.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(
    r"(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?^```python\n(?P<code>.*?)^```", re.S | re.M
)


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    code: str
    skip_reason: str | None


def examples(path: Path) -> list[Example]:
    """The ```python blocks of a Markdown file, in order, with their skip reasons."""
    text = path.read_text(encoding="utf-8")
    return [
        Example(path, text.count("\n", 0, m.start("code")) + 1, m.group("code"), m["reason"])
        for m in FENCE.finditer(text)
    ]


def test_every_python_block_is_found() -> None:
    """The pattern above sees each fence (a missed block would silently go untested)."""
    for path in DOCS:
        fences = path.read_text(encoding="utf-8").count("```python")
        assert len(examples(path)) == fences, path.name


def test_every_skipped_example_says_why() -> None:
    skipped = [e for path in DOCS for e in examples(path) if e.skip_reason is not None]
    for e in skipped:
        reason = e.skip_reason or ""
        assert len(reason.split()) >= 4, f"{e.path.name}:{e.line}: give a real reason"
    runnable = [e for path in DOCS for e in examples(path) if e.skip_reason is None]
    assert len(runnable) > 2 * len(skipped)  # skipping is the exception


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory and an environment that needs no network."""
    from contextos.testing.fake_anthropic import FakeAnthropic
    from contextos.testing.fake_openai import FakeOpenAI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTEXTOS_EMBEDDER", "hash")
    monkeypatch.setenv("CONTEXTOS_DB", str(tmp_path / "default.db"))
    with FakeAnthropic() as anthropic_fake, FakeOpenAI() as openai_fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield tmp_path


# Examples end like scripts: an SDK client's keep-alive socket is left to the garbage
# collector (collected below, inside the test), which reports it as unclosed.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_examples_run(path: Path, offline_env: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    try:
        for example in examples(path):
            if example.skip_reason is not None:
                continue
            code = compile(example.code, f"{path.name}:{example.line}", "exec")
            before = _memories(namespace)
            exec(code, namespace)  # noqa: S102 - the documentation is the program
            # Each block is a program of its own: one that opens ``memory`` again ends
            # the last block's (which would otherwise be dropped unclosed, and warn).
            for memory in before - _memories(namespace):
                memory.close()
    finally:
        _close(namespace)
        namespace.clear()
        gc.collect()


def _memories(namespace: dict[str, object]) -> set[Any]:
    """The Memories the examples so far have bound to a name."""
    from contextos.memory import Memory

    return {v for v in namespace.values() if isinstance(v, Memory)}


def _close(namespace: dict[str, object]) -> None:
    """Close what the examples opened, the way a program ends: memories, stores."""
    from contextos.memory import Memory
    from contextos.store.base import Store

    for value in list(namespace.values()):
        flush = getattr(getattr(value, "context", None), "flush", None)
        if callable(flush):  # a wrapped client: let its last commit land
            flush()
    for value in list(namespace.values()):
        if isinstance(value, Memory):
            value.close()
    for value in list(namespace.values()):
        if isinstance(value, Store) and not isinstance(value, type):
            value.close()


# -- shell examples -------------------------------------------------------------------
# They need a shell, a server or a key, so they are not run here (the README's are walked
# by hand); every command and flag they name must exist, though.

SHELL_FENCE = re.compile(r"^```(?:bash|sh)\n(?P<code>.*?)^```", re.S | re.M)


def shell_invocations(path: Path) -> list[list[str]]:
    """The ``contextos ...`` invocations of a file's shell blocks, as word lists.

    A synopsis line (``contextos get ID | list -u ana · window``) gives one
    invocation per segment, each relative to ``contextos``.
    """
    found = []
    for block in SHELL_FENCE.finditer(path.read_text(encoding="utf-8")):
        for line in block.group("code").splitlines():
            line = re.sub(r"\s#\s.*$", "", line)  # a trailing comment
            start = line.find("contextos ")
            if start < 0 or line.lstrip().startswith("make "):
                continue
            rest = re.split(r"\s\|\s+head\b|\)|\s&\s*$", line[start + len("contextos ") :])[0]
            for segment in re.split(r"\s[|·]\s", rest):
                found.append(segment.split())
    return found


def _check_invocation(words: list[str]) -> None:
    import click

    from contextos.cli.main import cli

    def options(command: click.Command) -> set[str]:
        return {o for p in command.params for o in getattr(p, "opts", []) + p.secondary_opts}

    allowed = options(cli)
    command: click.Command = cli
    i = 0
    while isinstance(command, click.Group):  # a group takes no arguments: a command
        names = words[i].split("/") if i < len(words) else [""]  # `session add/show`
        subs = [command.get_command(click.Context(command), n) for n in names]
        found = [sub for sub in subs if sub is not None]
        assert len(found) == len(names), f"no such command: contextos {' '.join(words)}"
        command = found[0]
        allowed |= options(command)
        i += 1
    flags = [w.split("=")[0] for w in words[i:] if w.startswith("-") and w != "-"]
    unknown = [f for f in flags if f not in allowed]
    assert not unknown, f"contextos {' '.join(words)}: unknown {unknown}"


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_shell_examples_name_real_commands_and_flags(path: Path) -> None:
    for words in shell_invocations(path):
        _check_invocation(words)


def test_shell_examples_are_found() -> None:
    readme = shell_invocations(REPO / "README.md")
    assert readme[0][:9] == ["add", '"I', "moved", "to", "Lisbon", "in", 'May"', "-u", "ana"]
    assert ["list", "-u", "ana"] in readme and ["forget", "-u", "ana", "--yes"] in readme
    assert ["keys", "create", "--tenant", "acme", "--name", "laptop"] in readme  # in $(...)
    # Every command line of the README's blocks, in order (a parser that lost lines would
    # check fewer of them).
    assert [words[0] for words in readme] == [
        *("add", "search", "list", "update", "delete", "forget", "count", "session", "window"),
        *("keys", "serve", "mcp"),
    ]


# -- the reference pages ----------------------------------------------------------------


def _leaf_commands() -> list[tuple[str, object]]:
    """Every runnable ``contextos`` command, by its name under ``contextos``."""
    import click

    from contextos.cli.main import cli

    found: list[tuple[str, object]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            found.append((" ".join(path), command))

    walk(cli, [])
    return found


def test_the_cli_reference_has_a_row_naming_each_flag_of_each_command() -> None:
    """docs/cli.md keeps up with the commands: a table row per command (``| `NAME ...``),
    and in it every long option of that command but ``--json``, ``--db`` and ``--tenant``
    that only repeat the group's (a command that opens the database takes them after
    its name too: said once, above the tables), not those a command has of its own
    (``keys create --tenant``)."""
    import click

    rows = (REPO / "docs" / "cli.md").read_text(encoding="utf-8").splitlines()
    commands = _leaf_commands()
    assert len(commands) > 30
    missing = []
    for name, command in commands:
        own = [r for r in rows if re.match(rf"\| `{re.escape(name)}[ `]", r)]
        assert len(own) == 1, f"docs/cli.md: {len(own)} rows for `{name}`"
        assert isinstance(command, click.Command)
        for param in command.params:
            if not param.expose_value and param.opts in (["--db"], ["--tenant"]):
                continue  # the group's, repeated after the command (common.group_options)
            for opt in [*param.opts, *param.secondary_opts]:
                named = re.search(rf"{re.escape(opt)}(?![\w-])", own[0])
                if opt.startswith("--") and opt != "--json" and not named:
                    missing.append(f"{name} {opt}")
    assert missing == []


def test_the_api_reference_names_every_public_verb_and_parameter_of_memory() -> None:
    """docs/api.md lists each public method and property of Memory, and each of its
    parameters, as the code declares them (a new verb or keyword must be documented)."""
    import inspect

    from contextos import Memory

    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    missing = []
    members = {n: v for n, v in vars(Memory).items() if not n.startswith("_")}
    members["__init__"] = Memory.__init__
    for name, member in members.items():
        if isinstance(member, property):
            if f"`{name}` (property)" not in page:
                missing.append(name)
            continue
        assert callable(member)
        shown = "Memory" if name == "__init__" else name
        declared = [p for p in inspect.signature(member).parameters if p != "self"]
        # `name(` and every parameter in the code's order, in one paragraph (no blank line).
        gap = r"(?:(?!\n\n)[\s\S])*?"
        pattern = rf"{shown}\(" + "".join(rf"{gap}\b{re.escape(p)}\b" for p in declared)
        if not re.search(pattern, page):
            missing.append(f"{shown}({', '.join(declared)})")
    assert missing == []


# -- choices and printed output named in prose ------------------------------------------


def _documented_choices() -> list[tuple[str, str, str, list[str]]]:
    """Each ``contextos ... --flag a|b|c`` on one line of the docs (a heading, a code
    span or a block): the place, the command's words, the flag and the values named."""
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(r"contextos ([^`\n]*)", line):
                words = [w.strip("[]") for w in match.group(1).split()]
                for flag, values in zip(words, words[1:], strict=False):
                    if flag.startswith("--") and "|" in values:
                        place = f"{path.name}:{number}"
                        # A table cell escapes its pipes: `--memory default\|beside`.
                        named = values.replace("\\|", "|").split("|")
                        found.append((place, " ".join(words), flag, named))
    return found


def test_every_documented_choice_is_one_the_option_takes() -> None:
    """``## `contextos bench locomo --memory default|turns|...``` named a mode renamed
    long before (``beside``): the command answered "'turns' is not one of ..." (s41)."""
    import click

    from contextos.cli.main import cli

    checked, wrong = 0, []
    for place, words, flag, values in _documented_choices():
        command: click.Command = cli
        for word in words.split():
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(click.Context(command), word)
            assert sub is not None, f"{place}: no such command: contextos {words}"
            command = sub
        [param] = [p for p in command.params if flag in getattr(p, "opts", [])]
        if isinstance(param.type, click.Choice):
            checked += 1
            wrong += [f"{place}: {flag} {v}" for v in values if v not in param.type.choices]
    assert wrong == []
    assert checked >= 5  # the pattern still finds the docs' choice lists


def test_the_agent_bench_prints_what_docs_agent_md_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/agent.md says its bench figures are deterministic; they are, but the block
    went stale when the tools' texts changed (s41 docs review). Re-run the command and
    paste its output into the block when this fails."""
    from contextos.agent.bench import main

    page = (REPO / "docs" / "agent.md").read_text(encoding="utf-8")
    command = "$ python -m contextos.agent.bench --turns 30 --edits 5\n"
    block = page.split(command, 1)[1].split("```", 1)[0]
    assert main(["--turns", "30", "--edits", "5"]) == 0
    assert capsys.readouterr().out == block


def test_docs_agent_md_gives_the_owner_lock_times_the_code_uses() -> None:
    """docs/agent.md gave the owner lock's lease as 20 s in one place and 60 s in
    another (a review, s57); every lease length and wait it states is the code's."""
    from contextos.agent.lock import LEASE_S, WAIT_S

    page = " ".join((REPO / "docs" / "agent.md").read_text(encoding="utf-8").split())
    leases = re.findall(r"lease (?:of|lasts) (\d+) s", page)
    waits = re.findall(r"waits(?: up to)? (\d+) s for (?:it|the lock)", page)
    assert leases and {float(n) for n in leases} == {LEASE_S}, leases
    assert waits and {float(n) for n in waits} == {WAIT_S}, waits
