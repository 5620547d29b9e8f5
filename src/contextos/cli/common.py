"""What every CLI command shares: settings, JSON output, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from ..config import Settings

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@dataclasses.dataclass
class CliState:
    """Options of the top-level group, handed to every command."""

    db: str | None
    tenant: str | None
    as_json: bool
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..config import load_settings

            self._settings = load_settings(db=self.db, tenant=self.tenant)
        return self._settings


pass_state = click.make_pass_decorator(CliState)


def json_default(value: object) -> object:
    """Serialise dataclasses, datetimes and tuples for ``--json`` output."""
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(payload: object) -> None:
    """Write ``payload`` as JSON on stdout (one document, newline-terminated)."""
    sys.stdout.write(json.dumps(payload, default=json_default, ensure_ascii=False, indent=2) + "\n")


def json_option(func: F) -> F:
    """``--json`` on a subcommand too, so it works before or after the command name."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(CliState).as_json = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=callback,
        help="Print machine-readable JSON.",
    )(func)
