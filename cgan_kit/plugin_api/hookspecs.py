"""The hooks a cgan-kit plugin can implement.

A plugin is a module named by an entry point in the ``cgan_kit`` group. It marks its hook
implementations with ``cgan_kit.hookimpl``; each ``register_*`` hook receives a callback
``register(name, factory)`` that adds one component of that kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pluggy

PROJECT = "cgan_kit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_methods(register: Register) -> None:
    """Register training methods: ``cgan_kit.Method`` subclasses (the class is the factory)."""


@hookspec
def register_generators(register: Register) -> None:
    """Register generators: ``factory(in_channels, out_channels, **params) -> nn.Module``."""


@hookspec
def register_critics(register: Register) -> None:
    """Register critics: ``factory(in_channels, **params) -> nn.Module`` returning per-patch scores."""


@hookspec
def register_losses(register: Register) -> None:
    """Register losses: factories returning an ``AdversarialLoss`` or a ``ReconstructionLoss``."""


@hookspec
def register_norms(register: Register) -> None:
    """Register normalizations: factories returning a ``Norm``."""


@hookspec
def register_activations(register: Register) -> None:
    """Register activations: factories returning a fresh ``nn.Module``."""


@hookspec
def register_stabilizers(register: Register) -> None:
    """Register stabilizers: factories returning a ``Stabilizer``."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: ``factory(split, augment, **params)`` returning a map-style dataset."""


@hookspec
def register_loggers(register: Register) -> None:
    """Register loggers: factories returning a ``cgan_kit.Logger``; their parameters are the keys of
    the recipe's ``[loggers.NAME]`` table, and ``train.loggers`` chooses which loggers a run uses."""


@hookspec
def register_recipes(register: Callable[[str, Any], None]) -> None:
    """Register ready recipes shipped in the plugin's package: ``register(name, path)`` with the
    path of a TOML file; ``cgan run NAME`` finds it when no file NAME exists."""


def recipes_in(folder: str | Path) -> Callable[[Callable[[str, Any], None]], None]:
    """A ``register_recipes`` implementation shipping every ``*.toml`` file of ``folder`` under its
    file name; in a plugin module: ``register_recipes = recipes_in(Path(__file__).parent / "recipes")``."""
    folder = Path(folder)

    @hookimpl
    def register_recipes(register: Callable[[str, Any], None]) -> None:
        for path in sorted(folder.glob("*.toml")):
            register(path.stem, path)

    return register_recipes


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``cgan`` click group."""
