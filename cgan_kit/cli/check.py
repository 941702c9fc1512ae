"""``cgan check``: validate a recipe and build every model, reporting sizes without training."""

from __future__ import annotations

from typing import Any

from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.contracts import AdversarialLoss
from cgan_kit.config.build import (build_dataset, build_loggers, build_models, channels, check_memory,
                                   idle_stabilizers)
from cgan_kit.errors import ArgumentError, CganError
from cgan_kit.outputs.evaluation import resolve_evaluation
from cgan_kit.config.recipe import Recipe, load
from cgan_kit.plugin_api.registry import Registry


def image_size(recipe: Recipe) -> int:
    """The side of the images the models will see, where the dataset says it (else 256)."""
    for key in ("crop_size", "size"):
        value = recipe.data.args.get(key)
        if isinstance(value, int):
            return value
    return 256


PADDING_WARNS_AT = 1.25  # a generator computing this many times the crop's pixels, or more, is worth a warning
VARYING_SIZES = ("none", "scale_width")  # data.preprocess modes without one crop size


def padding_warnings(recipe: Recipe, models: Any, size: int) -> list[str]:
    """Generators that pad the crop to a multiple of their ``stride`` (their total downsampling)
    and so compute far more pixels than they are shown: a depth-8 U-Net pads a 64 px crop to 256 px."""
    if recipe.data.args.get("preprocess") in VARYING_SIZES:
        return []
    warnings = []
    for role, network in models.networks.items():
        stride = getattr(network, "stride", None)
        if models.networks.kinds[role] != "generator" or not isinstance(stride, int) or stride < 1:
            continue
        padded = -(-size // stride) * stride
        if (padded / size) ** 2 >= PADDING_WARNS_AT:
            warnings.append(f"{role}: the {size} px crop is padded to {padded} px, a multiple of the generator's "
                            f"stride {stride} ({(padded / size) ** 2:.1f}x the pixels computed, and the model "
                            f"learns on padding); use a data.crop_size that is a multiple of {stride}, or a "
                            "shallower generator")
    return warnings


def data_report(recipe: Recipe, registry: Registry) -> dict[str, Any]:
    """Open the dataset's splits: how many examples each has, or why it cannot be read."""
    report: dict[str, Any] = {"type": recipe.data.type, "splits": {}, "problems": []}
    for split in dict.fromkeys(("train", recipe.train.eval_split)):
        try:
            report["splits"][split] = len(build_dataset(recipe, registry, split, augment=False))
        except ArgumentError:
            raise  # the recipe itself is wrong, not merely its data absent
        except CganError as error:
            report["problems"].append(str(error))
            break  # the other split would only repeat it
    return report


def summarize(path: str, overrides: list[str], size: int | None) -> dict[str, Any]:
    """Build everything a recipe names and describe it: parameter counts, receptive field, shapes,
    and whether its data can be read."""
    import torch

    registry = plugins.registry()
    recipe = load(path, overrides, registry)
    size = size or image_size(recipe)
    check_memory(recipe, registry, torch.device("cpu"), training=False)  # what building them here needs
    models = build_models(recipe, registry)
    models.setup_stabilizers(recipe.train.steps)  # spectral norm and EMA change the models: show the result
    method_setup(recipe, models)
    in_channels, out_channels = channels(recipe)
    declared = type(models.method).networks
    roles: dict[str, Any] = {}
    for role, network in models.networks.items():
        part = {"kind": network_kind(models, role), "table": declared[role].table,
                "type": recipe.networks[declared[role].table].type, **_counts(network)}
        if part["kind"] == "critic":
            # The meta device gives output shapes without computing anything, however large the input.
            taken = models.method.channels(role, in_channels, out_channels)["in_channels"]
            with torch.device("meta"):
                seen = torch.empty(1, taken, size, size)
            part["receptive_field"] = getattr(network, "receptive_field", None)
            part["output_shape"] = list(network.to("meta")(seen).shape)
        roles[role] = part
    data = data_report(recipe, registry)
    held_out = data["splits"].get(recipe.train.eval_split)  # None where the data cannot be read here
    images = recipe.train.eval_images if held_out is None else min(recipe.train.eval_images, held_out)
    eval_fid, best_metric = resolve_evaluation(recipe.train.eval_fid, recipe.train.best_metric, images)
    return {
        "recipe": path,
        "method": recipe.method.type,
        "roles": list(roles),
        **roles,
        "losses": [{"type": item.name, "weight": item.weight,
                    "role": "adversarial" if isinstance(item.loss, AdversarialLoss) else "reconstruction"}
                   for item in models.losses],
        "stabilizers": [{"type": spec.type} for spec in recipe.stabilizers],
        "loggers": list(build_loggers(recipe, registry)),  # built: a logger's missing extra is reported here
        "channels": {"input": in_channels, "output": out_channels},
        "size": size,
        "data": data,
        "evaluation": {"split": recipe.train.eval_split, "images": images, "fid": eval_fid == "on",
                       "best_metric": best_metric},
        "warnings": padding_warnings(recipe, models, size) + idle_stabilizers(recipe, models),
    }


def method_setup(recipe: Recipe, models: Any) -> None:
    """Build the optimizers and hand the method its Kit on the CPU, as the start of a run does, so
    that what they refuse (a feature-matching weight with a critic that shows no features, a paired
    loss on unpaired data, an optimizer setting) fails here and not minutes into ``cgan run``."""
    import torch

    from cgan_kit.training import distributed
    from cgan_kit.training.loop import method_kit
    from cgan_kit.training.updates import NonFiniteLosses, build_optimizers

    device, context = torch.device("cpu"), distributed.Context()
    optimizers = build_optimizers(models, recipe.optim, device)
    scalers = {name: torch.amp.GradScaler("cpu", enabled=False) for name in optimizers}
    method_kit(recipe, models, optimizers, scalers, NonFiniteLosses(device, context, tuple(optimizers)),
               None, device, context)  # None: full precision


def network_kind(models: Any, role: str) -> str:
    return models.networks.kinds[role]


def _counts(module: Any) -> dict[str, int]:
    parameters = list(module.parameters())
    return {"parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad)}
