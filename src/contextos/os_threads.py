"""OS-level names for the library's own threads.

Why: Python's thread names live only inside the interpreter; ``top -H``, ``ps -L``
and ``/proc/<pid>/task/*/comm`` show every thread as ``python``. Named there too,
the CPU a server spends embedding queries, embedding new memories in the background
and handling requests can be told apart from outside the process
(``contextos bench serve`` reports it per thread), with no profiler attached.
"""

from __future__ import annotations

import threading

#: The OS name of the thread that embeds search queries in batches (server).
QUERY_EMBEDDING = "ctx-query-embed"
#: The OS name of the background embedding worker's thread.
BACKGROUND_EMBEDDING = "ctx-bg-embed"


def name_this_thread(name: str) -> None:
    """Give the calling thread ``name`` (at most 15 bytes, Linux's limit) in the OS.

    Linux only, best effort: elsewhere, or where /proc is not writable, nothing
    happens (the name is a diagnostic, never needed to run)."""
    if len(name.encode()) > 15:
        raise ValueError(f"an OS thread name holds at most 15 bytes: {name!r}")
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name)
    except OSError:
        pass
