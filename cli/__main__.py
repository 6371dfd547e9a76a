"""``python -m cli``: the same as the ``brainedge`` command."""

from cli.main import main

main(prog_name="brainedge")
