"""Memory commands: add, search, get, list, update, delete, history, forget."""

from __future__ import annotations

import click


def register(cli: click.Group, bench: click.Group) -> None:
    """Add the benchmark commands to ``bench``."""
