"""The ``contextos`` console script: :func:`run`, which imports the CLI itself.

Why a module of its own: the script generated from ``[project.scripts]`` imports its
target at the top, outside any ``try``. Pointed at :func:`contextos.cli.main.main`, a
Ctrl-C while ``main`` imported click and rich (the first tenth of a second) printed a
``KeyboardInterrupt`` traceback and died from the signal, where the rest of the CLI
exits 130 quietly. Here that import is inside the ``try``.

The ``contextos`` package itself imports nothing up front (its public names load on
first use), so all but Python's own start is inside the ``try``.
"""

from __future__ import annotations

import signal
import sys


def run() -> None:
    """Import the CLI and run it; a Ctrl-C at any point exits 130 with no traceback,
    and one after the command has ended is ignored.

    Why ignored then: the interpreter's shutdown (its threads joined, the store closed)
    takes about a tenth of a second, and a Ctrl-C in it killed the process by the
    signal, after an ``add`` had printed what it stored: a script saw exit 130 for a
    write that was done (a review: 9 of 24 late Ctrl-Cs)."""
    try:
        from .main import main

        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command's exit code stands
