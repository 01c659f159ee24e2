"""``python -m dwp.cli``: the ``dwp`` command."""

from dwp.cli import run

run()
