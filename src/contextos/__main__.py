"""``python -m contextos``: the ``contextos`` command, for an environment whose scripts
folder is not on ``PATH`` (the same entry point as the console script)."""

from .cli.entry import run

run()
