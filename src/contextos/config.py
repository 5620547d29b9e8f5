"""Settings: the one place that reads the environment.

Resolution order for every value: explicit argument, then ``CONTEXTOS_*``
environment variable, then default. Library objects take a :class:`Settings`
(or plain arguments) and never read ``os.environ`` themselves.
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .embed import DEFAULT_EMBEDDER
from .errors import ConfigError


def default_db_path() -> Path:
    """``memory.db`` in the user data directory: the one default of the API and the CLI.

    ``Memory()`` and a bare ``contextos list`` open this same file, whatever
    the current directory is, so what one writes the other reads. Its
    directory is created by :func:`load_settings` when the default is chosen, 0700, and
    the store creates the file 0600 (``store.sqlite.create_private``).
    """
    import platformdirs

    return Path(platformdirs.user_data_dir("contextos")) / "memory.db"


#: The one answer to an empty database path, wherever it is given.
EMPTY_DB = "the database path is empty: pass a file path or a postgresql:// URL"


def check_db(db: str) -> str:
    """Refuse a database setting that can only be a mistake; return it, a SQLite path
    starting with ``~`` with the home folder in its place (:func:`expanded_db`).

    The CLI checks ``--db``/``CONTEXTOS_DB`` with it before opening anything.

    A ``postgresql://`` URL passes. A SQLite path must be non-empty and its
    directory must exist: a typo such as ``/nonexistent_dir/sub/x.db`` would
    otherwise create directories and an empty database, and later reads
    would silently show nothing.

    Raises:
        ConfigError: empty, a directory or a path naming one (``data/``:
            :func:`check_not_folder`), or in a directory that does not exist.
    """
    if not isinstance(db, str):
        raise TypeError(f"the database must be a path or URL string, not {type(db).__name__}")
    if not db.strip():
        raise ConfigError(EMPTY_DB)
    from .store import check_location

    check_location(db)  # another URL scheme, a SQLite ``file:`` URI
    if "://" in db:
        return db
    check_not_folder(db)
    path = Path(expanded_db(db))
    if not path.parent.is_dir():
        raise ConfigError(
            f"no directory {str(path.parent)!r} for the database {db}: create it first "
            "or fix the path"
        )
    return expanded_db(db)


def check_not_folder(db: str) -> None:
    """Refuse a SQLite path that is a folder, or names one by its form: ending in a
    separator (``data/``), ``.`` or ``..``, whether that folder exists or not.

    Why by its form: ``--db data/`` or ``Memory("data/")`` with no folder ``data``
    created a *file* named ``data`` and reported success, so the folder the user meant
    could no longer be made (a review). Why an existing folder here too, ``data`` with
    no slash: ``Memory("data")`` raised the store's ``StoreError``, not the
    ``ConfigError`` documented and raised for ``Memory("data/")`` (a review)."""
    if "://" in db:
        return
    if Path(expanded_db(db)).is_dir():
        raise ConfigError(f"{db} is a directory: pass a database file inside it")
    if os.path.basename(db) not in ("", ".", ".."):
        return
    raise ConfigError(
        f"{db} names a folder: give a database file inside it, e.g. "
        f"{os.path.join(db, 'memory.db')} (create the folder first)"
    )


def expanded_db(db: str) -> str:
    """``db`` with a leading ``~`` (or ``~user``) read as that home folder; a URL or any
    other path as it is.

    Why one reading: ``CONTEXTOS_DB=~/app.db`` where no shell expands it (systemd's
    ``Environment=``, a container's env file) was read three ways: the check and the
    key table expanded it, the store did not. ``keys create`` wrote a key to
    ``$HOME/app.db``, ``keys list`` said nothing was stored there, and every memory
    command failed with "folder '~' does not exist" (a review)."""
    return os.path.expanduser(db) if db.startswith("~") else db


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`load_settings`, or by hand
    (``Memory(settings=Settings(...))``): either way it is checked and normalised as it
    is made (:meth:`__post_init__`)."""

    db: str = ""
    tenant: str = "default"
    embedder: str = DEFAULT_EMBEDDER
    model: str = "claude-sonnet-4-6"
    anthropic_api_key: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    embed_batch_size: int = 64

    def __post_init__(self) -> None:
        """``embed_batch_size`` an integer of at least 1 (text from the environment is
        read as one), ``db`` with a leading ``~`` as the home folder (:func:`expanded_db`).

        Why here, not in :func:`load_settings` alone: a hand-built ``Settings`` skipped
        both, so ``Settings(embed_batch_size=0)`` made a worker that embedded nothing,
        silently, for ever, and ``Settings(db="~/x.db")`` looked for a folder named
        ``~`` (a review). Every ``Settings``, ``replace`` included, passes here."""
        object.__setattr__(self, "embed_batch_size", check_batch_size(self.embed_batch_size))
        if isinstance(self.db, str):
            object.__setattr__(self, "db", expanded_db(self.db))

    def __repr__(self) -> str:
        """The fields as a dataclass shows them, each API key as ``'***'`` when set and a
        database URL without its password (:func:`redacted_db`).

        Why: the default repr printed the keys whole, and a settings object reaches logs
        and error reports (``log.info("%s", settings)``, a tracker that captures frame
        locals, where ``Memory.settings`` holds it); key scrubbers match variable names,
        not text inside a repr (a review, s36)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value:
                value = "***"
            elif f.name == "db" and isinstance(value, str):
                value = redacted_db(value)  # a postgresql:// URL's password
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"


def check_batch_size(value: object) -> int:
    """``embed_batch_size`` as an int of at least 1; ConfigError otherwise (0 embedded
    nothing, silently, for ever)."""
    named = "embed_batch_size (CONTEXTOS_EMBED_BATCH_SIZE)"
    try:
        if isinstance(value, bool):  # True is an int to Python, not a batch size
            raise TypeError
        # operator.index: any integer type (numpy's too), TypeError for a float or None.
        batch = int(value) if isinstance(value, str) else operator.index(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{named} must be an integer, not {value!r}") from None
    if batch < 1:
        raise ConfigError(f"{named} must be at least 1, not {batch}")
    return batch


#: The :class:`Settings` fields that hold a secret: never shown by its repr.
_SECRETS = frozenset({"anthropic_api_key", "openai_api_key"})

#: Query parameters of a libpq URL that hold a secret (``?password=...``).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def redacted_db(db: str) -> str:
    """``db`` as a log, a report or a repr may show it: a SQLite path as it is; a
    postgresql:// URL without the user and password before the host, and without a
    password given as a query parameter (``postgresql://u@h/db?password=...``, which a
    benchmark report showed whole: a review)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    if "://" not in db:
        return db
    parts = urlsplit(db)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = [
        (key, "***" if key.lower() in _SECRET_PARAMS else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{shown}?{urlencode(query, safe='*/')}" if query else shown


_ENV = {
    "db": "CONTEXTOS_DB",
    "tenant": "CONTEXTOS_TENANT",
    "embedder": "CONTEXTOS_EMBEDDER",
    "model": "CONTEXTOS_MODEL",
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "embed_batch_size": "CONTEXTOS_EMBED_BATCH_SIZE",
}


def default_tenant(env: Mapping[str, str] | None = None) -> str:
    """The tenant of whatever is not given one: ``CONTEXTOS_TENANT``, else "default" (as
    :func:`load_settings` resolves it, without its other work; set to nothing, a
    ConfigError: :func:`_no_empty_env`)."""
    env = os.environ if env is None else env
    _no_empty_env(env, {}, ("tenant",))
    return env.get(_ENV["tenant"]) or Settings.tenant


#: The settings whose variable set to nothing is refused, not read as unset, and what
#: unsetting it gives (``CONTEXTOS_DB`` has its own check, :func:`_no_empty_db`).
_NOT_EMPTY = {
    "tenant": ("a tenant name", f"the tenant {Settings.tenant!r}"),
    "embedder": ("an embedder name", f"the default embedder ({DEFAULT_EMBEDDER})"),
}


def _no_empty_env(
    env: Mapping[str, str],
    overrides: Mapping[str, object],
    names: tuple[str, ...] = ("tenant", "embedder"),
) -> None:
    """Refuse ``CONTEXTOS_TENANT`` or ``CONTEXTOS_EMBEDDER`` set to nothing where no value
    is given for it, as :func:`_no_empty_db` refuses ``CONTEXTOS_DB=``.

    Why: ``CONTEXTOS_TENANT: ${TENANT}`` in a compose file with ``TENANT`` unset sent one
    tenant's writes, reads and erasures into tenant "default", which other jobs on the
    store share, silently, where ``CONTEXTOS_TENANT="  "`` and ``--tenant ""`` were
    refused; the same slip with the embedder re-embedded a store by another model (a
    review)."""
    for name in names:
        if overrides.get(name) is None and env.get(_ENV[name]) == "":
            what, unset = _NOT_EMPTY[name]
            raise ConfigError(
                f"the {name} is empty: {_ENV[name]} is set to nothing; set it to {what}, "
                f"or unset it for {unset}"
            )


def _no_empty_db(env: Mapping[str, str], given: object) -> None:
    """Refuse an empty database setting: ``db=""``, or ``CONTEXTOS_DB`` set to nothing
    with no ``db`` given.

    Why: ``CONTEXTOS_DB: ${DB_PATH}`` in a compose file with ``DB_PATH`` unset, or
    ``Memory(settings=load_settings(db=path))`` with an empty ``path``, opened the shared
    default database of every app and of the CLI, silently, where ``CONTEXTOS_DB="  "``
    and ``--db ""`` were refused (a review)."""
    if given == "":
        raise ConfigError(EMPTY_DB)
    if given is None and env.get(_ENV["db"]) == "":
        raise ConfigError(
            f"the database path is empty: {_ENV['db']} is set to nothing; set it to a file "
            "path or a postgresql:// URL, or unset it for the default database"
        )


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    default_db: bool = True,
    given: tuple[str, ...] = (),
    **overrides: object,
) -> Settings:
    """Resolve settings: ``overrides`` (non-None) > environment > defaults.

    No database given means :func:`default_db_path` (its directory is created), unless
    ``default_db`` is false: then ``db`` stays empty. Why: a caller that brings its own
    store (the server's ``Memory(store=...)``) has no use for the default database, and
    creating its folder left an empty ``~/.local/share/contextos`` on every server host.
    An empty database given (``db=""``, or ``CONTEXTOS_DB`` set to nothing) where one is
    needed is a ConfigError, not the default (:func:`_no_empty_db`), and so is
    ``CONTEXTOS_TENANT`` or ``CONTEXTOS_EMBEDDER`` set to nothing (:func:`_no_empty_env`).
    The values are checked as every :class:`Settings` is (``Settings.__post_init__``).
    ``given`` names the settings the caller brings itself as objects (``Memory``'s
    ``embedder=``): their variable set to nothing is not refused, as a value given here.
    """
    env = os.environ if env is None else env
    _no_empty_env(env, {**overrides, **dict.fromkeys(given, True)})
    values: dict[str, object] = {}
    for f in fields(Settings):
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
        elif env.get(_ENV[f.name]):
            values[f.name] = env[_ENV[f.name]]
    if default_db:
        _no_empty_db(env, overrides.get("db"))
    settings = Settings(**values)  # type: ignore[arg-type]
    if not settings.db and default_db:
        path = default_db_path()
        # The default's directory is ours to create (any other path is the caller's);
        # in a read-only home, opening the database will say what failed. Owner-only,
        # as ssh's and gh's: made with the default mode (0755 under umask 022), any
        # local account could read the memories in it (a review). One that exists
        # keeps the mode its owner gave it.
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings = replace(settings, db=str(path))
    return settings
