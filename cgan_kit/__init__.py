"""cgan-kit: conditional GANs for paired image-to-image translation, composed from plugins and recipes.

The public API for plugin authors is re-exported here:

- ``hookimpl`` marks the hook implementations of a plugin module; ``recipes_in(folder)`` is a
  ready ``register_recipes`` implementation for a folder of TOML recipes;
- ``ref`` and ``Range`` annotate factory parameters (a reference to another component, a bound);
- ``Norm``, ``AdversarialLoss``, ``ReconstructionLoss`` and ``Stabilizer`` are the contracts that
  built components fulfil, ``Method`` (with ``Network``, ``Direction``, ``Column`` and
  ``Networks``) the contract of a training algorithm, and ``Logger`` (told a ``RunInfo``) that of
  a destination for a run's records (see ``cgan_kit.plugin_api.contracts``).

The Python API for notebooks and services (``cgan_kit.api``): ``load`` (a ``Translator``) and
``train``; ``CganError`` is what they raise. It is imported on first use, so plugins importing
this package stay light. Its messages go to the logger "cgan_kit", silent until the host
configures ``logging``.
"""

__version__ = "0.1.0"

import logging as _logging

from cgan_kit.errors import CganError
from cgan_kit.plugin_api.contracts import (AdversarialLoss, Column, Direction, Logger, Method, Network, Networks,
                                           Norm, ReconstructionLoss, RunInfo, Stabilizer)
from cgan_kit.plugin_api.hookspecs import hookimpl, recipes_in
from cgan_kit.plugin_api.params import Range, ref

_logging.getLogger(__name__).addHandler(_logging.NullHandler())  # the host application decides what is shown

_API = ("Translator", "load", "train")


def __getattr__(name: str):
    """The Python API, imported when first used (PEP 562)."""
    if name in _API:
        from importlib import import_module

        return getattr(import_module("cgan_kit.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdversarialLoss",
    "CganError",
    "Column",
    "Direction",
    "Logger",
    "Method",
    "Network",
    "Networks",
    "Norm",
    "Range",
    "ReconstructionLoss",
    "RunInfo",
    "Stabilizer",
    "Translator",
    "__version__",
    "hookimpl",
    "load",
    "recipes_in",
    "ref",
    "train",
]
