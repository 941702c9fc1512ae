"""cgan-kit: conditional GANs for paired image-to-image translation, composed from plugins and recipes.

The public API for plugin authors is re-exported here:

- ``hookimpl`` marks the hook implementations of a plugin module;
- ``ref`` and ``Range`` annotate factory parameters (a reference to another component, a bound);
- ``Norm``, ``AdversarialLoss``, ``ReconstructionLoss`` and ``Stabilizer`` are the contracts that
  built components fulfil (see ``cgan_kit.contracts``).
"""

__version__ = "0.1.0"

from cgan_kit.contracts import AdversarialLoss, Norm, ReconstructionLoss, Stabilizer
from cgan_kit.hookspecs import hookimpl
from cgan_kit.params import Range, ref

__all__ = [
    "AdversarialLoss",
    "Norm",
    "Range",
    "ReconstructionLoss",
    "Stabilizer",
    "__version__",
    "hookimpl",
    "ref",
]
