"""The file a benchmark writes its report to (``--json OUT``).

A benchmark runs for seconds to tens of minutes and writes its report at the end. A
path that could not be written (a typo, a path under a file, a read-only place) failed
only then, and the results were lost. :func:`check_report_path` tries the path before
the run; the commands also print their results before writing the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def check_report_path(path: str) -> None:
    """Raise ``ValueError`` (one line) unless a report can be written at ``path``.

    Checked by doing it: the missing folders are made and the file is opened for
    appending (an existing file is not changed); what this made is removed again, so a
    run stopped before its end leaves nothing behind."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{path} is a directory; name a file")
    made: list[Path] = []
    existed = out.exists()
    try:
        missing = [p for p in out.parents if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        with out.open("a", encoding="utf-8"):
            pass
        if not existed:
            out.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_report(path: str, text: str) -> Path:
    """Write ``text`` to ``path``, making its folders; the path written.

    Atomically: into a temporary file beside it, synced, then renamed over it. Why: the
    fixed default paths (``bench-out/replay.json``) are rewritten by every run, and a
    write cut short (a full disk, a SIGTERM) truncated the previous report and left a
    JSON cut short in its place. Now a failed write leaves the previous report whole
    and no temporary file behind. A new report gets the permissions a plain write gives
    (the umask); one rewritten keeps its own. Through a symbolic link, the file it
    points to is replaced; ``/dev/stdout`` or a FIFO, which cannot be, is written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(out))
    if target.exists() and not target.is_file():
        target.write_text(text, encoding="utf-8")
        return out
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        with tmp.open("x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return out
