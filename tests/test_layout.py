"""docs/architecture.md's module table and the source tree name the same modules.

A newcomer finds a concept by its name in the table and then in the tree; this keeps the two
from drifting apart when modules are added, moved or removed.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "contextos"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _children(folder: Path) -> set[str]:
    """Public modules and subpackages directly inside ``folder``."""
    names = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    names |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    return names


def _module_table() -> dict[str, str]:
    """First-column name (without a trailing slash) -> the row's description."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        rows[cells[0].strip("`").rstrip("/")] = cells[1]
    return rows


def test_every_top_level_module_is_in_the_table_and_nothing_else() -> None:
    assert set(_module_table()) == _children(PACKAGE)


def test_a_row_that_names_submodules_names_all_of_them() -> None:
    for name, description in _module_table().items():
        folder = PACKAGE / name
        if not folder.is_dir():
            continue
        named = set(re.findall(r"`([a-z_]+)/?`", description))
        children = _children(folder)
        if named & children:
            assert children <= named, f"{name}/: the table does not name {children - named}"
