"""The ready recipes this plugin ships (the TOML files in `recipes/` beside this module):
`cgan run NAME`, `cgan list recipes`, `cgan init NAME`."""

from __future__ import annotations

from pathlib import Path

from cgan_kit import recipes_in

register_recipes = recipes_in(Path(__file__).resolve().parent / "recipes")
