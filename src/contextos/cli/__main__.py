"""``python -m contextos.cli``."""

from .main import main

main()
