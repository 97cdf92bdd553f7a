"""``python -m sandbox.cli``: the ``sandbox`` command."""

from sandbox.cli import main

main()
