"""``contextos bench ...``: the benchmarks behind every number the docs quote."""

from __future__ import annotations

import click


def register(cli: click.Group, bench: click.Group) -> None:
    """Add the benchmark commands to ``bench``."""
