"""``python -m contextos.cli``."""

from .entry import run

run()
