"""``python -m mtbioner.cli``."""

from . import main

main()
