"""``python -m mtbioner`` (and ``accelerate launch -m mtbioner train ...``)."""

from .cli import main

main()
