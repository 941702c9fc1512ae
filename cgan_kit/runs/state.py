"""A run's saved state: what a checkpoint holds, keyed by network role, and how it comes back.

Tensors: ``networks.<role>.*`` for each of the method's networks, ``optim.<name>.*`` for each of
its optimizers, ``stabilizers.<i>.*`` and ``rng.*``. Metadata: the step, the batches consumed,
optimizer groups, loss scalers, the stabilizers' extra state, the resolved recipe and versions.
Checkpoints of format 1 (before methods: ``generator.*`` and ``critic.*``, always pix2pix) are
migrated when read, so old runs still translate, evaluate, export, report and resume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from cgan_kit import __version__
from cgan_kit.config.build import Models, build_models, check_memory
from cgan_kit.errors import CganError, RecipeError
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import checkpoint, validation
from cgan_kit.runs.folder import RunFolder

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def versions() -> dict[str, str]:
    found = {"cgan-kit": __version__, "torch": torch.__version__}
    for info in plugins.load().loaded:
        found[info.distribution] = info.version
    return found


def state_tensors(models: Models, optimizers: dict[str, torch.optim.Optimizer] | None = None,
                  include_rng: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every tensor of a run by name, and the JSON-able state beside them (without step or recipe)."""
    tensors: dict[str, Any] = {}
    for role, network in models.networks.items():
        tensors.update(checkpoint.prefixed(f"networks.{role}", network.state_dict()))
    groups = {}
    for name, optimizer in (optimizers or {}).items():
        flat, groups[name] = checkpoint.optimizer_tensors(optimizer.state_dict())
        tensors.update(checkpoint.prefixed(f"optim.{name}", flat))
    for i, stabilizer in enumerate(models.stabilizers):
        tensors.update(checkpoint.prefixed(f"stabilizers.{i}", stabilizer.state_dict()))
    if include_rng:
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
    meta = {"optimizer_groups": groups,
            "stabilizers": [s.extra_state() for s in models.stabilizers]}
    return tensors, meta


def save(run: RunFolder, recipe_text: str, models: Models, optimizers: dict[str, torch.optim.Optimizer],
         scalers: dict[str, torch.amp.GradScaler], step: int, batches: int, keep: int,
         best: dict[str, Any] | None = None) -> Path:
    """Save the run's whole state as ``step_<step>.safetensors`` (pruning all but the ``keep``
    newest), or with ``best`` (the evaluation that earned it) as ``best.safetensors``."""
    tensors, meta = state_tensors(models, optimizers)
    meta = {"step": step, "batches": batches, **meta,
            "grad_scalers": {name: scaler.state_dict() for name, scaler in scalers.items() if scaler.is_enabled()},
            "recipe": recipe_text, "versions": versions()}
    if best is not None:
        checkpoint.save(run.best, tensors, {**meta, "best": best})
        return run.best
    path = run.checkpoint(step)
    checkpoint.save(path, tensors, meta)
    checkpoint.prune(run.checkpoints, keep)
    return path


def read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's tensors and metadata in the current format (older formats migrated)."""
    tensors, meta = checkpoint.load(path)
    if meta["format_version"] == 1:  # before methods: pix2pix, its two networks unprefixed
        renamed = {}
        for key, value in tensors.items():
            head = key.split(".", 1)[0]
            renamed[f"networks.{key}" if head in ("generator", "critic") else key] = value
        tensors = renamed
    return tensors, meta


def saved_recipe(path: Path, meta: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None) -> Any:
    """The recipe a checkpoint was trained with, validated against the installed plugins.

    ``overrides`` replaces keys of tables before validation, e.g. {"data": {"root": "..."}}.
    """
    from cgan_kit.config.recipe import validate

    text = meta.get("recipe")
    if not isinstance(text, str):
        raise CganError(f"{path} is a cgan-kit checkpoint without its recipe in the metadata; it cannot be "
                        "used on its own (was it written by an old or foreign tool?)")
    try:
        raw = tomllib.loads(text)
    except (ValueError, RecursionError) as error:  # TOMLDecodeError is a ValueError, as are over-long integers
        raise CganError(f"{path}: the recipe in its metadata is not valid TOML ({error}); the file is damaged") \
            from None
    # Where a run logged to is no part of using its model: a logger plugin missing here must not stop that.
    if isinstance(raw, dict):
        raw.pop("loggers", None)
        if isinstance(raw.get("train"), dict):
            raw["train"].pop("loggers", None)
    for table, values in (overrides or {}).items():
        section = raw.get(table)
        for key, value in values.items():
            if not isinstance(section, dict) or key not in section:
                kind = f' (type "{section.get("type")}")' if isinstance(section, dict) else ""
                flag = " (--data)" if (table, key) == ("data", "root") else ""
                raise CganError(f"{table}.{key}{flag}: the recipe saved in {path} has no {table}.{key} to replace: "
                                f"its [{table}]{kind} takes no {key}")
            section[key] = value
    try:
        return validate(raw, f"{path} (its recipe)", plugins.registry())
    except RecipeError as error:
        raise CganError(f"{error} (the recipe saved in this checkpoint does not validate with the installed plugins: "
                        "a damaged checkpoint, or install the plugins and versions it was trained with)") from None


def load_networks(models: Models, tensors: dict[str, Any], meta: dict[str, Any], path: Path,
                  stabilizer_states: bool = True) -> None:
    """Load every network's weights (and the stabilizers' state) into built, set-up models. The
    caller has checked the tensors (``validation.check_tensors``); the stabilizers check their own
    state and go first, so that a state they refuse leaves the networks as they were."""
    if stabilizer_states:
        saved_extra = meta.get("stabilizers") or []
        if len(saved_extra) != len(models.stabilizers):
            raise CganError(f"{path}: saved with {len(saved_extra)} stabilizers, the recipe has "
                            f"{len(models.stabilizers)}; resume with the run's own recipe")
        for i, (stabilizer, extra) in enumerate(zip(models.stabilizers, saved_extra)):
            try:
                stabilizer.load_state_dict(checkpoint.split(tensors, f"stabilizers.{i}"))
                stabilizer.load_extra_state(extra)
            except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
                raise CganError(f"{path}: the state of stabilizer {i} ({type(stabilizer).__name__}) does not fit "
                                f"its recipe ({' '.join(str(error).split())[:200]}); the file is damaged") from None
    for role, network in models.networks.items():
        network.load_state_dict(checkpoint.split(tensors, f"networks.{role}"))


def restore(path: Path, models: Models, optimizers: dict[str, torch.optim.Optimizer],
            scalers: dict[str, torch.amp.GradScaler]) -> tuple[int, int]:
    """Load a checkpoint into a built run, every entry checked first; returns (step, batches consumed)."""
    tensors, meta = read(path)
    validation.check_meta(path, meta, resume=True)
    groups = meta["optimizer_groups"]
    validation.check_tensors(path, tensors, models, optimizers=optimizers, groups=groups)
    load_networks(models, tensors, meta, path)
    # A checkpoint without optimizer state (weights converted from elsewhere) fine-tunes from fresh Adam.
    for name, optimizer in optimizers.items():
        if name in groups:
            flags = {key: group[key] for group in optimizer.param_groups[:1]
                     for key in validation.IMPLEMENTATION_FLAGS if key in group}
            optimizer.load_state_dict(checkpoint.optimizer_state(checkpoint.split(tensors, f"optim.{name}"),
                                                                 groups[name]))
            for group in optimizer.param_groups:
                group.update(flags)
    for name, scaler_state in meta.get("grad_scalers", {}).items():
        if name in scalers and scalers[name].is_enabled():  # fp16 then: the loss scale it had reached
            scalers[name].load_state_dict(scaler_state)
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return meta["step"], meta["batches"]


def load_models(path: Path, device: torch.device, overrides: dict[str, dict[str, Any]] | None = None,
                stabilizer_states: bool = True) -> tuple[Any, dict[str, Any], Models]:
    """Rebuild everything a checkpoint file's recipe describes and load its weights: (recipe,
    metadata, models) with every network and (with ``stabilizer_states``) the stabilizers' state,
    on ``device`` and in eval mode."""
    check_format(path)
    tensors, meta = read(path)
    validation.check_meta(path, meta, resume=False)
    recipe = saved_recipe(path, meta, overrides)
    check_memory(recipe, plugins.registry(), device, training=False)
    models = build_models(recipe, plugins.registry())
    # Stabilizers may change the networks (spectral norm reparametrizes them): set them up as the
    # training loop did, so that the saved tensor names fit.
    models.setup_stabilizers(recipe.train.steps)
    validation.check_tensors(path, tensors, models, stabilizers=stabilizer_states)
    load_networks(models, tensors, meta, path, stabilizer_states)
    del tensors
    for role in models.networks:
        models.networks[role] = models.networks[role].to(device).eval().requires_grad_(False)
    return recipe, meta, models


def check_format(path: Path) -> None:
    """Refuse, in one line, a file that is not a safetensors file at all (a recipe, an image, a
    .pth); pickles are left to checkpoint.load, which explains them."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError as error:
        raise CganError(f"{path} cannot be read ({error.strerror or error})") from None
    if checkpoint.is_pickle(path):
        return
    length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) < 9 or not 2 <= length <= size - 8 or head[8:9] != b"{":
        raise CganError(f"{path} is not a cgan-kit checkpoint (not a safetensors file); give a run folder or a "
                        "checkpoints/step_*.safetensors file written by `cgan run`")
