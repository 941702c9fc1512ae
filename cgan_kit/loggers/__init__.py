"""The built-in loggers, one module each: where a run's scalars, sample grids and resolved recipe go.

Each module is a plugin like any other: a ``cgan_kit.Logger`` subclass, its factory (the factory's
documented parameters are the keys of the recipe's ``[loggers.NAME]`` table) and a
``register_loggers`` hook implementation, loaded through an entry point in the ``cgan_kit`` group
(``pyproject.toml``). A new logger is one more module here and one more entry point. A logger
whose package is an optional extra imports it in its factory, through ``require``, so that a
recipe choosing it fails before training when the extra is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from cgan_kit.errors import CganError


def require(name: str, extra: str, *modules: str) -> list[Any]:
    """Import a logger's packages, or a one-line error naming the extra that installs them."""
    imported = []
    for module in modules:
        try:
            imported.append(importlib.import_module(module))
        except ImportError as error:
            raise CganError(f'train.loggers: logger "{name}" needs the {module} package, which cannot be imported '
                            f"({error}); install it with `pip install 'cgan-kit[{extra}]'`") from None
    return imported


def pixels(image: Any) -> Any:
    """A (3, H, W) float tensor in [0, 1] as an (H, W, 3) uint8 numpy array, as trackers take images."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype("uint8")
