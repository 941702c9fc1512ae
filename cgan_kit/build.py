"""Turning a validated recipe into objects: call each factory with its arguments and context."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from cgan_kit.contracts import AdversarialLoss, ReconstructionLoss, Stabilizer
from cgan_kit.errors import CganError
from cgan_kit.recipe import Component, Recipe
from cgan_kit.registry import Registry


def build(registry: Registry, component: Component, path: str, **context: Any) -> Any:
    """Call a component's factory. References to other components become zero-argument builders."""
    entry = registry.get(component.kind, component.type)
    args = {
        key: functools.partial(build, registry, value, f"{path}.{key}") if isinstance(value, Component) else value
        for key, value in component.args.items()
    }
    try:
        return entry.factory(**args, **context)
    except CganError:
        raise
    except (TypeError, ValueError) as error:
        # A factory rejecting a combination of arguments is the user's to fix; name the table.
        raise CganError(f'{path}: {component.kind} "{component.type}" rejected its arguments: {error}') from error


@dataclass(frozen=True)
class WeightedLoss:
    """A built loss with the recipe's name for it and its weight."""

    name: str
    loss: AdversarialLoss | ReconstructionLoss
    weight: float


@dataclass
class Models:
    """Everything a recipe builds besides the data: networks, weighted losses, stabilizers."""

    generator: Any
    critic: Any
    losses: list[WeightedLoss]  # in recipe order
    stabilizers: list[Stabilizer]

    @property
    def adversarial(self) -> list[WeightedLoss]:
        return [item for item in self.losses if isinstance(item.loss, AdversarialLoss)]

    @property
    def reconstruction(self) -> list[WeightedLoss]:
        return [item for item in self.losses if isinstance(item.loss, ReconstructionLoss)]


def channels(recipe: Recipe) -> tuple[int, int]:
    """Input and output channel counts, as the dataset declares them."""
    return int(recipe.data.args["in_channels"]), int(recipe.data.args["out_channels"])


def build_models(recipe: Recipe, registry: Registry) -> Models:
    """Build generator, critic, losses and stabilizers (not yet set up or moved to a device)."""
    in_channels, out_channels = channels(recipe)
    generator = build(registry, recipe.generator, "generator", in_channels=in_channels, out_channels=out_channels)
    critic = build(registry, recipe.critic, "critic", in_channels=in_channels + out_channels)
    losses = []
    for i, spec in enumerate(recipe.losses):
        loss = build(registry, spec, f"losses[{i}]")
        losses.append(WeightedLoss(spec.type, loss, spec.weight))
        if not isinstance(loss, (AdversarialLoss, ReconstructionLoss)):
            raise CganError(f'losses[{i}]: loss "{spec.type}" built a {type(loss).__name__}, which is neither an '
                            "AdversarialLoss nor a ReconstructionLoss; its plugin is broken")
    if not any(isinstance(item.loss, AdversarialLoss) for item in losses):
        raise CganError("losses: no adversarial loss; add one such as [[losses]] type = \"bce\" "
                        "(see `cgan list losses`)")
    stabilizers = []
    for i, spec in enumerate(recipe.stabilizers):
        stabilizer = build(registry, spec, f"stabilizers[{i}]")
        if not isinstance(stabilizer, Stabilizer):
            raise CganError(f'stabilizers[{i}]: "{spec.type}" built a {type(stabilizer).__name__}, not a '
                            "Stabilizer; its plugin is broken")
        stabilizers.append(stabilizer)
    return Models(generator, critic, losses, stabilizers)


def build_dataset(recipe: Recipe, registry: Registry, split: str, augment: bool) -> Any:
    """The recipe's dataset for one split."""
    return build(registry, recipe.data, "data", split=split, augment=augment)
