"""cgan-kit: conditional GANs for paired image-to-image translation, composed from plugins and recipes.

The public API for plugin authors is re-exported here:

- ``hookimpl`` marks the hook implementations of a plugin module;
- ``ref`` and ``Range`` annotate factory parameters (a reference to another component, a bound);
- ``Norm``, ``AdversarialLoss``, ``ReconstructionLoss`` and ``Stabilizer`` are the contracts that
  built components fulfil, and ``Method`` (with ``Network``, ``Direction``, ``Column`` and
  ``Networks``) the contract of a training algorithm (see ``cgan_kit.plugin_api.contracts``).
"""

__version__ = "0.1.0"

from cgan_kit.plugin_api.contracts import (AdversarialLoss, Column, Direction, Method, Network, Networks, Norm,
                                           ReconstructionLoss, Stabilizer)
from cgan_kit.plugin_api.hookspecs import hookimpl
from cgan_kit.plugin_api.params import Range, ref

__all__ = [
    "AdversarialLoss",
    "Column",
    "Direction",
    "Method",
    "Network",
    "Networks",
    "Norm",
    "Range",
    "ReconstructionLoss",
    "Stabilizer",
    "__version__",
    "hookimpl",
    "ref",
]
