"""The one exception tree of contextos.

Callers catch :class:`ContextosError` (or one of its children, grouped by what
the caller can do about it) and never need to import a driver or SDK to handle
a failure: vendor exceptions are converted at the seam with ``raise ... from``.
Misuse of the API (wrong types, contradictory arguments) raises the builtin
``TypeError`` / ``ValueError`` instead.
"""

from __future__ import annotations

#: The most characters of a refused value an error message quotes (:func:`quoted`).
QUOTED_CHARS = 100


def quoted(text: str, limit: int = QUOTED_CHARS, *, as_repr: bool = True) -> str:
    """``text`` as an error message quotes it: whole (as ``repr`` unless ``as_repr`` is
    false), or for a text over ``limit`` characters its first ``limit``, an ellipsis and
    its length (``'9999…' (900,000 characters)``).

    Why: a refused value was echoed whole, so a 900 KB time argument got a 900 KB
    error, in the library, the HTTP API's 422 and MCP alike (a review). The one rule
    for every message that quotes what a caller sent."""
    if len(text) <= limit:
        return repr(text) if as_repr else text
    head = text[:limit] + "…"
    return f"{repr(head) if as_repr else head} ({len(text):,} characters)"


class ContextosError(Exception):
    """Root of every error contextos raises on purpose."""


class ConfigError(ContextosError):
    """A setting is missing or invalid; the message says how to fix it."""


class MissingExtraError(ConfigError):
    """An optional dependency is not installed."""

    def __init__(self, extra: str, package: str) -> None:
        super().__init__(
            f"this feature needs the optional package {package!r}: pip install 'contextos[{extra}]'"
        )
        self.extra = extra
        self.package = package


class EmbedderOutputError(ConfigError):
    """An embedder answered, but not as the protocol asks: the wrong number of rows, the
    wrong dimensions, not a 2-D array at all, or NaN or infinite values.

    Why a ``ConfigError`` and not an outage: it is a fault of the embedder's code (a
    ``dimensions`` that does not match the model, ``v / norm`` with no guard for a text
    with no known word), the same on every try. Treated as an outage, the background
    worker retried it for good and ``flush()`` never returned; a query vector of the
    wrong size quietly searched an empty index, and a NaN one ranked arbitrary memories
    (a review)."""


class EmbedderSetupError(ConfigError):
    """The default embedder cannot run on this install: its weights package or its
    runtime (onnxruntime, tokenizers) is not installed, or the weights are damaged.

    Why a class of its own: it is the install's fault, not the caller's, and waiting
    mends nothing. The background embedding worker stops at the first one rather than
    retrying it as an outage (``EmbeddingWorker``: ``flush()`` raises it, the records stay
    pending, durable, for a process that can embed them), and the server answers it 503,
    where a ``ConfigError`` of a request's own input is a 400. ``public`` is what a
    server's client may read: the message without the server's file paths."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public if public is not None else message


class BudgetError(ContextosError):
    """Something does not fit in the token budget it was given: ``requested`` tokens
    are needed, ``available`` are there; ``segment`` names what did not fit when it is
    one part of a window ("question": the caller's message alone is too long, so a
    chat may skip that line and go on).

    The message says "needs N tokens, has M": it said "requested N, available M", which
    read as the user's request swapped (``compact --budget 1``: "requested 5 tokens,
    available 1", a review)."""

    def __init__(
        self, message: str, *, requested: int, available: int, segment: str | None = None
    ) -> None:
        super().__init__(f"{message} (needs {requested} tokens, has {available})")
        self.requested = requested
        self.available = available
        self.segment = segment


class NotFound(ContextosError):
    """The record, session or key asked for does not exist (in this scope)."""


class ScopeError(ContextosError, ValueError):
    """A read or write was attempted without a tenant/user/agent/session scope."""


class DuplicateId(ValueError):
    """A write would store a record whose id is stored already (another writer stored it
    meanwhile). A class of its own so that an import tries again on this ValueError
    alone: another one (a value the store cannot keep) would fail again."""


class StoreError(ContextosError):
    """The storage backend failed: unreadable file, lost connection, corruption."""


class StoreFault(StoreError):
    """The store failed on this request in a way that waiting will not mend: an error
    inside it, not a busy lock or a lost connection (the SQLite store's in-process
    keyword index failing on what it read). The server answers 500 with a fixed text
    and logs the detail; other scopes' requests are not affected."""


class Conflict(ContextosError):
    """A write based on what was read found it changed meanwhile (another writer, an
    erasure) and wrote nothing; reading again and retrying is safe."""


class EmbedderUnavailable(ContextosError):
    """The embedder failed on a record and then on a plain probe text too: it is down
    (a remote API answering 503, a wrong key), not the record bad. The records stay
    pending and are embedded once it answers again (``memory.embedding_worker``)."""


class ProviderError(ContextosError):
    """An LLM provider call failed."""


class AuthError(ProviderError):
    """Credentials are missing or were refused."""


class RateLimited(ProviderError):
    """The provider asked us to slow down."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderHTTPError(ProviderError):
    """The provider answered with an HTTP error status."""

    def __init__(self, message: str, *, status: int, body: str = "") -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.body = body


class ReplyTruncated(ProviderError):
    """The model stopped at its output limit (Anthropic ``stop_reason: max_tokens``,
    OpenAI ``finish_reason: length``): the reply is cut, so it is not taken as an
    answer (a cut list of facts or decisions reads as a shorter, wrong one). Callers
    that have an offline fallback use it, as for a reply that is not valid."""
