"""Entry point of the ``contextos`` command.

Commands live in one module per concept (``memory_cmds``, ``session_cmds``,
``bench_cmds``, ...), each exposing ``register(cli, bench)``; a module is imported
when one of its commands is looked up (:class:`LazyGroup`). Errors from the
library become one clean line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

import click
from click.core import ParameterSource

from ..errors import Conflict, ContextosError
from .common import (
    CliState,
    StdoutFailed,
    check_tenant_option,
    err_console,
    interrupted_after_its_write,
    start_command,
    with_missing_db,
)
from .text import SafeText

#: Which module adds each command (its ``register(cli, bench)`` adds all of that
#: module's commands, to both groups). Only the module of the command run is imported:
#: the other eight took 50 ms of every call's ~0.7 s. ``tests/test_cli_memory.py``
#: checks these maps against what the modules add.
COMMANDS = {
    **dict.fromkeys(["add", "delete", "forget", "get", "history", "list"], "memory_cmds"),
    **dict.fromkeys(["search", "update"], "memory_cmds"),
    **dict.fromkeys(["keys", "mcp", "serve"], "server_cmds"),
    **dict.fromkeys(["compact", "session", "window"], "session_cmds"),
    **dict.fromkeys(["status", "vacuum"], "store_cmds"),
    **dict.fromkeys(["export", "import"], "transfer_cmds"),
    "chat": "provider_cmds",
    "count": "count_cmds",
    "demo": "demo_cmds",
    "extract": "extract_cmds",
}
BENCH_COMMANDS = {
    **dict.fromkeys(["assemble", "litm", "replay"], "session_cmds"),
    **dict.fromkeys(["locomo", "online", "scale"], "bench_cmds"),
    "extract": "extract_cmds",
    "serve": "server_cmds",
    "wrap": "provider_cmds",
}
#: Every module that adds commands.
COMMAND_MODULES = sorted({*COMMANDS.values(), *BENCH_COMMANDS.values()})


class LazyGroup(click.Group):
    """A group whose commands are added by their module on first use (:data:`COMMANDS`)."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            _add_commands_of(self.lazy[cmd_name])
        return super().get_command(ctx, cmd_name)


_added: set[str] = set()


def _add_commands_of(module: str) -> None:
    """Import ``contextos.cli.<module>`` and add its commands, once (marked only once
    they are added: an import that failed is tried again on the next lookup)."""
    if module not in _added:
        importlib.import_module(f"{__package__}.{module}").register(cli, bench)
        _added.add(module)


def load_all_commands() -> click.Group:
    """The ``contextos`` group with every command added (for walking ``cli.commands``)."""
    for module in COMMAND_MODULES:
        _add_commands_of(module)
    return cli


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="CONTEXTOS_DB",
    default=None,
    metavar="PATH",
    help="Database: a SQLite file path or a postgresql:// URL "
    "(default: memory.db in the user data dir; env CONTEXTOS_DB).",
)
@click.option(
    "--tenant",
    envvar="CONTEXTOS_TENANT",
    default=None,
    help="Tenant to act for (default: default; env CONTEXTOS_TENANT).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.version_option(package_name="contextos")
@click.pass_context
def cli(ctx: click.Context, db: str | None, tenant: str | None, as_json: bool) -> None:
    """contextos: manage an LLM's context window like an OS manages memory."""
    from_env = ctx.get_parameter_source("tenant") is ParameterSource.ENVIRONMENT
    if tenant is not None and not from_env:
        check_tenant_option(tenant, "--tenant")
    typed = tenant is not None and not from_env
    # CONTEXTOS_TENANT's is checked once the command's options are read, named as the
    # variable (CliState.check_tenant_variable): a --tenant after the command replaces it.
    ctx.obj = CliState(db=db, tenant=tenant, as_json=as_json, tenant_typed=typed)


@cli.group(cls=LazyGroup, lazy=BENCH_COMMANDS)
def bench() -> None:
    """Benchmarks that produce the numbers quoted in the docs."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr with exit code 1 (3 for a
    ``Conflict``: what the command was based on changed meanwhile, nothing written), as
    does stdout failing other than by a closed pipe (a full disk: ``StdoutFailed``)."""
    start_command()
    try:
        cli.main(args=argv, prog_name="contextos", standalone_mode=False)
    except click.exceptions.Abort:  # click's name for a Ctrl-C during the command
        if interrupted_after_its_write():
            return  # as settle's own Ctrl-C: the write stands and was reported
        err_console.print("aborted")
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        # ``contextos`` (or a group) alone: the help, as written, where click puts it.
        # As a usage error it was squashed into one "error: ...; ...; ..." line.
        err_console.print(SafeText(exc.format_message()), highlight=False)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        print_error(_usage_line(exc))
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Conflict as exc:  # its own code: a script reads again and retries
        print_error(str(exc))
        sys.exit(3)
    except (ContextosError, StdoutFailed) as exc:
        print_error(_failure_line(exc))
        sys.exit(1)
    except (ValueError, TypeError, OSError) as exc:
        print_error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        if interrupted_after_its_write():
            return
        sys.exit(130)


def _usage_line(exc: click.UsageError) -> str:
    """A usage error's line, with the command's ``--help`` to see. For an unknown
    option, only the options that the mistyped one begins (``--user`` for ``--user-id``)
    are suggested when there are any: click's guesses by likeness alone put ``--after``
    and ``--where`` beside ``--user-id`` (a review)."""
    if isinstance(exc, click.NoSuchOption):
        given = exc.option_name.split("=", 1)[0]
        started = [name for name in exc.possibilities or () if name.startswith(given)]
        if started:
            vars(exc)["possibilities"] = started  # Final to type checkers, a plain attribute
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return exc.format_message() + hint


def _failure_line(exc: ContextosError | StdoutFailed) -> str:
    """The error line of exit 1: a library or store error (naming a missing database),
    or stdout that could not be written (a full disk, EIO: an I/O failure, not a usage
    error), which says the work was done, so a script does not run a write again."""
    if not isinstance(exc, StdoutFailed):
        return with_missing_db(str(exc))
    if exc.done is not None:
        return f"{exc.done}, but its report could not be written to stdout: {exc.error}"
    return (
        f"the command ran, but its output could not be written: {exc.error} (what it did, "
        "a write included, is done)"
    )


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, one line, the message as plain text.

    Why plain: messages quote user input and name extras such as
    ``contextos[server]``, which rich markup would swallow as a tag.

    Why one line: a driver's message may run over several (psycopg's "connection
    refused" adds an indented hint; a URL it cannot parse ends in a blank line), and a
    script reading stderr takes the first; its lines are joined with "; ".
    """
    lines = [line.strip() for line in message.splitlines()]
    one_line = "; ".join(line for line in lines if line)
    err_console.print(SafeText.assemble(("error:", "red"), " ", one_line), highlight=False)
