"""``cgan check``: validate a recipe and build every model, reporting sizes without training."""

from __future__ import annotations

from typing import Any

from cgan_kit import plugins
from cgan_kit.contracts import AdversarialLoss
from cgan_kit.build import build_dataset, build_models, channels
from cgan_kit.errors import ArgumentError, CganError
from cgan_kit.recipe import Recipe, load
from cgan_kit.registry import Registry


def image_size(recipe: Recipe) -> int:
    """The side of the images the models will see, where the dataset says it (else 256)."""
    for key in ("crop_size", "size"):
        value = recipe.data.args.get(key)
        if isinstance(value, int):
            return value
    return 256


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
    models = build_models(recipe, registry)
    for stabilizer in models.stabilizers:  # spectral norm and EMA change the models: show the result
        stabilizer.setup(models.generator, models.critic, recipe.train.steps)
    in_channels, out_channels = channels(recipe)
    # The meta device gives output shapes without computing anything, however large the input.
    with torch.device("meta"):
        pair = torch.empty(1, in_channels + out_channels, size, size)
    critic_output = tuple(models.critic.to("meta")(pair).shape)
    return {
        "recipe": path,
        "generator": {"type": recipe.generator.type, **_counts(models.generator)},
        "critic": {
            "type": recipe.critic.type,
            **_counts(models.critic),
            "receptive_field": getattr(models.critic, "receptive_field", None),
            "output_shape": list(critic_output),
        },
        "losses": [{"type": item.name, "weight": item.weight,
                    "role": "adversarial" if isinstance(item.loss, AdversarialLoss) else "reconstruction"}
                   for item in models.losses],
        "stabilizers": [{"type": spec.type} for spec in recipe.stabilizers],
        "channels": {"input": in_channels, "output": out_channels},
        "size": size,
        "data": data_report(recipe, registry),
    }


def _counts(module: Any) -> dict[str, int]:
    parameters = list(module.parameters())
    return {"parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad)}
