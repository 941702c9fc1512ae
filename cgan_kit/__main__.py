"""``python -m cgan_kit``: the same as the ``cgan`` command (torchrun launches it this way)."""

from cgan_kit.cli.main import main

main()
