"""Watch an SDK stream without changing what the caller holds.

The wrapped call must hand back the SDK's own ``Stream`` object (callers
check its type, use it as a context manager, read ``.response``). Both SDKs
iterate through the stream's ``_iterator``; we swap that iterator for a
generator that shows each event to an accumulator, maps SDK errors to
contextos errors, and reports once when the stream ends -- read to the end
(``complete=True``) or closed early with ``close()`` or a ``with`` block
(``complete=False``, usage as far as it got). Should an SDK release drop
``_iterator``, the stream is wrapped in a thin proxy instead, so the wrapper
degrades rather than breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

from .base import StreamAccumulator
from .errors import mapped_errors


def _observed(
    inner: Iterator[Any],
    acc: StreamAccumulator,
    done: Callable[[bool], None],
    provider: str,
    hide: Callable[[Any], bool] | None,
) -> Generator[Any, None, None]:
    complete = False
    try:
        with mapped_errors(provider):
            for event in inner:
                acc.feed(event)
                if hide is not None and hide(event):
                    continue
                yield event
        complete = True
    finally:
        done(complete)


def _once(func: Callable[[bool], None]) -> Callable[[bool], None]:
    called = False

    def wrapper(complete: bool) -> None:
        nonlocal called
        if not called:
            called = True
            func(complete)

    return wrapper


class _StreamProxy:
    """Fallback: iterate through the observer, delegate everything else."""

    def __init__(self, stream: Any, iterator: Iterator[Any]) -> None:
        self._stream = stream
        self._iterator = iterator

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __next__(self) -> Any:
        return next(self._iterator)

    def __enter__(self) -> _StreamProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def instrument(
    stream: Any,
    acc: StreamAccumulator,
    done: Callable[[bool], None],
    *,
    provider: str,
    hide: Callable[[Any], bool] | None = None,
) -> Any:
    """Return ``stream`` (or a proxy of it) with its events observed; see the module docstring."""
    done = _once(done)
    inner = getattr(stream, "_iterator", None)
    if isinstance(inner, Iterator) and hasattr(stream, "__dict__"):
        observed = _observed(inner, acc, done, provider, hide)
        sdk_close = stream.close

        def close() -> None:
            observed.close()  # reports an early close now, not at garbage collection
            done(False)  # (a stream closed before its first event)
            sdk_close()

        stream.__dict__["_iterator"] = observed
        stream.__dict__["close"] = close
        return stream
    return _StreamProxy(stream, _observed(iter(stream), acc, done, provider, hide))
