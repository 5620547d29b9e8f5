"""The memory tool, command by command, as Anthropic documents it (the SDK's reference
backend's texts), plus the path-confinement attack and scope isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.tools import BetaAbstractMemoryTool, BetaAsyncAbstractMemoryTool, ToolError

from contextos import Memory
from contextos.agent import AsyncMemoryTool, MemoryTool
from contextos.agent.files import MAX_FILE_CHARS, MemoryFiles
from contextos.agent.paths import MAX_PATH_CHARS, MemoryFileError
from contextos.errors import ScopeError, StoreError
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder

LISTING = "Here're the files and directories up to 2 levels deep in {}, excluding hidden items:"


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    """A Memory on every Store backend (SQLite file; PostgreSQL when scripts/postgres.sh runs)."""
    m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    yield m  # no worker to stop (background_embedding=False); the store fixture closes the store


@pytest.fixture
def tool(memory: Memory) -> MemoryTool:
    return MemoryTool(memory, user_id="ana")


def run(tool: MemoryTool, **command: Any) -> str:
    """Through the SDK's own entry point (``call`` builds the typed command)."""
    out = tool.call(command)
    assert isinstance(out, str)
    return out


def refused(tool: MemoryTool, **command: Any) -> str:
    with pytest.raises(ToolError) as info:
        tool.call(command)
    return str(info.value)


def test_subclasses_the_sdk_abstract_tools(memory: Memory) -> None:
    assert isinstance(MemoryTool(memory, user_id="ana"), BetaAbstractMemoryTool)
    assert isinstance(AsyncMemoryTool(memory, user_id="ana"), BetaAsyncAbstractMemoryTool)
    assert MemoryTool(memory, user_id="ana").to_dict() == {
        "type": "memory_20250818",
        "name": "memory",
    }


@pytest.mark.parametrize("tool_class", [MemoryTool, AsyncMemoryTool])
def test_both_tools_take_the_same_scope_and_cache_control(
    memory: Memory, tool_class: type[MemoryTool] | type[AsyncMemoryTool]
) -> None:
    """One constructor for both: the scope reaches the files, cache_control the SDK param."""
    tool = tool_class(memory, agent_id="bot", cache_control={"type": "ephemeral"})
    assert tool.to_dict()["cache_control"] == {"type": "ephemeral"}
    assert (tool.files.scope.user_id, tool.files.scope.agent_id) == (None, "bot")


def test_needs_a_scope(memory: Memory) -> None:
    with pytest.raises(ScopeError):
        MemoryTool(memory)
    with pytest.raises(ValueError):
        MemoryTool(memory, user_id=" ")


# -- view ------------------------------------------------------------------------------


def test_view_empty_root(tool: MemoryTool) -> None:
    assert run(tool, command="view", path="/memories") == (
        LISTING.format("/memories") + "\n0B\t/memories"
    )


def test_view_directory_two_levels_with_sizes_hidden_excluded(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/notes.md", file_text="a" * 1536)
    run(tool, command="create", path="/memories/a/b/c.md", file_text="deep")
    run(tool, command="create", path="/memories/a/b/c/d.md", file_text="deeper")
    run(tool, command="create", path="/memories/a-b.md", file_text="x")
    run(tool, command="create", path="/memories/.secret", file_text="hidden")
    run(tool, command="create", path="/memories/node_modules/x.js", file_text="js")
    assert run(tool, command="view", path="/memories") == "\n".join(
        [
            LISTING.format("/memories"),
            "1.5K\t/memories",
            "10B\t/memories/a/",
            "10B\t/memories/a/b/",
            "1B\t/memories/a-b.md",
            "1.5K\t/memories/notes.md",
        ]
    )
    assert run(tool, command="view", path="/memories/a") == "\n".join(
        [
            LISTING.format("/memories/a"),
            "10B\t/memories/a",
            "10B\t/memories/a/b/",
            "6B\t/memories/a/b/c/",
            "4B\t/memories/a/b/c.md",
        ]
    )


def test_view_file_with_line_numbers_and_range(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/f.txt", file_text="one\ntwo\nthree\nfour")
    assert run(tool, command="view", path="/memories/f.txt") == (
        "Here's the content of /memories/f.txt with line numbers:\n"
        "     1\tone\n     2\ttwo\n     3\tthree\n     4\tfour"
    )
    assert run(tool, command="view", path="/memories/f.txt", view_range=[2, 3]) == (
        "Here's the content of /memories/f.txt with line numbers:\n     2\ttwo\n     3\tthree"
    )
    assert run(tool, command="view", path="/memories/f.txt", view_range=[3, -1]).endswith(
        "     3\tthree\n     4\tfour"
    )


def test_view_errors(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/f.txt", file_text="one\ntwo")
    assert refused(tool, command="view", path="/memories/nope") == (
        "The path /memories/nope does not exist. Please provide a valid path."
    )
    assert refused(tool, command="view", path="/memories/f.txt", view_range=[0, 1]) == (
        "Invalid `view_range`: [0, 1]. Its first element `0` should be within the range "
        "of lines of the file: [1, 2]"
    )
    assert "second element `9`" in refused(
        tool, command="view", path="/memories/f.txt", view_range=[1, 9]
    )
    assert (
        refused(tool, command="view", path="/etc") == "Path must start with /memories, got: '/etc'"
    )


# -- create ----------------------------------------------------------------------------


def test_create_and_refuse_existing(tool: MemoryTool) -> None:
    assert run(tool, command="create", path="/memories/x.md", file_text="hi\n") == (
        "File created successfully at: /memories/x.md"
    )
    assert tool.files.read("/memories/x.md") == "hi\n"  # exact bytes, trailing newline kept
    assert refused(tool, command="create", path="/memories/x.md", file_text="again") == (
        "File /memories/x.md already exists"
    )
    assert tool.files.read("/memories/x.md") == "hi\n"
    run(tool, command="create", path="/memories/dir/y.md", file_text="")
    assert refused(tool, command="create", path="/memories/dir", file_text="z") == (
        "File /memories/dir already exists"
    )
    assert "is a file, not a directory" in refused(
        tool, command="create", path="/memories/x.md/z", file_text="z"
    )


def test_create_refuses_over_long_files(tool: MemoryTool) -> None:
    msg = refused(
        tool, command="create", path="/memories/big", file_text="a" * (MAX_FILE_CHARS + 1)
    )
    assert "holds at most" in msg
    assert tool.files.files() == []


def test_a_file_ending_in_long_whitespace_is_a_tool_error(tool: MemoryTool) -> None:
    """The trailing whitespace is kept in the record's metadata, whose limit is in bytes
    of JSON: a file within the size limit failed with the store's ValueError, which the
    SDK's runner logged as a crash and sent the model as a repr (a review)."""
    msg = refused(tool, command="create", path="/memories/pad", file_text="note" + "\n" * 40_000)
    assert "ends in 40,000 characters of whitespace" in msg
    # the limit in the unit it is checked in: 25,000 ideographic spaces are 75,000 bytes
    msg = refused(tool, command="create", path="/memories/pad", file_text="x" + "\u3000" * 25_000)
    assert "75,0" in msg and "at most 65,536 fit" in msg, msg
    assert tool.files.files() == []
    run(tool, command="create", path="/memories/pad", file_text="note" + "\n" * 1000)
    assert tool.files.read("/memories/pad") == "note" + "\n" * 1000  # kept exactly
    msg = refused(  # an edit that makes the file end in too much whitespace
        tool,
        command="str_replace",
        path="/memories/pad",
        old_str="note\n",
        new_str="note" + "\n" * 40_000,
    )
    assert "characters of whitespace" in msg
    assert tool.files.read("/memories/pad") == "note" + "\n" * 1000  # unchanged


# -- str_replace -------------------------------------------------------------------------


def test_str_replace_unique_match_with_snippet(tool: MemoryTool) -> None:
    run(
        tool,
        command="create",
        path="/memories/p.md",
        file_text="l1\nl2\nAna likes coffee\nl4\nl5\nl6\n",
    )
    out = run(tool, command="str_replace", path="/memories/p.md", old_str="coffee", new_str="tea")
    assert out == (
        "The memory file has been edited. Here is the snippet showing the change "
        "(with line numbers):\n"
        "     1\tl1\n     2\tl2\n     3\tAna likes tea\n     4\tl4\n     5\tl5"
    )
    assert tool.files.read("/memories/p.md") == "l1\nl2\nAna likes tea\nl4\nl5\nl6\n"


def test_str_replace_refuses_zero_or_several_matches(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/p.md", file_text="tea\nmilk\ntea\n")
    assert refused(
        tool, command="str_replace", path="/memories/p.md", old_str="coffee", new_str="x"
    ) == (
        "No replacement was performed, old_str `coffee` did not appear verbatim in /memories/p.md."
    )
    assert refused(
        tool, command="str_replace", path="/memories/p.md", old_str="tea", new_str="x"
    ) == (
        "No replacement was performed. Multiple occurrences of old_str `tea` in lines: 1, 3. "
        "Please ensure it is unique"
    )
    assert tool.files.read("/memories/p.md") == "tea\nmilk\ntea\n"
    assert refused(
        tool, command="str_replace", path="/memories/q.md", old_str="a", new_str="b"
    ) == ("The path /memories/q.md does not exist. Please provide a valid path.")
    run(tool, command="create", path="/memories/d/f", file_text="x")
    assert refused(tool, command="str_replace", path="/memories/d", old_str="a", new_str="b") == (
        "The path /memories/d is not a file."
    )


# -- insert ------------------------------------------------------------------------------


def test_insert_at_line(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/l.md", file_text="a\nb\n")
    assert run(
        tool, command="insert", path="/memories/l.md", insert_line=0, insert_text="top\n"
    ) == ("The file /memories/l.md has been edited.")
    run(tool, command="insert", path="/memories/l.md", insert_line=3, insert_text="end")
    run(tool, command="insert", path="/memories/l.md", insert_line=2, insert_text="mid")
    assert tool.files.read("/memories/l.md") == "top\na\nmid\nb\nend\n"
    assert refused(
        tool, command="insert", path="/memories/l.md", insert_line=9, insert_text="x"
    ) == ("Invalid `insert_line` parameter: 9. It should be within the range [0, 5].")
    assert "[0, 5]" in refused(
        tool, command="insert", path="/memories/l.md", insert_line=-1, insert_text="x"
    )
    assert refused(
        tool, command="insert", path="/memories/none", insert_line=0, insert_text="x"
    ) == ("The path /memories/none does not exist. Please provide a valid path.")


# -- delete and rename ---------------------------------------------------------------------


def test_delete_file_directory_and_errors(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/keep.md", file_text="k")
    run(tool, command="create", path="/memories/d/a.md", file_text="a")
    run(tool, command="create", path="/memories/d/e/b.md", file_text="b")
    assert run(tool, command="delete", path="/memories/d") == "Successfully deleted /memories/d"
    assert [f.path for f in tool.files.files()] == ["/memories/keep.md"]
    assert (
        refused(tool, command="delete", path="/memories/d") == "The path /memories/d does not exist"
    )
    assert refused(tool, command="delete", path="/memories") == (
        "Cannot delete the /memories directory itself"
    )
    assert run(tool, command="delete", path="/memories/keep.md") == (
        "Successfully deleted /memories/keep.md"
    )
    assert tool.files.files() == []


def test_deleted_and_cleared_files_leave_no_text_in_history(
    memory: Memory, tool: MemoryTool
) -> None:
    """Why: delete and clear answered "Successfully deleted" while every version of the
    file stayed readable in ``Memory.history``: the model had no way to erase."""
    run(tool, command="create", path="/memories/pw.md", file_text="pin 4711")
    run(tool, command="str_replace", path="/memories/pw.md", old_str="4711", new_str="9042")
    run(tool, command="create", path="/memories/d/x.md", file_text="ssn 123-45")
    ids = [tool.files.memory_id("/memories/pw.md"), tool.files.memory_id("/memories/d/x.md")]
    run(tool, command="delete", path="/memories/pw.md")
    assert tool.clear_all_memory() == "All memory cleared"
    for memory_id in ids:
        events = memory.history(memory_id)
        assert [e.event for e in events][-1] == "DELETE"  # the audit trail keeps the events
        texts = " ".join(f"{e.old_text} {e.new_text}" for e in events)
        assert "4711" not in texts and "9042" not in texts and "123-45" not in texts


def test_rename_file_and_directory_and_errors(tool: MemoryTool) -> None:
    run(tool, command="create", path="/memories/a.md", file_text="A")
    run(tool, command="create", path="/memories/b.md", file_text="B")
    run(tool, command="create", path="/memories/d/x.md", file_text="X")
    assert run(tool, command="rename", old_path="/memories/a.md", new_path="/memories/n/a2.md") == (
        "Successfully renamed /memories/a.md to /memories/n/a2.md"
    )
    assert tool.files.read("/memories/n/a2.md") == "A"
    run(tool, command="rename", old_path="/memories/d", new_path="/memories/e")
    assert [f.path for f in tool.files.files()] == [
        "/memories/b.md",
        "/memories/e/x.md",
        "/memories/n/a2.md",
    ]
    assert refused(
        tool, command="rename", old_path="/memories/b.md", new_path="/memories/e/x.md"
    ) == ("The destination /memories/e/x.md already exists")
    assert refused(tool, command="rename", old_path="/memories/zz", new_path="/memories/y") == (
        "The path /memories/zz does not exist"
    )
    assert refused(tool, command="rename", old_path="/memories", new_path="/memories/y") == (
        "Cannot rename the /memories directory itself"
    )
    assert "into itself" in refused(
        tool, command="rename", old_path="/memories/e", new_path="/memories/e/sub"
    )


class StoreDownAfter:
    """The store as a ``Memory`` sees it when the database goes away partway through a
    command: after ``updates`` more updates, each raises ``StoreError`` until ``up()``.
    Everything else is the store's own."""

    def __init__(self, store: Store) -> None:
        self.store, self.left = store, -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def down_after(self, updates: int) -> None:
        self.left = updates

    def up(self) -> None:
        self.left = -1

    def update(self, *args: Any, **kwargs: Any) -> Any:
        if self.left == 0:
            raise StoreError("could not reach the database")
        self.left -= 1 if self.left > 0 else 0
        return self.store.update(*args, **kwargs)


def test_a_rename_stopped_partway_is_finished_by_asking_it_again(store: Store) -> None:
    """Each file moves in its own write. A rename stopped partway (a store error; a
    killed process: a review, 139 files left and 11 moved) left the directory split,
    and the retry the tool asks for was refused ("The destination ... already
    exists"): the model could only move the files one at a time."""
    flaky = StoreDownAfter(store)
    memory = Memory(store=flaky, embedder=HashEmbedder(), background_embedding=False)  # type: ignore[arg-type]
    tool = MemoryTool(memory, user_id="ana")
    names = [f"n{i}.md" for i in range(8)]
    for name in names:
        run(tool, command="create", path=f"/memories/projects/{name}", file_text=f"{name} text\n")

    flaky.down_after(3)
    assert "unavailable" in refused(
        tool, command="rename", old_path="/memories/projects", new_path="/memories/archive"
    )
    flaky.up()
    paths = [f.path for f in tool.files.files()]
    assert sum(p.startswith("/memories/archive/") for p in paths) == 3  # the split

    assert run(
        tool, command="rename", old_path="/memories/projects", new_path="/memories/archive"
    ) == ("Successfully renamed /memories/projects to /memories/archive")
    assert [f.path for f in tool.files.files()] == [f"/memories/archive/{n}" for n in names]
    assert [tool.files.read(f"/memories/archive/{n}") for n in names] == [
        f"{n} text\n" for n in names
    ]
    # Done once: asked again, as on a disk. A destination holding anything the
    # rename did not move there exists, split or not.
    assert refused(
        tool, command="rename", old_path="/memories/projects", new_path="/memories/archive"
    ) == ("The path /memories/projects does not exist")
    run(tool, command="create", path="/memories/projects/again.md", file_text="new\n")
    assert refused(
        tool, command="rename", old_path="/memories/projects", new_path="/memories/archive"
    ) == ("The destination /memories/archive already exists")
    run(tool, command="create", path="/memories/p2/a.md", file_text="a\n")
    run(tool, command="create", path="/memories/p2/b.md", file_text="b\n")
    flaky.down_after(1)
    refused(tool, command="rename", old_path="/memories/p2", new_path="/memories/q2")
    flaky.up()
    run(tool, command="create", path="/memories/q2/mine.md", file_text="mine\n")
    assert refused(tool, command="rename", old_path="/memories/p2", new_path="/memories/q2") == (
        "The destination /memories/q2 already exists"
    )


def test_a_refused_str_replace_quotes_a_long_old_str_cut(tool: MemoryTool) -> None:
    """The SDK's reference wording, with ``old_str`` cut past 1,000 characters: a
    100,000-character one came back whole, a tool result logged and re-sent on every
    later call (a review). A short one is quoted as the SDK quotes it."""
    run(tool, command="create", path="/memories/n.md", file_text="one\ntwo\n")
    msg = refused(
        tool, command="str_replace", path="/memories/n.md", old_str="Q" * 100_000, new_str=""
    )
    assert len(msg) < 1_200 and "(100,000 characters)" in msg, msg[:200]
    assert refused(
        tool, command="str_replace", path="/memories/n.md", old_str="three", new_str=""
    ) == (
        "No replacement was performed, old_str `three` did not appear verbatim in /memories/n.md."
    )


def test_a_refused_str_replace_names_each_line_once_and_a_bounded_few(tool: MemoryTool) -> None:
    """A short ``old_str`` that repeats (a CSV separator, one letter) is an ordinary model
    mistake; the refusal named a line per occurrence, unbounded (297,102 characters for
    one letter on a 99,000-character line, 1.6 s under the owner's lock: a review, s57)."""
    table = "".join(f"item{i};{i}.00;EUR\n" for i in range(3000))
    run(tool, command="create", path="/memories/prices.csv", file_text=table)
    lines = ", ".join(str(n) for n in range(1, 21))
    assert refused(
        tool, command="str_replace", path="/memories/prices.csv", old_str=";", new_str=","
    ) == (
        f"No replacement was performed. Multiple occurrences of old_str `;` in lines: {lines}"
        " and 2,980 more lines. Please ensure it is unique"
    )
    run(tool, command="create", path="/memories/a.txt", file_text="b\n" + "a" * 99_000)
    assert refused(
        tool, command="str_replace", path="/memories/a.txt", old_str="a", new_str="b"
    ) == (
        "No replacement was performed. Multiple occurrences of old_str `a` in lines: 2. "
        "Please ensure it is unique"
    )
    assert tool.files.read("/memories/prices.csv") == table


@pytest.mark.parametrize("remade", ["y.md", "x.md"])
def test_a_finished_rename_is_not_taken_for_one_stopped_partway(
    tool: MemoryTool, memory: Memory, remade: str
) -> None:
    """A finished rename, one of its files deleted since and a file made under the old
    path, has as many files at both ends as a rename stopped partway: counted, it was
    "finished" again. The new file moved onto the path of an old one (``remade`` y.md),
    hidden behind it, and the next edit purged its text; or the directories merged,
    where a disk refuses (a review). Which files a rename moves is in its marks."""
    run(tool, command="create", path="/memories/drafts/x.md", file_text="draft x v1\n")
    run(tool, command="create", path="/memories/drafts/y.md", file_text="draft y v1\n")
    run(tool, command="rename", old_path="/memories/drafts", new_path="/memories/archive")
    run(tool, command="delete", path="/memories/archive/x.md")
    run(tool, command="create", path=f"/memories/drafts/{remade}", file_text="the NEW one\n")
    assert refused(
        tool, command="rename", old_path="/memories/drafts", new_path="/memories/archive"
    ) == ("The destination /memories/archive already exists")
    assert {f.path: f.content for f in tool.files.files()} == {
        "/memories/archive/y.md": "draft y v1\n",
        f"/memories/drafts/{remade}": "the NEW one\n",
    }
    assert len(memory.get_all(user_id="ana")) == 2


def test_rename_that_would_break_the_path_rules_moves_nothing(
    tool: MemoryTool, memory: Memory
) -> None:
    """Why: a directory's rename built each file's new path unchecked; one deeper than 16
    levels or over 512 characters was stored, then read as no file at all (not viewable,
    renamable or deletable), delete said "Successfully deleted" and the text stayed."""
    deep = "/memories/a/" + "/".join(f"d{i}" for i in range(14)) + "/note.md"  # 16 levels
    run(tool, command="create", path=deep, file_text="passport C01X00T47\n")
    run(tool, command="create", path="/memories/a/top.md", file_text="top\n")
    long = "/memories/s/" + "n" * 250 + "/" + "m" * 130 + ".md"  # 400 characters
    run(tool, command="create", path=long, file_text="x\n")
    before = [(f.path, f.content) for f in tool.files.files()]
    for old, new, why in (
        ("/memories/a", "/memories/archive/2025/a", "nested deeper than 16 levels"),
        ("/memories/s", "/memories/" + "p" * 200, "longer than 512 characters"),
    ):
        error = refused(tool, command="rename", old_path=old, new_path=new)
        assert error.startswith(f"Cannot rename {old} to {new}: ") and why in error
        # nothing moved, not even top.md (whose own new path is fine)
        assert [(f.path, f.content) for f in tool.files.files()] == before
    assert len(memory.get_all(user_id="ana")) == 3
    assert tool.files.read(deep) == "passport C01X00T47\n"
    run(tool, command="rename", old_path="/memories/a", new_path="/memories/b")  # still fine
    assert run(tool, command="delete", path="/memories/b") == "Successfully deleted /memories/b"
    assert not [r for r in memory.get_all(user_id="ana") if "passport" in r.text]


def test_a_file_is_never_written_under_a_path_outside_the_rules(memory: Memory) -> None:
    """Why: the one place that builds a file's memory did not check the path, so any
    command that made one (a rename) could store a file no command can reach again."""
    files = MemoryFiles(memory, user_id="ana")
    for path in ("/memories/" + "/".join("d" * 17), "/memories/x//y.md", "/etc/passwd"):
        with pytest.raises(MemoryFileError):
            files._put(path, "x")
    assert memory.get_all(user_id="ana") == []


def test_a_file_updated_without_its_path_line_reads_as_written(
    tool: MemoryTool, memory: Memory
) -> None:
    """A file's memory set to new text by ``Memory.update`` (``PATCH /v1/memories``, MCP
    ``update_memory``), without the path line the tool writes: read after its first line,
    the file read as empty, and the next command wrote over the edit (a review, s57)."""
    run(tool, command="create", path="/memories/todo.md", file_text="buy milk\n")
    memory.update(tool.files.memory_id("/memories/todo.md"), "buy oat milk\nbake bread")
    assert tool.files.read("/memories/todo.md") == "buy oat milk\nbake bread\n"
    run(tool, command="str_replace", path="/memories/todo.md", old_str="oat", new_str="soy")
    assert tool.files.read("/memories/todo.md") == "buy soy milk\nbake bread\n"
    stored = memory.get(tool.files.memory_id("/memories/todo.md"))
    assert stored.text == "/memories/todo.md\nbuy soy milk\nbake bread"


def test_a_file_saved_back_whole_with_crlf_keeps_its_path_line(
    tool: MemoryTool, memory: Memory
) -> None:
    """Its whole text sent back with CRLF line ends: the path line ended in ``\r`` and
    was read as the file's first line (diff review s57)."""
    run(tool, command="create", path="/memories/todo.md", file_text="buy milk\n")
    mid = tool.files.memory_id("/memories/todo.md")
    memory.update(mid, "/memories/todo.md\r\nbuy oat milk")
    assert tool.files.read("/memories/todo.md") == "buy oat milk\n"


def test_every_change_is_in_history_and_searchable(tool: MemoryTool, memory: Memory) -> None:
    run(tool, command="create", path="/memories/prefs.md", file_text="Ana drinks coffee\n")
    mid = tool.files.memory_id("/memories/prefs.md")
    run(
        tool,
        command="str_replace",
        path="/memories/prefs.md",
        old_str="coffee",
        new_str="green tea",
    )
    run(
        tool,
        command="insert",
        path="/memories/prefs.md",
        insert_line=1,
        insert_text="Ana walks daily",
    )
    run(tool, command="rename", old_path="/memories/prefs.md", new_path="/memories/ana.md")
    hits = memory.search("green tea", user_id="ana")
    assert hits and hits[0].record.id == mid
    events = memory.history(mid)
    assert [e.event for e in events] == ["ADD", "UPDATE", "UPDATE", "UPDATE"]
    assert "coffee" in (events[1].old_text or "") and "green tea" in (events[1].new_text or "")
    assert (events[3].new_text or "").startswith("/memories/ana.md\n")
    run(tool, command="delete", path="/memories/ana.md")  # purged: the events stay, no text
    events = memory.history(mid)
    assert [e.event for e in events] == ["ADD", "UPDATE", "UPDATE", "UPDATE", "DELETE"]
    assert not any("coffee" in f"{e.old_text} {e.new_text}" for e in events)


def test_clear_all_memory_only_this_scope(memory: Memory) -> None:
    ana, bob = MemoryTool(memory, user_id="ana"), MemoryTool(memory, user_id="bob")
    run(ana, command="create", path="/memories/a", file_text="a")
    run(bob, command="create", path="/memories/b", file_text="b")
    assert ana.clear_all_memory() == "All memory cleared"
    assert ana.files.files() == [] and [f.path for f in bob.files.files()] == ["/memories/b"]


def test_async_twin_gives_the_same_answers(tmp_path: Path) -> None:
    script: list[dict[str, Any]] = [
        {"command": "create", "path": "/memories/n.md", "file_text": "x\ny\n"},
        {"command": "str_replace", "path": "/memories/n.md", "old_str": "y", "new_str": "z"},
        {"command": "insert", "path": "/memories/n.md", "insert_line": 1, "insert_text": "w"},
        {"command": "view", "path": "/memories/n.md", "view_range": [1, 2]},
        {"command": "rename", "old_path": "/memories/n.md", "new_path": "/memories/m.md"},
        {"command": "view", "path": "/memories"},
        {"command": "view", "path": "/memories/../x"},
        {"command": "delete", "path": "/memories/m.md"},
    ]

    def outcome(fn: Any) -> str:
        try:
            return str(fn())
        except ToolError as exc:
            return "error: " + str(exc)

    with Memory(tmp_path / "s.db", embedder=HashEmbedder(), background_embedding=False) as m1:
        sync_tool = MemoryTool(m1, user_id="ana")
        expected = [outcome(lambda c=c: sync_tool.call(c)) for c in script]
    with Memory(tmp_path / "a.db", embedder=HashEmbedder(), background_embedding=False) as m2:
        async_tool = AsyncMemoryTool(m2, user_id="ana")

        async def go() -> list[str]:
            out = []
            for c in script:
                try:
                    out.append(str(await async_tool.call(c)))
                except ToolError as exc:
                    out.append("error: " + str(exc))
            return out

        assert asyncio.run(go()) == expected
    assert expected[3] == (
        "Here's the content of /memories/n.md with line numbers:\n     1\tx\n     2\tw"
    )
    assert expected[-2] == "error: Path '/memories/../x' would escape /memories directory"
    assert expected[-1] == "Successfully deleted /memories/m.md"


# -- confinement -----------------------------------------------------------------------------

HOSTILE: list[Any] = [
    "/memories/../etc/passwd",
    "/memories/..",
    "/memories/../",
    "/memories/./x",
    "/memories/a/../../x",
    "/memories/a/../b",
    "/memories/x/..",
    "//memories/../x",
    "/etc/passwd",
    "/",
    "",
    "memories/x",
    "../memories/x",
    "./memories/x",
    "/memoriesx/y",
    "/memories_evil/x",
    "/Memories/x",
    "/MEMORIES/x",
    "/memories/\x00x",
    "/memories/x\x00.md",
    "/memories\x00/../x",
    "/memories/%2e%2e/x",
    "/memories/%2E%2E%2Fetc",
    "/memories/..%2f..%2fetc",
    "/memories/%252e%252e/x",
    "/memories/%00",
    "/memories\\..\\x",
    "/memories/..\\..\\x",
    "\\memories\\x",
    "/memories/\uff0e\uff0e/x",
    "/memories\uff0fx",
    "/memories/\u2025/x",
    "/memories/\u2024\u2024/x",
    "/memories/\u202e..",
    "/memories/.\u200b./x",
    "/memories/\ufeff../x",
    "/memories/\udcff",
    "/memories/x\n/../y",
    "/memories/x\r",
    "/memories/\t..",
    "/memories/ ../x",
    "/memories/.. /x",
    "/memories/" + "a" * (MAX_PATH_CHARS + 10),
    "/memories/" + "a" * 300,
    "/memories/" + "/".join(["d"] * 20) + "/f",
    "file:///etc/passwd",
    "C:\\Windows\\system32",
    "/proc/self/environ",
    "~/.ssh/id_rsa",
    "/memories/../../../../../../root/.bashrc",
    "/memories/../bob/secret.md",
    "/memories/\u0000",
    "/memories/\x7f",
    "/tmp/../memories/../etc",
    None,
    123,
    ["/memories/x"],
    {"path": "/memories/x"},
]


@pytest.mark.parametrize("command", ["create", "view", "str_replace", "insert", "delete", "rename"])
def test_hostile_paths_never_escape_nor_read_across_users(memory: Memory, command: str) -> None:
    assert len(HOSTILE) >= 50
    bob = MemoryTool(memory, user_id="bob")
    run(bob, command="create", path="/memories/secret.md", file_text="BOB-SECRET 4242\n")
    agent = MemoryTool(memory, agent_id="helper")
    run(agent, command="create", path="/memories/agent.md", file_text="AGENT-ONLY 77\n")
    ana = MemoryTool(memory, user_id="ana")
    run(ana, command="create", path="/memories/x", file_text="ana's x\n")
    outputs: list[str] = []
    for path in HOSTILE:
        args: dict[str, Any] = {
            "create": {"path": path, "file_text": "PWNED"},
            "view": {"path": path},
            "str_replace": {"path": path, "old_str": "x", "new_str": "PWNED"},
            "insert": {"path": path, "insert_line": 0, "insert_text": "PWNED"},
            "delete": {"path": path},
            "rename": {"old_path": "/memories/x", "new_path": path},
        }[command]
        try:
            outputs.append(str(ana.call({"command": command, **args})))
        except ToolError as exc:
            outputs.append(str(exc))
    escapes = [
        r
        for r in memory.store.list(_everything(memory), limit=1000)
        if r.metadata.get("source") == "memory_tool"
        and (
            not str(r.metadata["path"]).startswith("/memories/")
            or ".." in str(r.metadata["path"]).split("/")
            or "\\" in str(r.metadata["path"])
            or not str(r.metadata["path"]).isprintable()
        )
    ]
    assert escapes == []
    cross = [o for o in outputs if "BOB-SECRET" in o or "AGENT-ONLY" in o]
    assert cross == []
    assert bob.files.read("/memories/secret.md") == "BOB-SECRET 4242\n"
    assert agent.files.read("/memories/agent.md") == "AGENT-ONLY 77\n"
    assert [f.path for f in bob.files.files()] == ["/memories/secret.md"]


def _everything(memory: Memory) -> Any:
    """A filter over every scope of the tenant (the test looks at the raw store)."""
    from contextos.types import Filter, Scope

    return Filter(scope=Scope(tenant=memory.tenant))


def test_scopes_do_not_see_each_other(memory: Memory) -> None:
    ana, bob = MemoryTool(memory, user_id="ana"), MemoryTool(memory, user_id="bob")
    ana_agent = MemoryTool(memory, user_id="ana", agent_id="bot")
    run(bob, command="create", path="/memories/secret.md", file_text="BOB-SECRET")
    run(ana_agent, command="create", path="/memories/secret.md", file_text="ANA-BOT")
    assert "secret" not in run(ana, command="view", path="/memories")
    assert refused(ana, command="view", path="/memories/secret.md").startswith("The path")
    assert run(ana, command="create", path="/memories/secret.md", file_text="ANA").startswith(
        "File created"
    )
    assert bob.files.read("/memories/secret.md") == "BOB-SECRET"
    assert ana_agent.files.read("/memories/secret.md") == "ANA-BOT"
