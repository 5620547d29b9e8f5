"""What every CLI command shares: settings, JSON output, one-line errors, progress.

User text is printed through :mod:`contextos.cli.text` (``SafeText``, ``shown``): never
as rich markup, and with its control characters shown as escapes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..bench.locomo_data import DEFAULT_LOCOMO
from ..config import Settings
from ..embed import DEFAULT_EMBEDDER
from ..engine.message_text import lone_surrogate_at
from ..errors import ConfigError, ScopeError
from ..times import iso
from ..types import scope_id
from .text import SafeText, json_escaped

if TYPE_CHECKING:
    from ..memory import Memory
    from ..store import Store

F = TypeVar("F", bound=Callable[..., Any])

#: The exit status of a command whose reader closed the pipe (``| head``): a Unix tool
#: killed by SIGPIPE exits with it too (128 + 13), so ``set -o pipefail`` reads the two
#: alike.
CLOSED_PIPE_EXIT = 141


def stdout_closed() -> NoReturn:
    """Exit with :data:`CLOSED_PIPE_EXIT`, saying nothing, when stdout's reader has gone.

    Why: rich's console exited 1 there, and 1 means an error of the library or the store
    (``session show | head -1`` failed 10 times in 10, a review); the interpreter's
    own flush at exit must not fail again, so stdout now writes to /dev/null."""
    _stdout_to_devnull()
    raise SystemExit(CLOSED_PIPE_EXIT)


def _stdout_to_devnull() -> None:
    """Point stdout's file descriptor at /dev/null: what is still buffered goes there."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class StdoutFailed(Exception):
    """stdout could not be written (a full disk, an I/O error; not a closed pipe), after
    the command did its work: ``main`` says so and exits 1, an I/O failure.

    Why not the ``OSError`` itself: ``main`` reads an ``OSError`` as a usage error (exit
    2: a file argument that cannot be read), and ``session add >> log`` on a full disk
    exited 2 with no word that the turn was logged, so a script retried it and logged it
    twice (a review). ``done``: what the command did, when it says so
    (:func:`reported_after_write`)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error
        self.done: str | None = None


@contextmanager
def reported_after_write(done: str) -> Iterator[None]:
    """The report of a write that is ``done`` (``"logged as #3 of session s1"``): stdout
    failing in it names what was stored (:class:`StdoutFailed`)."""
    try:
        yield
    except StdoutFailed as exc:
        exc.done = done
        raise


@contextmanager
def _stdout_errors(stream: Any) -> Iterator[None]:
    """Around a write to ``stream``: stdout failing other than by a closed pipe is a
    :class:`StdoutFailed` (stdout goes to /dev/null, so the interpreter's own flush at
    exit does not fail again); a closed pipe stays a ``BrokenPipeError``."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if stream is not sys.stdout:
            raise
        _stdout_to_devnull()
        raise StdoutFailed(exc) from exc


#: The most characters handed to a stream in one write (its buffer's size).
WRITE_CHUNK = io.DEFAULT_BUFFER_SIZE


class _InPieces:
    """A text stream written in pieces of at most :data:`WRITE_CHUNK` characters.

    Why: a write larger than the stream's buffer that the pipe took only in part (its
    reader had closed it: ``list | head -1``) returned in CPython without an error, the
    rest dropped, and the command exited 0, not 141 as documented (a review); written
    in pieces, the next one fails with ``BrokenPipeError``. stdout failing otherwise
    is a :class:`StdoutFailed`, in a write or a flush."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with _stdout_errors(self._stream):
            for start in range(0, len(text), WRITE_CHUNK):
                self._stream.write(text[start : start + WRITE_CHUNK])
        return len(text)

    def flush(self) -> None:
        with _stdout_errors(self._stream):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def write_out(text: str) -> None:
    """Write ``text`` on stdout and flush it; a closed pipe ends the command as
    :func:`stdout_closed` does (click would exit 1 for it: "an error of the library"),
    any other failure is a :class:`StdoutFailed`."""
    out = _InPieces(sys.stdout)
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        stdout_closed()


class _Console(Console):
    """rich's Console, but a closed pipe ends the command as :func:`stdout_closed` does,
    and what it writes goes in pieces (see :class:`_InPieces`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._width is not None and self._width < 1:
            # COLUMNS=0 (some CI and container setups mean "unknown"): rich took it as a
            # width of 0 and printed nothing, so ``ID=$(contextos add ...)`` got an empty
            # id and errors vanished. No width of our own: rich's default, as for a 0x0
            # terminal.
            self._width = None

    @property
    def file(self) -> Any:
        return _InPieces(Console.file.fget(self))  # type: ignore[attr-defined]

    @file.setter
    def file(self, new_file: Any) -> None:
        Console.file.fset(self, new_file)  # type: ignore[attr-defined]

    def on_broken_pipe(self) -> None:
        self.quiet = True
        stdout_closed()


console = _Console(soft_wrap=True)  # lines are not cut at 80 columns under a pipe
err_console = _Console(stderr=True, soft_wrap=True)


@dataclasses.dataclass
class CliState:
    """Options of the top-level group, handed to every command."""

    db: str | None
    tenant: str | None
    as_json: bool
    _settings: Settings | None = None
    #: The command's tenants come from its API keys (``serve``, ``mcp``): the tenant
    #: setting is not read, so ``CONTEXTOS_TENANT`` set to nothing is no error there.
    tenants_from_keys: bool = False
    #: The tenant was typed on the command line (``--tenant``, before or after the
    #: command), not read from ``CONTEXTOS_TENANT`` (``forget --whole-tenant`` wants it).
    tenant_typed: bool = False

    @property
    def settings(self) -> Settings:
        """The resolved settings; the first call checks ``--db`` and says which file is used.

        Only commands that open the database read this, so the note about the
        default file appears where it matters (on stderr, once per command).
        """
        if self._settings is None:
            if self.db is not None:  # --db or CONTEXTOS_DB (click reads both)
                check_db_option(self.db)
            self._settings = self._load(self.db)
            if self.db is None:
                err_console.print(
                    SafeText(
                        f"database: {self._settings.db} (the default; --db PATH or "
                        "CONTEXTOS_DB to change)",
                        style="dim",
                    )
                )
        return self._settings

    def _load(self, db: str | None) -> Settings:
        """``load_settings`` for this command: the tenant is not read (so not checked)
        by a command whose keys name its tenants (:attr:`tenants_from_keys`)."""
        from ..config import load_settings

        given = ("tenant",) if self.tenants_from_keys else ()
        return load_settings(db=db, tenant=self.tenant, given=given)

    def embedder_name(self, given: str | None) -> str:
        """``--embedder`` (``given``), else the configured embedder (of a command that
        opens the group's database: ``serve``, ``mcp``)."""
        return given or self.settings.embedder

    def check_tenant_variable(self) -> None:
        """Refuse a tenant from ``CONTEXTOS_TENANT`` that is no valid name (a usage error
        naming the variable), unless ``--tenant`` was given, before the command or after
        it. Called once the command's options are read (:func:`pass_state`). Why not in
        the group: there it refused a bad variable before the command's own ``--tenant``
        could replace it, where the group's ``--tenant`` did replace it (a review)."""
        if self.tenant is not None and not self.tenant_typed:
            check_tenant_option(self.tenant, "CONTEXTOS_TENANT")


def check_db_option(db: str) -> str:
    """Check a ``--db`` value before anything opens it, the group's and a command's
    alike (``keys create --db``: it skipped the check and created missing folders,
    where the group's ``--db`` and ``serve --db`` refused the same path); return it, a
    leading ``~`` read as the home folder (:func:`~contextos.config.expanded_db`).

    ``:memory:`` is refused here, not by the library (``Memory(":memory:")`` is a
    scratch store): a command's database ends with it, and ``add`` reported "added"
    for a memory nobody could read again (a review)."""
    from ..config import check_db

    if db.strip() == ":memory:":
        raise ConfigError(
            "--db :memory: (or CONTEXTOS_DB) is a database in memory, which keeps nothing "
            "after the command: give a file path or a postgresql:// URL"
        )
    db = check_db(db)
    _check_db_file(db)
    return db


def _check_db_file(db: str) -> None:
    """Refuse a SQLite path that exists but is no regular file (``/dev/null``, a FIFO, a
    socket): SQLite opened ``/dev/null`` and failed with "cannot rollback - no
    transaction is active", which says nothing about the path."""
    if "://" in db:
        return
    path = Path(db).expanduser()
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"{db} is not a database file (a device, pipe or socket): pass a file path"
        )


_pass_state = click.make_pass_decorator(CliState)

#: Parameters that name files: a file name may hold bytes that are not UTF-8, which
#: Python keeps as lone surrogates and the file system takes back as they were.
_FILE_PARAMS = frozenset({"db", "data", "out", "json_out", "keep_db"})


def invalid_text(value: object, where: str = "") -> str | None:
    """Why ``value`` (text, or JSON-like data holding text) is not valid Unicode text,
    or None when it is: which part of it (``where`` and the keys and indexes that lead
    there) and where its first lone surrogate is, in the words ``session add`` uses
    (:func:`contextos.engine.message_text.check_text`).

    Why: such text cannot be written as UTF-8, so it failed deep in a command with
    ``'utf-8' codec can't encode ... surrogates not allowed``, a tokenizer's
    ``TextEncodeInput must be Union[...]`` or a PYTHONIOENCODING hint, naming neither
    the argument nor the character.
    """
    if isinstance(value, str):
        at = lone_surrogate_at(value)
        if at is None:
            return None
        what = f"{where} is " if where else ""
        return f"{what}not valid Unicode text (lone surrogate {value[at]!r} at index {at})"
    if isinstance(value, dict):
        for key, item in value.items():
            why = invalid_text(key, f"{where} key {key!r}".strip())
            why = why or invalid_text(item, f"{where}[{key!r}]")
            if why is not None:
                return why
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            why = invalid_text(item, f"{where}[{i}]")
            if why is not None:
                return why
    return None


def check_arguments(ctx: click.Context) -> None:
    """Refuse an argument or option of the command (or of the groups above it) that is
    not valid Unicode text, naming it: an argument in a terminal not set to UTF-8
    arrives holding lone surrogates. File names are let through (:data:`_FILE_PARAMS`,
    ``click.Path``)."""
    for context in (ctx, *_parents(ctx)):
        for param in context.command.params:
            if param.name is None or param.name in _FILE_PARAMS:
                continue
            if isinstance(param.type, click.Path | click.File):
                continue
            why = invalid_text(context.params.get(param.name))
            if why is not None:
                raise click.BadParameter(
                    f"{why}; is the terminal's encoding UTF-8?", ctx=context, param=param
                )


def _parents(ctx: click.Context) -> Iterator[click.Context]:
    while ctx.parent is not None:
        ctx = ctx.parent
        yield ctx


def pass_state(func: F) -> F:
    """Hand the command the :class:`CliState` first, once its arguments are checked
    (:func:`check_arguments`): every command that takes the state takes only valid text,
    and a tenant from ``CONTEXTOS_TENANT`` that no ``--tenant`` replaced is a valid name
    (:meth:`CliState.check_tenant_variable`)."""

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        check_arguments(ctx)
        state = ctx.find_object(CliState)
        if state is not None:
            state.check_tenant_variable()
        return func(*args, **kwargs)

    return cast(F, _pass_state(checked))


@contextmanager
def open_memory(state: CliState, *, embed: bool = True, create: bool = False) -> Iterator[Memory]:
    """Open the configured database; wait for embeddings before closing when writing
    (``embed=False``: a command that only reads or deletes starts no embedding worker).

    Only a command that stores (``create``) makes a new SQLite file; any other finds an
    empty memory there and says so on stderr. Why: a read on a mistyped ``--db``
    created an empty database and answered "0 memories", and the user concluded that
    their memories were gone.

    A command that embeds does it on a thread of its own (:func:`embedding_memory`),
    which never queues again the vectors another model wrote."""
    from ..memory import Memory

    missing = missing_db(state, create=create)
    settings = dataclasses.replace(state.settings, db=":memory:") if missing else state.settings
    with (
        embedding_memory(settings)
        if embed
        else closing(Memory(settings=settings, background_embedding=False))
    ) as memory:
        yield memory
    if missing:  # after the answer, and not after an error (one line, as every error)
        note_missing_db(missing)


@contextmanager
def embedding_memory(settings: Settings, store: Store | None = None) -> Iterator[Memory]:
    """A Memory of ``settings`` (on ``store`` when given) whose embedding worker (none on
    a read-only store) embeds what is pending and nothing else (``requeue_stale=False``),
    as the server shares one; closed on the way out, its store too.

    Why not ``Memory(settings=...)``: its worker's first pass queued again every vector
    another model wrote, in every tenant, so one ``contextos search`` re-embedded an
    application's store with the CLI's model: the application's searches found nothing
    until it took them back, re-embedding every memory, and ``status`` counted valid
    vectors as waiting (a review). Why not inline (``background_embedding=False``): an
    add then embeds the whole queue before it returns, however long, and a Ctrl-C
    meanwhile aborted a stored write unreported; the worker keeps the report first and
    the waits bounded (:func:`settle`, :func:`wait_for_vectors`)."""
    from ..embed import make_embedder
    from ..memory import Memory
    from ..memory.embedding_worker import EmbeddingWorker
    from ..store import open_store

    embedder = make_embedder(settings.embedder)
    opened = store is None
    store = open_store(settings.db) if store is None else store
    worker = None
    try:
        if not store.read_only:
            worker = EmbeddingWorker(
                store, embedder, batch_size=settings.embed_batch_size, requeue_stale=False
            )
        memory = Memory(
            settings=settings,
            store=store,
            embedder=embedder,
            worker=worker,
            background_embedding=False,
        )
    except BaseException:
        if worker is not None:
            worker.close()
        if opened:
            store.close()
        raise
    try:
        yield memory
    finally:
        try:
            if worker is not None:
                worker.close()  # before the store closes under it
            memory.close()
        finally:
            if opened:  # a Memory given a store leaves it open
                store.close()


class HeldInterrupt:
    """Whether a Ctrl-C came while :func:`interrupt_flag` held it."""

    received = False


@contextmanager
def interrupt_flag() -> Iterator[HeldInterrupt]:
    """Within the block a Ctrl-C (SIGINT) only sets ``received``: nothing is raised.
    Off the main thread (which alone may set a signal handler) nothing is held."""
    import signal
    import threading

    held = HeldInterrupt()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(_signum: int, _frame: object) -> None:
        held.received = True

    before = signal.signal(signal.SIGINT, hold)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, before)


@contextmanager
def held_interrupt(after: str | None = None) -> Iterator[HeldInterrupt]:
    """Hold a Ctrl-C until the block ends, the report of a write that returned
    (printed and flushed: a pipe holds it otherwise). Why: a Ctrl-C landing between the
    write and its report said "aborted" with no id, though the memory was stored (a
    review). Only the report: held over the write itself, a Ctrl-C could not stop a
    write waiting on a lock, which then went through (a review of that). Whether one
    came is told to :func:`settle`, which then does not wait.

    ``after``: what a later Ctrl-C is told (:func:`interrupted_after_its_write`) for a
    write with no vectors to wait for (``forget``); by default, that its vectors are
    computed later."""
    with interrupt_flag() as held:
        yield held
        sys.stdout.flush()
        _REPORT.reported = True
        _REPORT.after = after


#: Seconds between looks at whether a Ctrl-C came while :func:`settle` waits.
SETTLE_POLL_S = 0.05
#: The longest a command waits for vectors: an add or update before it ends, a search
#: before it searches (:func:`wait_for_vectors`).
VECTOR_WAIT_S = 3.0


class _Flush:
    """``memory.flush(timeout=VECTOR_WAIT_S, others=False)`` on a thread of its own, so
    that the command's thread can look at a Ctrl-C flag between short waits."""

    def __init__(self, memory: Memory) -> None:
        import threading

        self.done = threading.Event()
        self.flushed = False
        self.error: BaseException | None = None
        self._began = time.monotonic()
        self._memory = memory
        threading.Thread(target=self._run, name="contextos-cli-flush", daemon=True).start()

    def _run(self) -> None:
        try:
            self.flushed = self._memory.flush(timeout=VECTOR_WAIT_S, others=False)
        except BaseException as exc:  # noqa: BLE001 - raised on the command's thread
            self.error = exc
        finally:
            self.done.set()

    def outcome(self) -> bool:
        """Whether it timed out (the vectors come later); raises what flush raised.
        False also when flush answered False at once: nothing here embeds them."""
        if self.error is not None:
            raise self.error
        return not self.flushed and time.monotonic() - self._began >= VECTOR_WAIT_S


def wait_for_vectors(memory: Memory) -> None:
    """Before a search: let this process embed what is pending, at most
    :data:`VECTOR_WAIT_S`, so memories whose vectors are not written yet (an add
    interrupted before its vector, another app's writes) are found by meaning too.

    Why at most, and not for records another process claimed (``others=False``): a
    search waited for the whole file's queue, so a CLI add killed after its write (its
    claim lasting ``CLAIM_LEASE_S``) made every command on the file wait ~30 s, and a
    backlog of another tenant's 2,360 memories 7.75 s (a review). What is still pending
    is found by its words meanwhile; the command says so on stderr, also when nothing
    here could embed it (a record another process holds: a killed ``add``'s, for its
    claim's 30 s, was found by its words only and nothing said so, a review)."""
    flush = _Flush(memory)
    flush.done.wait()
    flush.outcome()  # raises what the flush raised
    _say_vectors_still_pending(memory)


def _say_vectors_still_pending(memory: Memory) -> None:
    pending = memory.embedding_status().pending
    if pending:
        one = pending == 1
        waiting = f"{plural(pending, 'memory is', 'memories are')} still waiting for "
        err_console.print(
            f"note: {waiting}{'its vector' if one else 'their vectors'} (computed in the "
            "background by the processes using this database); until then "
            f"{'it is found by its' if one else 'they are found by their'} words only",
            highlight=False,
        )


def settle(memory: Memory, held: HeldInterrupt | None = None) -> None:
    """Wait for the vectors of what a command just wrote (about a second while the
    embedder loads; at most :data:`VECTOR_WAIT_S`, and not for records another process
    holds: see :func:`wait_for_vectors`), so its next search finds them by meaning; a
    Ctrl-C ends the wait.

    Why a Ctrl-C here (or one ``held`` during the write) is not an abort: the write is
    durable and reported already. It said "aborted" (exit 130) with no id, and a user
    who ran the command again stored a copy or made the update twice (a review). The
    command ends saying the vectors are computed the next time the database is opened.

    Why the Ctrl-C is a flag looked at between short waits, not a ``KeyboardInterrupt``:
    raised inside the wait, it could land in the middle of ``threading.Event`` and leave
    the event's lock held. The worker then blocked for good on its next ``set()``, and
    the command hung in ``close()`` (2 of 135 Ctrl-Cs sent right after the report)."""
    if held is None or not held.received:
        with interrupt_flag() as waiting:
            flush = _Flush(memory)
            while not flush.done.wait(SETTLE_POLL_S):
                if waiting.received:
                    break
            else:
                if flush.outcome():
                    _say_vectors_still_pending(memory)
                return
    _say_vectors_come_later()


@dataclasses.dataclass
class _WriteReport:
    """What this command said of its write: reported (:func:`held_interrupt`), and
    that a Ctrl-C left its vectors for later (:func:`settle`)."""

    reported: bool = False
    told: bool = False
    #: What a Ctrl-C after the report is told (None: :func:`_say_vectors_come_later`).
    after: str | None = None


_REPORT = _WriteReport()


def _say_vectors_come_later() -> None:
    _REPORT.told = True
    err_console.print(
        "interrupted while computing vectors: what was written is stored; its "
        "vectors are computed the next time the database is opened",
        highlight=False,
    )


def interrupted_after_its_write() -> bool:
    """For a Ctrl-C that reached ``main``: True, having said so, when this command's
    write was durable and reported already. Why: a Ctrl-C landing as the store closed,
    after :func:`settle`, still said "aborted" (exit 130) after the report, and a user
    took the write as undone."""
    if not _REPORT.reported:
        return False
    if _REPORT.after is not None:
        tell_interrupted(_REPORT.after)
    elif not _REPORT.told:
        _say_vectors_come_later()
    return True


def tell_interrupted(note: str) -> None:
    """Say ``note`` on stderr, once a command: that a Ctrl-C came after its write, which
    stands (:func:`interrupted_after_its_write` then says nothing more)."""
    if not _REPORT.told:
        _REPORT.told = True
        err_console.print(note, highlight=False)


#: The SQLite paths this command found missing (:func:`missing_db`), for its error.
_MISSING: list[str] = []


def missing_db(state: CliState, *, create: bool) -> str | None:
    """The configured SQLite path when it does not exist and the command only reads
    (``create`` False): such a command opens an empty in-memory store instead of
    creating the file (:func:`open_memory`); None otherwise."""
    db = str(state.settings.db)
    if create or not absent_db(db):
        return None
    _MISSING.append(db)
    return db


def missing_db_found() -> str | None:
    """The database path this command found missing (:func:`missing_db`), if any."""
    return _MISSING[-1] if _MISSING else None


def start_command() -> None:
    """Start a command with no missing database noted and no write reported (``main``
    runs one command, but a process may call it more than once: a test, an app
    embedding the CLI)."""
    _MISSING.clear()
    _REPORT.reported = _REPORT.told = False
    _REPORT.after = None
    _usable_streams()


def _usable_streams() -> None:
    """Streams every command can use. A closed stdout or stderr (``>&-``: Python
    makes it None) is /dev/null, as it would be for a shell's own output, so a write
    is not followed by a traceback (a review: ``add`` stored, then crashed). A closed
    stdin (``<&-``, a daemon's runner) is /dev/null too: ``add -`` says "stdin is
    empty" and ``forget`` finds no terminal to ask on, where each ended in an
    AttributeError traceback. Text
    that stdout's encoding cannot hold (``PYTHONIOENCODING=ascii``, a Windows code
    page) is written as ``\\xe8``-style escapes, not an error after the write."""
    if sys.stdin is None:  # ``<&-``: read as empty, and not a terminal (``forget`` refuses)
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("_", "-")
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and not encoding.startswith("utf"):
        reconfigure(errors="backslashreplace")


def with_missing_db(error: str, db: str | None = None) -> str:
    """``error`` (one line) with the note that the database ``db`` (default: the one
    this command found missing, if any) does not exist. Why: ``get``, ``delete``,
    ``history``, ``session show`` on a mistyped ``--db`` answered "no memory 'ID'" or
    "no session" alone, as if the memory had gone (a review); the note after an answer
    never came after an error."""
    missing = db or missing_db_found()
    if missing is None or f"no database at {missing}" in error:
        return error
    return f"{error}; no database at {missing} (check --db or CONTEXTOS_DB)"


def absent_db(db: str) -> bool:
    """Whether ``db`` names a SQLite file that does not exist (yet): not a URL, not
    ``:memory:``."""
    return "://" not in db and db != ":memory:" and not Path(db).exists()


def note_missing_db(db: str) -> None:
    """Say on stderr that ``db`` does not exist and was not created."""
    err_console.print(
        SafeText(
            f"note: no database at {db}: nothing has been stored there "
            "(check --db or CONTEXTOS_DB); none was created"
        ),
        highlight=False,
    )


def read_text_arg(source: str, *, param: str = "FILE") -> str:
    """The text of a file argument (``-``: stdin), which must be UTF-8 text; a leading
    byte-order mark (Windows editors and PowerShell write one) is not part of it.

    Why strict: counting or storing a Latin-1 or binary file after silently
    replacing its bytes gives wrong numbers and garbled memories; say what is
    wrong and how to fix it instead, in one line. Why the mark goes: kept, a JSON
    file of messages was read as plain text (its first character no ``[``), and a
    memory added from stdin held an invisible U+FEFF that no search or repeat matched
    (a review)."""
    if source == "-":
        data: bytes = sys.stdin.buffer.read()
        where = "stdin"
    else:
        # Any existing path but a folder: ``count <(jq ...)`` and a named pipe name no
        # regular file, and ``is_file()`` called them "no such file".
        path = Path(source)
        if path.is_dir():
            raise click.BadParameter(f"{source} is a directory, not a file", param_hint=param)
        if not path.exists():
            raise click.BadParameter(f"no such file: {source}", param_hint=param)
        if not (path.is_file() or path.is_fifo()):
            # A device never ends: ``count /dev/zero`` read until memory ran out.
            raise click.BadParameter(
                f"{source} is a device or socket, not a file or pipe", param_hint=param
            )
        data = path.read_bytes()
        where = source
    if b"\x00" in data:
        raise click.BadParameter(f"{where} is a binary file, not text", param_hint=param)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. iconv -f latin1 -t utf-8",
            param_hint=param,
        ) from None


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 memory``, ``2 memories``: the count and the noun that agrees with it."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"


def progress_bar() -> Progress:
    """The benchmarks' progress bar: on stderr, gone when done, silent off a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def print_table(table: Table) -> None:
    """Print a table: fitted to the terminal, or whole when stdout is a pipe or file.

    Why: off a terminal rich assumes 80 columns and cuts cells and headers
    with "…"; a table piped into a file or ``grep`` must keep every character.
    """
    if console.is_terminal:
        if _too_narrow(table, console.width):
            _print_records(table)
        else:
            console.print(table)
        return
    wide = console.options.update(max_width=1_000_000)
    width = max(Measurement.get(console, wide, table).maximum, console.width)
    _Console(file=console.file, width=width, no_color=console.no_color).print(table)


#: The fewest columns a wrapping cell (a memory's text) is given before a table is
#: printed one record at a time instead (:func:`_too_narrow`).
NARROWEST_TEXT = 10


def _cell_width(cell: object) -> int:
    text = _as_text(cell)
    return max((cell_len(line) for line in text.plain.split("\n")), default=0)


def _too_narrow(table: Table, width: int) -> bool:
    """Whether ``table`` fits ``width`` columns only by cutting a ``no_wrap`` cell (an
    id) or squeezing a wrapping column under :data:`NARROWEST_TEXT`. Why: in a narrow
    pane rich cut ids (``search`` without even a "…", so the id pasted into ``get``
    was "no memory") and squeezed the memory's text to nothing (a review)."""
    needed = 3 * len(table.columns) + 1  # borders and padding
    for column in table.columns:
        widest = max([_cell_width(column.header), *map(_cell_width, column.cells)])
        needed += widest if column.no_wrap or widest <= NARROWEST_TEXT else NARROWEST_TEXT
    return needed > width


def _print_records(table: Table) -> None:
    """``table`` one row at a time: its first cell whole on a line, then each other
    column as ``header: value`` (folded at the terminal's width, never cut)."""

    def line(text: Text | str) -> None:
        console.print(text, overflow="fold", soft_wrap=False, highlight=False)

    if table.title:
        line(table.title if isinstance(table.title, Text) else str(table.title))
    rest = table.columns[1:]
    for row in zip(*(list(column.cells) for column in table.columns), strict=True):
        line(_as_text(row[0]))
        for column, cell in zip(rest, row[1:], strict=True):
            line(Text.assemble((f"  {column.header}: ", "dim"), _as_text(cell)))


def _as_text(cell: object) -> Text:
    """A table cell as the table would show it: user text is a ``Text`` already (a
    :class:`SafeText`); the program's own strings go through rich's markup."""
    return cell if isinstance(cell, Text) else console.render_str(str(cell), highlight=False)


def json_default(value: object) -> object:
    """Serialise dataclasses, datetimes (as every surface writes them:
    :func:`~contextos.times.iso`) and tuples for ``--json`` output."""
    if isinstance(value, datetime):
        return iso(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(payload: object, *, one_line: bool = False) -> None:
    """Write ``payload`` as JSON on stdout (one document, newline-terminated): as
    UTF-8 text, its control and format characters escaped (:func:`json_escaped`), or
    all ASCII where stdout's encoding cannot hold it (Windows' code pages,
    ``PYTHONIOENCODING=ascii``: a memory stored, then its report failed, exit 2).

    ``one_line``: compact, on one line, for a command that prints one document per
    event (``chat --json``: JSON Lines, which a script reads a line at a time)."""
    indent = None if one_line else 2
    text = json_escaped(
        json.dumps(payload, default=json_default, ensure_ascii=False, indent=indent)
    )
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(payload, default=json_default, ensure_ascii=True, indent=indent)
    write_out(text + "\n")


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


def check_tenant_option(tenant: str, hint: str) -> None:
    """The group's check of a ``--tenant`` value (:func:`~contextos.types.validate_tenant`),
    a usage error naming the option as the user gave it (``hint``)."""
    from ..types import validate_tenant

    try:
        validate_tenant(tenant)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _same_setting(name: str, before: str, after: str) -> bool:
    """Whether two values of ``--db`` (or ``--tenant``) name the same thing: the same
    text, or for ``--db`` the same SQLite path (``m.db`` and ``./m.db``)."""
    if before == after:
        return True
    if name != "db" or "://" in before or "://" in after:
        return False
    return os.path.abspath(os.path.expanduser(before)) == os.path.abspath(os.path.expanduser(after))


def _group_option_after(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Callback of ``--db`` or ``--tenant`` given after the command's name: the group's
    option, with its checks (a tenant's name here; a ``--db``'s as the group's, when the
    command resolves its settings: :attr:`CliState.settings`); given in both places with
    different values, a usage error naming both (which one was meant cannot be guessed).
    Over ``CONTEXTOS_DB`` or ``CONTEXTOS_TENANT`` it wins, as the group's option does:
    the variable's tenant is checked only once the command's options are read
    (:meth:`CliState.check_tenant_variable`), so a bad one is not refused here."""
    if value is None:
        return
    name = param.name
    root = ctx.find_root()
    before = root.params.get(name)
    typed_before = root.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    if typed_before and before is not None and not _same_setting(name, before, value):
        raise click.UsageError(
            f"--{name} is given twice with different values: {before!r} before the "
            f"command and {value!r} after it; give one",
            ctx,
        )
    state = ctx.find_object(CliState)
    if state is None:  # no group above (a command invoked alone): nothing to set
        return
    if name == "tenant":
        check_tenant_option(value, "--tenant")
        state.tenant, state.tenant_typed = value, True
        return
    state.db = value


def group_options(*, tenant: bool = True) -> Callable[[F], F]:
    """``--db``, and with ``tenant`` ``--tenant``, after the command's name too
    (``contextos search x -u ana --db m.db``), as ``--json`` is (:func:`json_option`):
    for a command that opens the group's database (and, with ``tenant``, acts for its
    tenant). Why: ``search ... --db`` was refused with "No such option '--db'", which
    ``search --help`` did not explain (a review). Why not on every command: ``serve
    --tenant acme``, ``demo --db d.db`` and ``count --db`` were taken and ignored,
    ``serve`` serving every tenant's keys (a review of that); ``serve``, ``mcp`` and
    ``vacuum`` take ``--db`` alone, ``keys create`` and ``keys list`` their own
    ``--tenant``."""
    options = [("--db", "PATH", "As --db before the command: the database (env CONTEXTOS_DB).")]
    if tenant:
        help_text = "As --tenant before the command: the tenant (env CONTEXTOS_TENANT)."
        options.append(("--tenant", "NAME", help_text))

    def apply(func: F) -> F:
        for flag, metavar, help_text in reversed(options):
            func = click.option(
                flag,
                default=None,
                metavar=metavar,
                expose_value=False,
                callback=_group_option_after,
                help=help_text,
            )(func)
        return func

    return apply


#: ``--data``: the LoCoMo file of a benchmark.
locomo_option = click.option(
    "--data",
    default=DEFAULT_LOCOMO,
    show_default=True,
    help="Path to the LoCoMo JSON (never copied into the repo).",
)

#: ``--embedder`` of a benchmark that starts ``contextos serve``: the embedder it runs.
served_embedder_option = click.option(
    "--embedder",
    default=DEFAULT_EMBEDDER,
    show_default=True,
    help="Embedder of the server under test (the default is the real configuration).",
)


def scope_id_param(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of a user/agent/session id option or argument: the library's one id rule
    (:func:`contextos.types.scope_id`), so a blank id is a usage error (exit 2) naming the
    option, instead of a failure deeper in."""
    try:
        return scope_id(value, param.name or "id")
    except ScopeError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def memory_id_param(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Callback of a ``MEMORY_ID`` argument: a blank one is a usage error (exit 2), as a
    blank scope id is, not "no memory ' '" (exit 1, which reads as a memory gone)."""
    if not value.strip():
        raise click.BadParameter(f"is empty or blank ({value!r}): give an id", param=param)
    return value


def model_param(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Callback of a ``--model`` option: an unknown model is a usage error (exit 2)
    naming the option and the known names, as an unknown ``--strategy`` is, not a
    runtime failure (exit 1) after the command started."""
    from ..llm.models import get_model

    try:
        get_model(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param=param) from None
    return value


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf``: click lets them through
    (nan compares false with every bound), and ``serve --rate nan`` turned the rate
    limit off while ``bench serve --seconds nan`` ran a load of no length."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):  # before the range, which may read inf as too large
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


#: The largest integer an option takes: what SQLite's INTEGER and PostgreSQL's bigint
#: hold. A larger one (``session show --seq 99999999999999999999``) reached the store
#: and ended in an ``OverflowError`` traceback.
MAX_INT = 2**63 - 1


class IntRangeCapped(click.IntRange):
    """``click.IntRange`` never above :data:`MAX_INT` (a plain ``int``, or an
    ``IntRange`` with no maximum, takes any size): the type of every integer option, so
    an oversized value is a usage error naming the option. ``--help`` shows the range
    the option was given; the cap is no choice of the option's."""

    def __init__(
        self,
        min: int | None = None,
        max: int | None = None,
        min_open: bool = False,
        max_open: bool = False,
    ) -> None:
        capped = max is None or max > MAX_INT
        super().__init__(
            min, MAX_INT if capped else max, min_open=min_open, max_open=max_open and not capped
        )

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.INT.convert(value, param, ctx)
        if number > MAX_INT:  # before the range, whose description leaves the cap out
            self.fail(f"{number} is too large (at most {self.max})", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        if self.max != MAX_INT:
            return super()._describe_range()
        if self.min is None:
            return ""
        return f"x{'>' if self.min_open else '>='}{self.min}"


def int_range(low: int | None = None, high: int | None = None) -> IntRangeCapped:
    """The type of an integer option: at least ``low`` and at most ``high``, and never
    above :data:`MAX_INT` (:class:`IntRangeCapped`)."""
    return IntRangeCapped(low, high)


def _capped(kind: click.IntRange | FiniteFloatRange) -> click.IntRange | FiniteFloatRange:
    """``kind``, an ``IntRange`` made an :class:`IntRangeCapped`."""
    if isinstance(kind, click.IntRange) and not isinstance(kind, IntRangeCapped):
        return IntRangeCapped(kind.min, kind.max, kind.min_open, kind.max_open)
    return kind


def number_option(
    name: str, default: float, kind: click.IntRange | FiniteFloatRange, help_text: str
) -> Callable[[F], F]:
    """A numeric option (a count, rate, size or port): bounded by ``kind`` (an integer
    one never above :data:`MAX_INT`), so a value out of range is refused in one line, and
    its default shown in ``--help``."""
    return click.option(
        name, default=default, show_default=True, type=_capped(kind), help=help_text
    )


def choice_option(
    name: str, choices: Sequence[str], default: str, help_text: str
) -> Callable[[F], F]:
    """An option taking one of ``choices``, its default shown in ``--help``."""
    return click.option(
        name, default=default, show_default=True, type=click.Choice(choices), help=help_text
    )
