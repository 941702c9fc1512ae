"""Turning a validated recipe into objects: call each factory with its arguments and context."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from cgan_kit.plugin_api.contracts import AdversarialLoss, Method, Networks, ReconstructionLoss, Stabilizer
from cgan_kit.errors import CganError
from cgan_kit.config.recipe import Component, Recipe
from cgan_kit.plugin_api.registry import Registry


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
    """Everything a recipe builds besides the data: the method, its networks by role, weighted
    losses and stabilizers."""

    method: Method
    networks: Networks  # role -> module, in the method's declaration order
    losses: list[WeightedLoss]  # in recipe order
    stabilizers: list[Stabilizer]

    @property
    def adversarial(self) -> list[WeightedLoss]:
        return [item for item in self.losses if isinstance(item.loss, AdversarialLoss)]

    @property
    def reconstruction(self) -> list[WeightedLoss]:
        return [item for item in self.losses if isinstance(item.loss, ReconstructionLoss)]

    def setup_stabilizers(self, total_steps: int) -> None:
        """Let the stabilizers change the networks (spectral norm reparametrizes them) before
        anything is saved, loaded or optimized."""
        for stabilizer in self.stabilizers:
            stabilizer.setup(self.networks, total_steps)

    def eval_networks(self) -> Networks:
        """The networks to sample, evaluate and translate with: a stabilizer's stand-in for a
        generator (the moving average) where one offers it, else the trained network."""
        chosen = {}
        for role, network in self.networks.items():
            stand_in = None
            if self.networks.kinds[role] == "generator":
                offered = (stabilizer.eval_generator(role) for stabilizer in self.stabilizers)
                stand_in = next((network for network in offered if network is not None), None)
            chosen[role] = stand_in if stand_in is not None else network
        return Networks(chosen, self.networks.kinds)


def channels(recipe: Recipe) -> tuple[int, int]:
    """Input and output channel counts, as the dataset declares them."""
    return int(recipe.data.args["in_channels"]), int(recipe.data.args["out_channels"])


def build_method(recipe: Recipe, registry: Registry) -> Method:
    """The recipe's method, made from its [method] table."""
    method = build(registry, recipe.method, "method")
    if not isinstance(method, Method):
        raise CganError(f'method: "{recipe.method.type}" built a {type(method).__name__}, not a Method; its plugin '
                        "is broken")
    return method


def build_models(recipe: Recipe, registry: Registry) -> Models:
    """Build the method, its networks, losses and stabilizers (not yet set up or moved to a device)."""
    method = build_method(recipe, registry)
    in_channels, out_channels = channels(recipe)
    declared = type(method).networks
    networks = Networks({}, {role: network.kind for role, network in declared.items()})
    for role, network in declared.items():
        module = build(registry, recipe.networks[network.table], network.table,
                       **method.channels(role, in_channels, out_channels))
        if not callable(getattr(module, "parameters", None)) or not callable(module):
            raise CganError(f'{network.table}: {network.kind} "{recipe.networks[network.table].type}" built a '
                            f"{type(module).__name__}, not a torch.nn.Module; its plugin is broken")
        networks[role] = module
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
    return Models(method, networks, losses, stabilizers)


def build_dataset(recipe: Recipe, registry: Registry, split: str, augment: bool) -> Any:
    """The recipe's dataset for one split."""
    return build(registry, recipe.data, "data", split=split, augment=augment)
