"""Server commands: ``contextos serve``, ``contextos keys ...``, ``contextos mcp``,
and ``contextos bench serve``.

Each parses its flags, builds the server (or key store) from the library, and
runs it; none holds logic of its own.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..embed import DEFAULT_EMBEDDER
from ..errors import NotFound
from ..times import iso
from .bench_frame import report_path_param, terminable, write_json
from .common import (
    CliState,
    F,
    FiniteFloatRange,
    absent_db,
    choice_option,
    console,
    err_console,
    group_options,
    json_option,
    note_missing_db,
    number_option,
    pass_state,
    print_json,
    served_embedder_option,
    with_missing_db,
    write_out,
)
from .text import SafeText, shown_id

if TYPE_CHECKING:
    from ..server.app import ServerConfig
    from ..server.keys import KeyStore

#: ``--embedder`` of ``serve`` and ``mcp``: both read the setting when it is not given
#: (``mcp``'s help said only "default ...", so a set variable won unexplained).
EMBEDDER_HELP = (
    f"Embedder name ({DEFAULT_EMBEDDER}, minilm for float32, or hash for tests); "
    "env CONTEXTOS_EMBEDDER."
)

ADMIN_KEY_HELP = (
    "Admin key for /v1/keys (manages keys, cannot read memories); "
    "env CONTEXTOS_ADMIN_KEY. Without it, keys are managed with `contextos keys`."
)


def _db(state: CliState) -> str:
    """The database of a server command: ``--db`` before or after the command (one
    option, :func:`~contextos.cli.common.group_options`), else ``CONTEXTOS_DB``, else the
    default, checked as every command's is (:attr:`CliState.settings`, with
    :func:`~contextos.config.check_db`: an empty, missing-folder or directory path is
    refused, so ``keys create --db typo/sub/k.db`` creates no folders and ``keys create
    --db "$DB"`` with ``DB`` unset writes no key to the default database). The tenant
    setting is not read: these commands take their tenant from ``--tenant`` or their
    keys (:func:`_keys_tenant`)."""
    state.tenants_from_keys = True
    return state.settings.db


def _create_database(db: str) -> None:
    """Make the store's and the key store's tables at ``db``, then close both."""
    from ..server.keys import KeyStore
    from ..store import open_store

    open_store(db).close()
    KeyStore(db).close()


def _note_created(db: str, was_absent: bool) -> None:
    """Say on stderr that ``db`` was just created (``serve``, ``mcp``, ``keys
    create``), so a mistyped path is seen at once rather than as a server that answers
    every search with nothing. Said once the file exists: a serve refused its port
    creates nothing."""
    if was_absent and not absent_db(db):
        err_console.print(
            SafeText(f"note: no database at {db}: a new one was created there"),
            highlight=False,
        )


def _note_read_only(db: str) -> None:
    """Say on stderr that the SQLite file ``db`` is read-only to this process: reads are
    served and every write is refused. Why: such a server started without a word, and
    each add was the first sign (a review, after a restore left the file owned by
    another user)."""
    from ..store.sqlite import opens_read_only

    if "://" in db or not opens_read_only(Path(db)):
        return
    err_console.print(
        SafeText(
            f"note: {db} is read-only to this process (its file or its folder is not "
            "writable): reads are served, every write is refused; make them writable and "
            "restart"
        ),
        highlight=False,
    )


def _note_no_keys(db: str, admin_key: str | None) -> None:
    """Say on stderr that ``db`` holds no API key a request could use, and how to make
    one. Why: a key created in another database (``keys create`` without ``--db``
    writes to the default one) got "401 invalid or revoked API key" from this server
    with no hint of where the key went (a review, following the inspector's docs)."""
    from ..server.keys import KeyStore

    if admin_key:
        return
    with KeyStore(db) as keys:
        if keys.list(include_revoked=False):
            return
    shown = "URL" if "://" in db else db  # a database URL may hold a password
    err_console.print(
        SafeText(
            f"note: this database holds no API key yet, so every request is refused: "
            f"create one with `contextos keys create --db {shown} --tenant NAME`"
        ),
        highlight=False,
    )


#: Seconds a client has to send a request's headers (``serve --header-timeout``; see
#: :mod:`contextos.server.headlimit`). Apache's mod_reqtimeout allows 20 for the
#: first byte and up to 40 in all, nginx 60; a browser or SDK sends its headers in one
#: packet, so only a stalled or hostile client comes near it.
DEFAULT_HEADER_TIMEOUT = 20.0

#: Seconds a response may stay blocked with the client reading nothing before the
#: connection is dropped (``serve --send-timeout``): nginx's ``send_timeout``.
DEFAULT_SEND_TIMEOUT = 60.0

#: Connections the kernel queues before the server accepts them (uvicorn's default).
LISTEN_BACKLOG = 2048


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is announced or loaded, so a busy
    port fails at once with one line (and port 0 picks a free one). It listens at once:
    a client that connects as soon as the address is announced waits in the backlog
    while the app starts up, instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections accepted from a
    # socket whose proto says TCP. With Nagle on, a response sent in two writes (head,
    # body) waited for the client's delayed ACK: 44 ms for every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)  # serve --workers hands it to the worker processes
    return sock


class _Stopped(Exception):
    """SIGTERM arrived after the server had stopped gracefully."""


def _run_server(
    app: Any,
    sock: socket.socket,
    options: dict[str, Any],
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    forwarded_allow_ips: Sequence[str] = (),
    stopped: Callable[[], bool] = lambda: False,
    access_log: bool = False,
) -> None:
    """Serve ``app`` (an ASGI app, or an import string with ``factory``/``workers`` in
    ``options``) on the bound ``sock`` until SIGTERM or Ctrl-C, then return.

    uvicorn stops gracefully on SIGTERM and then raises the signal again, which by
    default kills the process on the spot; a handler of ours turns that into a normal
    return, so callers close what they opened and the exit status is 0. A request's
    line and headers must arrive within ``header_timeout`` seconds and stay under
    ``headlimit.MAX_HEAD_BYTES``, its body keep a minimum pace after as long again,
    and a response blocked for ``send_timeout`` seconds drops its connection
    (:mod:`contextos.server.headlimit`). ``stopped``: whether a SIGTERM came while
    the app was built (:func:`_sigterm_noted`); then nothing is served.

    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from the proxies in
    ``forwarded_allow_ips`` (``--forwarded-allow-ips``; none by default). Why: uvicorn
    believes them from 127.0.0.1 unless told otherwise, and the failed-login throttle
    counts per client address, so any client on the server's host escaped it with a new
    ``X-Forwarded-For`` per guess (300 of 300 wrong keys checked) and locked out any
    address it named (25 failures named 203.0.113.7: that address's valid key got 429).

    The library's log lines are written as uvicorn's are, at ``options["log_level"]``,
    and with ``access_log`` one line a request at ``info`` (:func:`log_config`)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..server.accept_errors import throttle_accept_errors
    from ..server.headlimit import HeadLimitProtocol, set_timeouts

    throttle_accept_errors()

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    proxies = list(forwarded_allow_ips)
    config = uvicorn.Config(
        app,
        http=HeadLimitProtocol,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_config=log_config(options.get("log_level", "warning"), access_log=access_log),
        **options,
    )
    set_timeouts(config, header=header_timeout, send=send_timeout)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if stopped():  # checked after ``stop`` took over: no SIGTERM falls between
            return
        if config.workers > 1:
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
            _raise_if_a_worker_failed(supervisor)
        else:
            uvicorn.Server(config).run(sockets=[sock])
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


def _raise_if_a_worker_failed(supervisor: Any) -> None:
    """After uvicorn's supervisor stopped: a ClickException (exit 1) if it stopped
    because a worker could not start (:func:`worker_app` logged why), so a server that
    never served exits as a failure, not with "contextos stopped" and 0."""
    from uvicorn.config import STARTUP_FAILURE

    exits = [getattr(process, "exitcode", None) for process in supervisor.processes]
    if STARTUP_FAILURE in exits:
        raise click.ClickException(
            "a server worker could not start (its log line above says why): stopped"
        )


def log_config(level: str, *, access_log: bool) -> dict[str, Any]:
    """uvicorn's logging configuration, with the library's loggers (``contextos.*``) on
    its handler and format at ``level``, the access lines of
    :mod:`contextos.server.access_log` at ``info`` unless ``access_log`` is off, and
    psycopg's lines in the same format through :mod:`contextos.server.log_repeats`.

    Why: without a handler of their own the library's lines went through Python's
    last-resort handler, warnings and worse only, so ``--log-level info`` showed uvicorn's
    start-up lines and not one line of the server's own, and no request at all. Given
    to uvicorn, it applies in every ``--workers`` process too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["contextos"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    if not access_log:
        config["loggers"]["contextos.access"] = {"level": "WARNING"}
    # psycopg_pool's lines (a connection try each, during a database outage): the same
    # format, one line each, a repeat within seconds written once (log_repeats).
    config.setdefault("filters", {})["quiet_repeats"] = {
        "()": "contextos.server.log_repeats.OneLineQuietRepeats"
    }
    config["handlers"]["quiet_repeats"] = {
        **config["handlers"]["default"],
        "filters": ["quiet_repeats"],
    }
    config["loggers"]["psycopg"] = {
        "handlers": ["quiet_repeats"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


@contextmanager
def _sigterm_noted() -> Iterator[Callable[[], bool]]:
    """While a server starts: a SIGTERM is noted, not acted on; :func:`_run_server`
    then serves nothing and the caller closes what it opened, as after a SIGTERM while
    serving (exit 0). Why not raise at once, as :func:`_until_sigterm` does: the port
    listens before the app is built, and an exception raised at an arbitrary point of
    that start (a C extension's import, a thread's start) was mangled or escaped: the
    process died of SIGINT or exited 1 with a pydantic ``SchemaError``; without a
    handler, SIGTERM killed it with the store open."""
    got: list[int] = []

    def note(signum: int, frame: object) -> None:
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        yield lambda: bool(got)
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _until_sigterm() -> Iterator[None]:
    """Run the block until it returns, SIGTERM or Ctrl-C, then carry on normally.

    SIGTERM's default action ends the process on the spot, skipping the ``finally``
    clauses that close the store (an agent client stops its servers that way, maybe
    while one is still starting); as a KeyboardInterrupt it unwinds like Ctrl-C."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _key_dict(key: object) -> dict[str, object]:
    from ..server.keys import ApiKey

    assert isinstance(key, ApiKey)
    return {
        "id": key.id,
        "tenant": key.tenant,
        "name": key.name,
        "created_at": iso(key.created_at),
        "revoked_at": iso(key.revoked_at) if key.revoked_at else None,
    }


#: Hands ``serve``'s settings to its worker processes (admin key included, never logged).
WORKER_CONFIG_ENV = "CONTEXTOS_SERVE_WORKER_CONFIG"

#: ``--shutdown-timeout``, one definition for ``serve`` and ``mcp`` over HTTP.
shutdown_timeout_option = number_option(
    "--shutdown-timeout",
    30,
    click.IntRange(1),
    "Seconds a stop (SIGTERM, Ctrl-C) waits for HTTP requests in flight before closing "
    "their connections (a client that stalls mid-request must not keep the server up).",
)


def _proxies(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    """``--forwarded-allow-ips``: comma-separated IP addresses or networks, or ``*``;
    an entry that is neither is refused here (uvicorn would take it as a name that no
    client address ever matches, and trust no proxy without a word)."""
    if value is None:
        return []
    out: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "*":
            out.append(item)
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8)",
                ctx=ctx,
                param=param,
            ) from None
        single = net.prefixlen == net.max_prefixlen and "/" not in item
        out.append(str(net.network_address if single else net))
    if not out:
        raise click.BadParameter("name at least one address", ctx=ctx, param=param)
    return ["*"] if "*" in out else out  # uvicorn reads "*" as "any" only alone


#: ``--forwarded-allow-ips``, one definition for ``serve`` and ``mcp`` over HTTP.
forwarded_allow_ips_option = click.option(
    "--forwarded-allow-ips",
    "forwarded_allow_ips",
    default=None,
    metavar="IPS",
    callback=_proxies,
    help="Comma-separated addresses or networks of reverse proxies whose "
    "X-Forwarded-For and X-Forwarded-Proto are believed (* for any). Default: none, "
    "every client is its connection's address (a client could name any address).",
)


def _host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--host``: an empty or blank value is refused here.

    Why: Python binds ``""`` to every interface, so ``serve --host "$BIND"`` with ``BIND``
    unset listened on 0.0.0.0, where the default listens on loopback only, and announced
    ``http://:PORT`` (a review). Every interface is ``0.0.0.0`` (or ``::``), typed."""
    if not value.strip():
        raise click.BadParameter(
            "is empty, which would listen on every interface: name one (127.0.0.1 for "
            "this host only, 0.0.0.0 for every IPv4 interface)",
            ctx=ctx,
            param=param,
        )
    return value


def host_option(help_text: str) -> Callable[[F], F]:
    """``--host``, one definition for ``serve`` and ``mcp`` over HTTP (:func:`_host`)."""
    return click.option(
        "--host", default="127.0.0.1", show_default=True, callback=_host, help=help_text
    )


def register(cli: click.Group, bench: click.Group) -> None:
    """Add ``serve``, ``keys`` and ``mcp`` to the CLI and ``serve`` to ``bench``."""
    cli.add_command(serve)
    cli.add_command(keys)
    cli.add_command(mcp)
    bench.add_command(serve_bench)


class RateRange(FiniteFloatRange):
    """``--rate``: 0 (no limit), or one request a day at least (``check_rate``). Why: a
    tiny positive rate (``1e-320``) was accepted, and every rate-limited request was
    answered 500 (an infinite wait for a token; a review)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rate = super().convert(value, param, ctx)
        from ..server.ratelimit import check_rate

        try:
            check_rate(rate)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return rate


def limit_options(note: str = "") -> Callable[[F], F]:
    """``--rate``, ``--burst`` and ``--max-body-bytes``: the same limits for ``serve``
    and for ``mcp`` over HTTP (``note`` prefixes each help text)."""

    def text(help_text: str) -> str:
        return f"{note}{help_text}" if note else help_text[0].upper() + help_text[1:]

    options = [
        number_option(
            "--rate",
            50.0,
            RateRange(0),
            text(
                "requests per second per key per server process (N processes, as with "
                "serve --workers N, allow N times; 0: no limit); over it: 429 + Retry-After."
            ),
        ),
        number_option(
            "--burst",
            100,
            click.IntRange(1),
            text("requests a key may send at once, per server process, before the rate applies."),
        ),
        number_option(
            "--max-body-bytes",
            1_000_000,
            click.IntRange(1024),
            text("larger request bodies get 413."),
        ),
    ]

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@click.command()
@host_option("Interface to bind.")
@number_option("--port", 8080, click.IntRange(0, 65535), "TCP port.")
@click.option("--embedder", default=None, help=EMBEDDER_HELP)
@click.option("--admin-key", envvar="CONTEXTOS_ADMIN_KEY", default=None, help=ADMIN_KEY_HELP)
@limit_options()
@number_option(
    "--keep-alive",
    65,
    click.IntRange(1),
    "Seconds an idle client connection stays open (keep it above the client's or "
    "load balancer's idle timeout, or requests race the close).",
)
@shutdown_timeout_option
@number_option(
    "--header-timeout",
    DEFAULT_HEADER_TIMEOUT,
    FiniteFloatRange(0, 3600, min_open=True),
    "Seconds a client has to send a request's headers before it gets 408 and is "
    "disconnected (silent or trickling clients must not hold connections); after as "
    "long again a body must average 240 bytes a second.",
)
@number_option(
    "--send-timeout",
    DEFAULT_SEND_TIMEOUT,
    FiniteFloatRange(0, 3600, min_open=True),
    "Seconds a response may wait on a client that reads none of it before the "
    "connection is dropped (clients that stop reading must not hold memory).",
)
@number_option(
    "--workers",
    1,
    click.IntRange(1, 64),
    "Server processes sharing the port (each a stateless replica over --db).",
)
@forwarded_allow_ips_option
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="At --log-level info or debug, one line a request: client, request line, "
    "status, milliseconds, and the tenant and key id it ran as.",
)
@group_options(tenant=False)
@pass_state
def serve(
    state: CliState,
    host: str,
    port: int,
    embedder: str | None,
    admin_key: str | None,
    max_body_bytes: int,
    rate: float,
    burst: int,
    keep_alive: int,
    shutdown_timeout: int,
    header_timeout: float,
    send_timeout: float,
    workers: int,
    forwarded_allow_ips: list[str],
    log_level: str,
    access_log: bool,
) -> None:
    """Run the HTTP API (memories, sessions, keys) on HOST:PORT over --db."""
    from ..server.app import (
        ServerConfig,
        checked_embedder,
        close_app,
        config_to_json,
        create_app,
    )
    from ..server.ratelimit import RateLimit

    try:
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError("server", "uvicorn") from exc
    state.tenants_from_keys = True
    target = _db(state)
    fresh = absent_db(target)
    config = ServerConfig(
        db=target,
        embedder=state.embedder_name(embedder),
        admin_key=admin_key,
        max_body_bytes=max_body_bytes,
        rate_limit=RateLimit(rate=rate, burst=burst),
        embed_batch_size=state.settings.embed_batch_size,
    )
    if workers > 1:
        # Refused here, as one process refuses it: the workers, which check it again,
        # were announced as serving, died with a traceback and were started again, for
        # ever (a review). One worker checks it in create_app, once the port is bound.
        checked_embedder(config)
    options: dict[str, Any] = {
        "log_level": log_level,
        "access_log": False,
        "timeout_keep_alive": keep_alive,
        # Without it uvicorn waits forever for a request in flight: one client that
        # stalls mid-body kept a SIGTERMed server up until its supervisor SIGKILLed it,
        # and the store was never closed (pending embeddings, the SQLite -wal).
        "timeout_graceful_shutdown": shutdown_timeout,
    }
    # SIGTERM while the app is built (the port already listens) stops it as it would
    # once serving, rather than killing the process with the store half open.
    with _sigterm_noted() as stopped:
        sock = _bind(host, port)
        url = _url(host, sock.getsockname()[1])
        if workers > 1:
            # Worker processes build their own app from the config handed over in the
            # environment (uvicorn needs an import string to spawn them); each closes
            # its store when it is shut down. A new database is made here first: the
            # workers raced to make its tables ("database is locked", 1 start in 6).
            if fresh:
                _create_database(target)
                _note_created(target, fresh)
            os.environ[WORKER_CONFIG_ENV] = config_to_json(config)
            _note_read_only(target)
            _note_no_keys(target, admin_key)
            _announce(url)
            worker_options = {**options, "factory": True, "workers": workers}
            _run_server(
                f"{__name__}:worker_app",
                sock,
                worker_options,
                header_timeout=header_timeout,
                send_timeout=send_timeout,
                forwarded_allow_ips=forwarded_allow_ips,
                stopped=stopped,
                access_log=access_log,
            )
            console.print("contextos stopped", highlight=False)
            return
        try:
            app = create_app(config, close_on_shutdown=True, own_process=True)
        except BaseException:
            sock.close()
            raise
        try:
            _note_created(target, fresh)
            _note_read_only(target)
            _note_no_keys(target, admin_key)
            _announce(url)
            _run_server(
                app,
                sock,
                options,
                header_timeout=header_timeout,
                send_timeout=send_timeout,
                forwarded_allow_ips=forwarded_allow_ips,
                stopped=stopped,
                access_log=access_log,
            )
        finally:
            close_app(app)  # no-op after a normal shutdown, which already closed it
        console.print("contextos stopped (store closed)", highlight=False)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(url: str) -> None:
    """Say where the server listens, once the port is bound and the app is built."""
    console.print(f"contextos serving on {url} (OpenAPI schema at /openapi.json)", highlight=False)


def worker_app() -> Any:
    """The app of one ``serve --workers N`` process (see ``serve``).

    A worker that cannot open the store yet (a busy or unavailable database: more
    workers than PostgreSQL's ``max_connections`` leaves room for) tries again, waiting
    1 s, 2 s, 4 s... up to :data:`WORKER_RETRY_MAX_S`, with one line in the log a try.
    Why: it died with a 45-line traceback, and uvicorn started it again at once, for
    ever (24 crashes and 1,398 log lines in 45 s in a review). A fault that waiting does
    not mend (``StoreFault``, a configuration error) ends it with one line in the log
    and uvicorn's exit status for a worker that could not start, on which the parent
    stops the server (:func:`_run_server`) instead of starting the worker again."""
    from uvicorn.config import STARTUP_FAILURE

    from ..errors import ContextosError
    from ..server.app import config_from_json

    try:
        return _app_once_the_store_opens(config_from_json(os.environ[WORKER_CONFIG_ENV]))
    except Exception as exc:  # noqa: BLE001 - logged, then the worker ends
        # A traceback only for what is no error of the settings or the store (a bug).
        expected = isinstance(exc, (ContextosError, ValueError))
        log = logging.getLogger("contextos.server")
        log.error("worker %d cannot start: %s", os.getpid(), exc, exc_info=not expected)
        sys.exit(STARTUP_FAILURE)


def _app_once_the_store_opens(config: ServerConfig) -> Any:
    """``create_app(config)``, tried again while the store cannot be opened yet (a
    ``StoreError`` other than a ``StoreFault``), 1 s, 2 s, 4 s... apart."""
    from ..errors import StoreError, StoreFault
    from ..server.app import create_app

    wait = 1.0
    while True:
        try:
            return create_app(config, close_on_shutdown=True, own_process=True)
        except StoreFault:
            raise
        except StoreError as exc:
            logging.getLogger("contextos.server").warning(
                "worker %d could not open the store (%s); trying again in %.0f s",
                os.getpid(),
                exc,
                wait,
            )
            time.sleep(wait)
            wait = min(2 * wait, WORKER_RETRY_MAX_S)


#: The longest wait between a ``serve --workers`` worker's tries to open the store.
WORKER_RETRY_MAX_S = 30.0


@click.group()
def keys() -> None:
    """Manage API keys (each bound to one tenant; only hashes are stored)."""


def _keys_tenant(state: CliState, tenant: str | None) -> str | None:
    """The tenant a ``keys`` command acts for: its own ``--tenant``, else the group's
    (``contextos --tenant T keys ...`` or ``CONTEXTOS_TENANT``), else None (every tenant).

    Why: the group's tenant, "the tenant to act for", was ignored by ``keys list`` and
    ``keys revoke`` (a script run for one tenant listed and revoked every tenant's keys),
    and ``keys create`` answered ``Missing option '--tenant'`` to a ``--tenant`` given
    before it (a review). ``CONTEXTOS_TENANT`` set to nothing (click reads it as unset)
    is refused when no tenant is given here (:func:`~contextos.config.default_tenant`):
    it meant every tenant. Checked here, where the tenant is read, not before every
    command: ``keys create --tenant T`` and a multi-tenant ``serve`` were refused too."""
    if tenant is None and state.tenant is None:
        from ..config import default_tenant

        default_tenant()  # a ConfigError for CONTEXTOS_TENANT set to nothing
    return tenant if tenant is not None else state.tenant


@keys.command("create")
@click.option(
    "--tenant",
    default=None,
    help="Tenant the key acts for (default: the group's --tenant or CONTEXTOS_TENANT; "
    "one of them is required).",
)
@click.option(
    "--name",
    default="",
    help="A label to recognise the key by (at most 200 characters, as over HTTP).",
)
@group_options(tenant=False)
@json_option
@pass_state
def keys_create(state: CliState, tenant: str | None, name: str) -> None:
    """Create a key for TENANT and print its secret (shown this once only)."""
    from ..server.keys import MAX_KEY_NAME, KeyStore

    # Refused as HTTP refuses it (CreateKeyRequest.name): the CLI took a 100,000-character
    # name, one `keys list` line of 100,057 characters (a review).
    if len(name) > MAX_KEY_NAME:
        raise click.BadParameter(
            f"String should have at most {MAX_KEY_NAME} characters", param_hint="'--name'"
        )
    tenant = _keys_tenant(state, tenant)
    if tenant is None:
        raise click.UsageError(
            "keys create needs a tenant: --tenant TENANT (after 'keys create', or before "
            "it), or CONTEXTOS_TENANT"
        )
    target = _db(state)
    fresh = absent_db(target)
    with KeyStore(target) as store:
        issued = store.create(tenant, name)
    _note_created(target, fresh)
    if state.as_json:
        print_json({**_key_dict(issued.key), "key": issued.secret})
        return
    write_out(issued.secret + "\n")  # not click.echo: see keys_list
    # On stderr: stdout holds the secret alone, so ``KEY=$(contextos keys create ...)``
    # captures a key (it captured this line too, and `contextos mcp` refused it).
    err_console.print(
        f"key {issued.key.id} for tenant {tenant!r}: store the secret now, "
        "it cannot be shown again",
        style="dim",
        highlight=False,
    )


@keys.command("list")
@click.option(
    "--tenant",
    default=None,
    help="Only this tenant's keys (default: the group's --tenant or CONTEXTOS_TENANT; "
    "neither: every tenant's).",
)
@click.option(
    "--all-tenants",
    is_flag=True,
    help="Every tenant's keys, whatever the group's --tenant or CONTEXTOS_TENANT.",
)
@group_options(tenant=False)
@json_option
@pass_state
def keys_list(state: CliState, tenant: str | None, all_tenants: bool) -> None:
    """List keys (ids, tenants, names, revocation), never secrets."""
    from ..server.keys import KeyStore

    if all_tenants and tenant is not None:
        raise click.UsageError("--all-tenants lists every tenant's keys: give no --tenant")
    listed = None if all_tenants else _keys_tenant(state, tenant)
    target = _db(state)
    if absent_db(target):  # nothing to list, and no file made for it
        found: list[dict[str, object]] = []
    else:
        with KeyStore(target) as store:
            found = [_key_dict(k) for k in store.list(listed)]
    if listed is not None and tenant is None:  # on stderr: stdout stays the list
        err_console.print(
            SafeText(
                f"keys of tenant {listed!r} (the group's --tenant or CONTEXTOS_TENANT); "
                "--all-tenants lists every tenant's"
            ),
            highlight=False,
        )
    if state.as_json:
        print_json(found)
    else:
        # Through write_out, as every other command's output: click.echo's own closed
        # pipe handling exited 1 ("an error of the store"), so `keys list | head -1`
        # failed under `set -o pipefail` where the other commands exit 141.
        lines = []
        for k in found:
            status = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
            # One key, one line: a newline in a name printed as-is forged a second row
            # ("fake  beta  active", a review), so names and tenants are shown as ids are.
            name, tenant = shown_id(str(k["name"] or "-")), shown_id(str(k["tenant"]))
            lines.append(f"{k['id']}  {tenant}  {name}  {k['created_at']}  {status}\n")
        write_out("".join(lines))
    if absent_db(target):  # after the answer, as the memory commands note it
        note_missing_db(target)


@keys.command("revoke")
@click.argument("key_id")
@group_options()
@json_option
@pass_state
def keys_revoke(state: CliState, key_id: str) -> None:
    """Revoke the key KEY_ID; requests using it are refused from now on.

    With the group's --tenant or CONTEXTOS_TENANT, only a key of that tenant."""
    from ..server.keys import KeyStore

    tenant = _keys_tenant(state, None)
    target = _db(state)
    if absent_db(target):
        note_missing_db(target)
        raise NotFound(with_missing_db(f"no API key with id {key_id!r}", target))
    with KeyStore(target) as store:
        if tenant is not None and (owner := store.get(key_id).tenant) != tenant:
            raise NotFound(
                f"no API key with id {key_id!r} for tenant {tenant!r} (it belongs to "
                f"tenant {owner!r}; the tenant comes from --tenant or CONTEXTOS_TENANT): "
                "nothing revoked"
            )
        key = store.revoke(key_id)
    if state.as_json:
        print_json(_key_dict(key))
    else:
        write_out(f"revoked {key.id} (tenant {key.tenant!r})\n")  # see keys_list


@click.command()
@choice_option(
    "--transport",
    ["stdio", "streamable-http"],
    "stdio",
    "stdio for a local client; streamable-http to listen.",
)
@click.option(
    "--key",
    "api_key",
    envvar="CONTEXTOS_API_KEY",
    default=None,
    help="stdio: the API key whose tenant the tools act for (env CONTEXTOS_API_KEY). "
    "HTTP: not used; each request brings its own Bearer key.",
)
@host_option("HTTP: interface.")
@number_option("--port", 8765, click.IntRange(1, 65535), "HTTP: port (endpoint /mcp).")
@click.option("--embedder", default=None, help=EMBEDDER_HELP)
@limit_options("HTTP: ")
@shutdown_timeout_option
@forwarded_allow_ips_option
@group_options(tenant=False)
@pass_state
def mcp(
    state: CliState,
    transport: str,
    api_key: str | None,
    host: str,
    port: int,
    embedder: str | None,
    rate: float,
    burst: int,
    max_body_bytes: int,
    shutdown_timeout: int,
    forwarded_allow_ips: list[str],
) -> None:
    """Run the MCP server (memory tools + window assembly) for one tenant's key."""
    from ..embed import make_embedder
    from ..server.auth import Unauthenticated
    from ..server.keys import KEY_CACHE_TTL, KeyStore
    from ..server.mcp_server import build_mcp_server, mcp_http_app, run_stdio
    from ..server.ratelimit import RateLimit
    from ..server.tenants import TenantMemories

    state.tenants_from_keys = True
    target = _db(state)
    fresh = absent_db(target)
    if fresh and transport == "stdio":  # no key can be valid there: make no file for it
        raise Unauthenticated(
            f"no database at {target}: create it and a key with `contextos keys create "
            f"--tenant T --db {target}`, then pass the key with --key or CONTEXTOS_API_KEY"
        )
    with ExitStack() as stack:
        # From here on, SIGTERM closes what is opened below and exits 0. Over HTTP the
        # port listens before the store and the app are built, and a client that
        # stopped the server once it answered a connect killed it mid-start (-15): a
        # SIGTERM then is noted and acted on when the server would start.
        if transport == "stdio":
            stack.enter_context(_until_sigterm())
            stopped: Callable[[], bool] = lambda: False  # noqa: E731 - raised at once
        else:
            stopped = stack.enter_context(_sigterm_noted())
        sock = _bind(host, port) if transport != "stdio" else None
        if sock is not None:
            stack.callback(sock.close)
        # stdio checks its one key on every tool call, answered from the cache as
        # the HTTP API's keys are (a revocation elsewhere is seen within the TTL).
        ttl = KEY_CACHE_TTL if sock is None else 0.0
        key_store = stack.enter_context(KeyStore(target, cache_ttl=ttl))
        embedder_ = make_embedder(state.embedder_name(embedder))
        batch = state.settings.embed_batch_size
        tenants = TenantMemories.open(target, embedder_, batch_size=batch)
        stack.enter_context(closing(tenants))
        _note_created(target, fresh)
        if sock is None:
            secret = api_key or ""
            _check_stdio_key(key_store, secret, target, db_given=state.db is not None)
            run_stdio(build_mcp_server(tenants, keys=key_store, api_key=secret))
            return
        url = _url(host, sock.getsockname()[1])
        server = build_mcp_server(tenants, keys=key_store, http_url=url)
        app = mcp_http_app(
            server,
            key_store,
            host=host,
            rate_limit=RateLimit(rate=rate, burst=burst),
            max_body_bytes=max_body_bytes,
        )
        console.print(f"contextos MCP serving on {url}/mcp", highlight=False)
        options: dict[str, Any] = {
            "log_level": "warning",
            "access_log": False,
            "timeout_graceful_shutdown": shutdown_timeout,  # as for serve
        }
        _run_server(app, sock, options, forwarded_allow_ips=forwarded_allow_ips, stopped=stopped)


def _check_stdio_key(key_store: KeyStore, secret: str, db: str, *, db_given: bool) -> None:
    """Refuse ``mcp``'s stdio key unless it is an active key of ``db``, saying which:
    none given, one this database does not hold, or one revoked; the ``keys create``
    it suggests names ``--db`` when one was given. Why: all three got "needs a valid
    API key: pass --key or set CONTEXTOS_API_KEY" to a user who had set it, and the
    command it suggested wrote the key into the default database (a review)."""
    from ..server.auth import Unauthenticated

    shown = "URL" if "://" in db else db  # a database URL may hold a password
    create = f"`contextos keys create --tenant T{f' --db {shown}' if db_given else ''}`"
    if not secret.strip():
        raise Unauthenticated(
            "contextos mcp needs an API key: pass --key or set CONTEXTOS_API_KEY "
            f"(create one with {create})"
        )
    source = click.get_current_context().get_parameter_source("api_key")
    given = "in CONTEXTOS_API_KEY" if source is ParameterSource.ENVIRONMENT else "given with --key"
    key = key_store.check(secret)
    if key is None:
        raise Unauthenticated(
            f"the API key {given} is not a key of the database {shown} (a key works "
            f"only with the database it was created in): create one there with {create}"
        )
    if not key.active:
        why = "its tenant was erased" if key.offboarded else "use another key of its tenant"
        raise Unauthenticated(
            f"the API key {given} (key {key.id}) is revoked in the database {shown} "
            f"({why}): create another with {create}"
        )


@click.command("serve")
@click.option(
    "--db",
    default=None,
    metavar="PATH_OR_URL",
    help="Store of the server under test: a SQLite file or postgresql:// URL (default: a "
    "temporary SQLite file; the group's --db and CONTEXTOS_DB are not used). The run's "
    "rows stay there, under a fresh bench-<hex> tenant; its API key is revoked at the end.",
)
@number_option("--clients", 50, click.IntRange(1, 1000), "Concurrent clients.")
@number_option("--seconds", 60.0, FiniteFloatRange(1), "How long the load runs.")
@served_embedder_option
@number_option(
    "--add-fraction",
    0.5,
    FiniteFloatRange(0, 1),
    "Share of requests that are adds (the rest are searches).",
)
@number_option("--workers", 1, click.IntRange(1, 64), "Server processes (serve --workers).")
@click.option(
    "--json",
    "json_out",
    default=None,
    metavar="OUT",
    type=click.Path(dir_okay=False),
    callback=report_path_param,
    help="Also write the report to this file (checked before the run).",
)
@click.option(
    "--routes",
    is_flag=True,
    help="Instead: CPU ms per request of /healthz, add and search through the app in "
    "this process, one request at a time (no HTTP; temporary SQLite).",
)
@pass_state
@terminable
def serve_bench(
    state: CliState,
    db: str | None,
    clients: int,
    seconds: float,
    embedder: str,
    add_fraction: float,
    workers: int,
    json_out: str | None,
    routes: bool,
) -> None:
    """Load-test `contextos serve` on loopback: throughput, p50/p95/p99, errors,
    acknowledged vs stored writes.

    The server's store is a temporary SQLite file unless --db, given after `bench
    serve`, names one (PostgreSQL, say): the group's --db and CONTEXTOS_DB are not
    used, so a benchmark never writes into the database of everyday use."""
    from ..bench.serve import ServeBenchConfig, run_serve_bench
    from ..bench.serve_routes import route_cpu
    from .bench_cmds import say_store

    if state.db is not None and not routes:
        root = click.get_current_context().find_root()
        source = root.get_parameter_source("db")
        named = "CONTEXTOS_DB" if source is ParameterSource.ENVIRONMENT else "--db before 'bench'"
        err_console.print(
            SafeText(f"note: {named} is not used by bench serve (--db after 'bench serve' is)"),
            highlight=False,
        )
    if not routes:
        say_store(db)
    report = (
        route_cpu(embedder=embedder)
        if routes
        else run_serve_bench(
            ServeBenchConfig(
                db=db,
                clients=clients,
                seconds=seconds,
                embedder=embedder,
                add_fraction=add_fraction,
                workers=workers,
            )
        )
    )
    if state.as_json:
        print_json(report)
    elif routes:
        for name, ms in report["cpu_ms_per_request"].items():
            console.print(f"{name}: {ms:.3f} ms CPU per request", highlight=False)
    else:
        _print_bench(report)
    write_json(json_out, report)


def _print_bench(report: dict[str, object]) -> None:
    add, search = report["add"], report["search"]
    assert isinstance(add, dict) and isinstance(search, dict)
    console.print(
        f"{report['throughput_per_s']:.1f} req/s over {report['elapsed_s']:.1f}s, "
        f"errors {report['errors']}",
        highlight=False,
    )
    for name, op in (("add", add), ("search", search)):
        console.print(
            f"  {name:6} {op['per_s']:7.1f}/s  p50 {op['p50_ms']:7.1f} ms  "
            f"p95 {op['p95_ms']:7.1f} ms  p99 {op['p99_ms']:7.1f} ms  "
            f"errors {op['errors']}",
            highlight=False,
        )
        for sample in op.get("error_samples", []):
            console.print(f"    error: {sample}", highlight=False, markup=False)
    console.print(
        f"  acknowledged writes {report['acknowledged_writes']}, stored "
        f"{report['stored_writes']}, missing {report['missing_writes']}",
        highlight=False,
    )
    drain = report.get("drain_s")
    console.print(
        f"  vectors pending at the end {report.get('pending_vectors_at_end')}, drained in "
        + (f"{drain:.1f} s" if isinstance(drain, float) else "(not within the limit)"),
        highlight=False,
    )
    server_cpu = report.get("server_cpu_ms_per_request")
    if isinstance(server_cpu, float):
        console.print(
            f"  CPU per request: server {server_cpu:.2f} ms, "
            f"load generator {report['client_cpu_ms_per_request']:.2f} ms",
            highlight=False,
        )
    by_thread = report.get("server_cpu_ms_per_request_by_thread")
    if isinstance(by_thread, dict):
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in by_thread.items())
        console.print(f"  server CPU ms per request by thread: {parts}", highlight=False)
