"""Turning a validated recipe into objects: call each factory with its arguments and context."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from cgan_kit.plugin_api.contracts import (AdversarialLoss, Logger, Method, Networks, ReconstructionLoss,
                                           Stabilizer)
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


def broken(registry: Registry, component: Component, path: str, problem: str) -> CganError:
    """A contract violation by a component's plugin, naming the plugin."""
    provider = registry.get(component.kind, component.type).provider
    return CganError(f'{path}: {component.kind} "{component.type}" {problem}; its plugin {provider.plugin} '
                     f"({provider.distribution} {provider.version}) is broken: report it to its authors or disable "
                     f"it with CGAN_DISABLE_PLUGINS={provider.plugin}")


def build_method(recipe: Recipe, registry: Registry) -> Method:
    """The recipe's method, made from its [method] table."""
    method = build(registry, recipe.method, "method")
    if not isinstance(method, Method):
        raise broken(registry, recipe.method, "method", f"built a {type(method).__name__}, not a Method")
    return method


def _probe_loss(registry: Registry, spec: Component, path: str, loss: Any) -> None:
    """Call a loss once on small tensors: each of its terms must be a scalar tensor (a loss of
    another shape would fail much later, inside backward). Only what it returns is judged: a loss
    that cannot take these shapes is left to training."""
    import torch

    scores, images = torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 32, 32)
    if isinstance(loss, AdversarialLoss):
        calls = {"critic_loss": lambda: loss.critic_loss(scores, scores, torch.ones_like(scores), scores),
                 "generator_loss": lambda: loss.generator_loss(scores)}
    else:
        calls = {"its call": lambda: loss(images, images)}
    for name, call in calls.items():
        try:
            value = call()
        except Exception:  # noqa: BLE001 - not these shapes; training will tell
            continue
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            found = f"a tensor of shape {list(value.shape)}" if isinstance(value, torch.Tensor) else \
                f"a {type(value).__name__}"
            raise broken(registry, spec, path, f"returned {found} from {name}, not a scalar tensor")


STATE_METHODS = {"state_dict", "load_state_dict", "extra_state", "load_extra_state"}


def overridden_hooks(stabilizer: Stabilizer) -> set[str]:
    """The training hooks of the Stabilizer contract that ``stabilizer``'s class overrides (its
    checkpoint methods aside), read from the contract so that a new hook counts without a list to keep."""
    return {name for name, hook in vars(Stabilizer).items()
            if callable(hook) and not name.startswith("_") and name not in STATE_METHODS
            and getattr(type(stabilizer), name) is not hook}


def idle_stabilizers(recipe: Recipe, models: Models) -> list[str]:
    """Warnings for stabilizers that cannot act: those whose only hook is ``targets`` where every
    adversarial loss ignores its targets (label smoothing beside a hinge loss)."""
    adversarial = models.adversarial
    if not adversarial or any(item.loss.uses_targets for item in adversarial):
        return []
    names = " and ".join(f'"{item.name}"' for item in adversarial)
    ignoring = f"the loss {names} ignores" if len(adversarial) == 1 else f"the losses {names} ignore"
    warnings = []
    for i, (spec, stabilizer) in enumerate(zip(recipe.stabilizers, models.stabilizers)):
        if overridden_hooks(stabilizer) == {"targets"}:
            warnings.append(f'stabilizers[{i}] ("{spec.type}") only changes the critic\'s targets, which '
                            f"{ignoring}: it has no effect; remove it, or choose a loss that uses targets "
                            "(`cgan list losses`)")
    return warnings


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
            raise broken(registry, recipe.networks[network.table], network.table,
                         f"built a {type(module).__name__}, not a torch.nn.Module")
        networks[role] = module
    losses = []
    for i, spec in enumerate(recipe.losses):
        loss = build(registry, spec, f"losses[{i}]")
        losses.append(WeightedLoss(spec.type, loss, spec.weight))
        if not isinstance(loss, (AdversarialLoss, ReconstructionLoss)):
            raise broken(registry, spec, f"losses[{i}]", f"built a {type(loss).__name__}, which is neither an "
                         "AdversarialLoss nor a ReconstructionLoss")
        _probe_loss(registry, spec, f"losses[{i}]", loss)
    if not any(isinstance(item.loss, AdversarialLoss) for item in losses):
        raise CganError("losses: no adversarial loss; add one such as [[losses]] type = \"bce\" "
                        "(see `cgan list losses`)")
    stabilizers = []
    for i, spec in enumerate(recipe.stabilizers):
        stabilizer = build(registry, spec, f"stabilizers[{i}]")
        if not isinstance(stabilizer, Stabilizer):
            raise broken(registry, spec, f"stabilizers[{i}]", f"built a {type(stabilizer).__name__}, not a Stabilizer")
        stabilizers.append(stabilizer)
    return Models(method, networks, losses, stabilizers)


# What each parameter costs in training: its weight, gradient and Adam's two moments, in fp32.
TRAINING_BYTES_PER_PARAMETER = 16
INFERENCE_BYTES_PER_PARAMETER = 4


def on_meta(make: Callable[[], Any]) -> Any | None:
    """What ``make`` builds, built on torch's meta device (which allocates nothing) to count it; None
    where a factory cannot run there (it is then built for real, and counted by the OS)."""
    import torch

    try:
        with torch.device("meta"):
            return make()
    except CganError:
        raise
    except Exception:  # noqa: BLE001 - any factory's own failure on the meta device
        return None


def elements(networks: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Each network's parameter count, and all their buffers' elements together."""
    counts = {role: sum(p.numel() for p in net.parameters()) for role, net in networks.items()}
    return counts, sum(b.numel() for net in networks.values() for b in net.buffers())


def check_memory(recipe: Recipe, registry: Registry, device: Any, training: bool) -> None:
    """Refuse, with the estimate, a recipe whose networks alone could not fit in ``device``'s
    memory (a U-Net of width 100,000; a recipe from a stranger's checkpoint), before building them."""
    from cgan_kit.device import memory_bytes

    available = memory_bytes(device)
    models = None if available is None else on_meta(lambda: build_models(recipe, registry))
    if models is None:
        return
    counts, buffers = elements(dict(models.networks.items()))
    per = TRAINING_BYTES_PER_PARAMETER if training else INFERENCE_BYTES_PER_PARAMETER
    needed = sum(counts.values()) * per + buffers * INFERENCE_BYTES_PER_PARAMETER
    if needed > available:
        largest = max(counts, key=lambda role: counts[role])
        table = type(models.method).networks[largest].table
        what = "their weights, gradients and Adam moments" if training else "their weights"
        raise CganError(f"{recipe.source}: the networks have {sum(counts.values()):.3g} parameters ("
                        + ", ".join(f"{role} {count:.3g}" for role, count in counts.items())
                        + f"): {what} alone need {needed / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} "
                        f"GiB of {device}; make [{table}] smaller (its width or depth)")


def build_dataset(recipe: Recipe, registry: Registry, split: str, augment: bool) -> Any:
    """The recipe's dataset for one split."""
    dataset = build(registry, recipe.data, "data", split=split, augment=augment)
    if not (callable(getattr(dataset, "__len__", None)) and callable(getattr(dataset, "__getitem__", None))):
        raise broken(registry, recipe.data, "data", f"built a {type(dataset).__name__}, not a dataset (with "
                     "__len__ and __getitem__)")
    return dataset


def build_loggers(recipe: Recipe, registry: Registry) -> dict[str, Logger]:
    """The loggers ``train.loggers`` chooses, by name, in its order, built from their ``[loggers.NAME]``
    settings. Building one only checks them (and that its extra is installed); ``start`` opens it."""
    loggers = {}
    for name in recipe.train.loggers:
        spec, path = recipe.loggers[name], f"loggers.{name}"
        logger = build(registry, spec, path)
        if not isinstance(logger, Logger):
            raise broken(registry, spec, path, f"built a {type(logger).__name__}, not a Logger")
        loggers[name] = logger
    return loggers
