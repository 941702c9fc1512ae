"""The ready recipes this plugin ships (the TOML files in `recipes/` beside this module):
`cgan run NAME`, `cgan list recipes`, `cgan init NAME`."""

from __future__ import annotations

from pathlib import Path

from cgan_kit import hookimpl

FOLDER = Path(__file__).resolve().parent / "recipes"


@hookimpl
def register_recipes(register):
    for path in sorted(FOLDER.glob("*.toml")):
        register(path.stem, path)
