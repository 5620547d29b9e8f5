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

import sys


def run() -> None:
    """Import the CLI and run it; a Ctrl-C at any point exits 130 with no traceback."""
    try:
        from .main import main

        main()
    except KeyboardInterrupt:
        sys.exit(130)
