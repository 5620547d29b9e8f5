"""Print contextos's requirements from pyproject.toml, one per line, for `make demo`.

Why: pip cannot install one dependency without its own dependencies while resolving
the rest normally, and `make demo` installs tokenizers that way (its only dependency,
huggingface_hub, serves `Tokenizer.from_pretrained`, which contextos never calls, and
with hf_xet, pyyaml, fsspec, tqdm and filelock it was 23 MB of the venv). So the
Makefile installs the `--only` lines with `--no-deps`, the `--except` lines normally,
and contextos itself with `--no-deps`; pyproject.toml stays the one list.

Usage: python scripts/requirements.py [--extras a,b] [--only NAME ... | --except NAME ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a PEP 508 line names: ``psycopg[binary]>=3.1`` -> ``psycopg``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def requirements(project: dict[str, object], extras: list[str]) -> list[str]:
    """The core dependencies plus each extra's, with ``contextos[...]`` self-references
    expanded, in order and without repeats."""
    meta = project["project"]
    assert isinstance(meta, dict)
    name = canonical(str(meta["name"]))
    optional: dict[str, list[str]] = meta.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(lines: list[str]) -> None:
        for line in lines:
            self_ref = re.fullmatch(r"\s*([\w.-]+)\[([\w,\s-]+)\]\s*", line)
            if self_ref and canonical(self_ref.group(1)) == name:
                expand([e.strip() for e in self_ref.group(2).split(",")])
            elif line not in out:
                out.append(line)

    def expand(names: list[str]) -> None:
        for extra in names:
            if extra not in optional:
                raise SystemExit(f"unknown extra {extra!r}; known: {', '.join(optional)}")
            if extra not in seen_extras:
                seen_extras.add(extra)
                add(optional[extra])

    add(list(meta.get("dependencies", [])))
    expand(extras)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="comma-separated extras")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", default=None, metavar="NAME")
    which.add_argument("--except", dest="without", nargs="+", default=None, metavar="NAME")
    args = parser.parse_args(argv)
    lines = requirements(
        tomllib.loads(PYPROJECT.read_text(encoding="utf-8")),
        [e for e in args.extras.split(",") if e],
    )
    names = {requirement_name(line) for line in lines}
    for wanted in (args.only or []) + (args.without or []):
        if canonical(wanted) not in names:
            raise SystemExit(f"{wanted!r} is not a requirement of these extras")
    if args.only is not None:
        keep = {canonical(n) for n in args.only}
        lines = [line for line in lines if requirement_name(line) in keep]
    elif args.without is not None:
        drop = {canonical(n) for n in args.without}
        lines = [line for line in lines if requirement_name(line) not in drop]
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
