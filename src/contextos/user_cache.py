"""Files contextos derives from what is installed and keeps in the user's cache
folder: the embedding graphs built from the MiniLM weights, the parsed merge table of
the token counter. Each can be made again at any time, so losing one costs only time.

One folder for all of them: ``$CONTEXTOS_CACHE_DIR``, or ``models`` in the user cache
dir (``~/.cache/contextos/models`` on Linux). Files are written whole or not at all
(:func:`write_atomically`), so a process that crashes mid-write or another process
reading at the same time never sees half a file.

A folder that cannot be written (a service user whose home does not exist or is
read-only) costs time, never a failure: each user makes its file anew in memory, the
embedding graph in about a second when an embedder loads (``embed.onnx_graph.load_graph``,
which says so in a warning naming the folder and ``CONTEXTOS_CACHE_DIR``), the token
counter's table in 0.2 s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Where derived files are kept: $CONTEXTOS_CACHE_DIR or the user cache dir.

    A leading ``~`` in the variable is the home folder, as in ``CONTEXTOS_DB``. Why: where
    no shell expands it (systemd's ``Environment=``, a container's env file) a literal
    ``./~/...`` tree was made in each working directory, a folder a user cleaning up may
    remove with ``rm -rf ~`` (a review)."""
    env = os.environ.get("CONTEXTOS_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env))  # ~nosuchuser stays as written
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("contextos")) / "models"


def write_atomically(target: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``target`` and rename it into place: readers
    (other processes too) see the old file, no file, or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
