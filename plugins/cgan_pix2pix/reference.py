"""Weights of the reference pix2pix (junyanz/pytorch-CycleGAN-and-pix2pix) renamed for our networks.

The reference saves one ``net.state_dict()`` per network (``latest_net_G.pth``, ``latest_net_D.pth``).
Its key names follow from how it nests its modules, and ours from how we do; the functions
``unet_names``, ``resnet_names`` and ``patchgan_names`` walk the reference's structure from the
key names alone and say which of our keys each becomes:

- ``UnetGenerator``: ``model`` is the outermost ``UnetSkipConnectionBlock``. Each block keeps its
  layers in a ``model`` Sequential, where the next level down sits at index 1 (outermost block) or 3
  (every other); a leaf layer's index says what it is. Level 2's down convolution is thus
  ``model.model.1.model.3.model.1.weight``; ours is ``down.2.1.weight``.
- ``ResnetGenerator``: one flat ``model`` Sequential, residual blocks holding ``conv_block``. It
  pads explicitly (``ReflectionPad2d`` at the start and before the last convolution) where our
  convolutions pad themselves, so its indices run one ahead of ours, two for the last convolution.
- ``NLayerDiscriminator``: one flat ``model`` Sequential, indexed exactly as our PatchGAN's ``body``.

Statistics of the reference's non-affine instance norms (saved by its older versions) have no
counterpart: it drops them itself when loading, and so do we. ``fit`` then holds every tensor to
the shape our network expects, so nothing is loaded on a guess.

``convert`` puts it together: check the recipe describes the same networks (naming the recipe
value to change when not), load, and write a run folder that ``cgan run --resume`` continues.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cgan_kit import __version__
from cgan_kit.errors import CganError
from cgan_kit.runs import checkpoint
from cgan_kit.runs.folder import RECIPE_FILE

REFERENCE = "junyanz/pytorch-CycleGAN-and-pix2pix"
_STATISTICS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


# ---------------------------------------------------------------------------------------------
# Reading a .pth without running any code


def read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """The tensors of a state dict saved with ``torch.save``; unpickling is restricted to weights."""
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise CganError(f"{what} weights {path} do not exist{hint}; pass the reference's .pth file, "
                        f"such as latest_net_{'G' if what == 'generator' else 'D'}.pth")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch reports unreadable files in many ways, none of them the user's fault
        text = str(error)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what_needs = f" (it pickles {found.group(1)})" if found else ""
            raise CganError(f"{path}: refused: loading it would run pickled code{what_needs}, and only plain "
                            "state dicts are read (torch.load with weights_only=True); save the network's "
                            "state_dict() instead") from None
        detail = " ".join(text.split())[:200] or type(error).__name__
        raise CganError(f"{path}: not a readable PyTorch file ({detail}); is it complete?") from None
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):
        saved = saved["state_dict"]  # a common wrapper around the state dict
    if not isinstance(saved, dict):
        raise CganError(f"{path}: holds a {type(saved).__name__}, not a state dict; the reference saves "
                        "net.state_dict() (a dict of tensors)")
    for key, value in saved.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CganError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; this is not a "
                            "state dict as the reference saves them")
    if not saved:
        raise CganError(f"{path}: the state dict is empty")
    if all(key.startswith("module.") for key in saved):  # saved from inside nn.DataParallel
        saved = {key[len("module."):]: value for key, value in saved.items()}
    return dict(saved)


# ---------------------------------------------------------------------------------------------
# Reference names -> our names, from the names alone


@dataclass(frozen=True)
class Renaming:
    """Our key for each reference key, the reference keys with no counterpart by design, and what
    the names say about the architecture (``{"depth": 8}``)."""

    names: dict[str, str]
    dropped: tuple[str, ...] = ()
    structure: dict[str, int] = field(default_factory=dict)


def _layers(keys: Iterable[str]) -> dict[str, set[str]]:
    """Parameter and buffer names of each layer, by the layer's path."""
    layers: dict[str, set[str]] = {}
    for key in keys:
        layer, _, name = key.rpartition(".")
        layers.setdefault(layer, set()).add(name)
    return layers


def _split_statistics(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """Separate the statistics of non-affine norms (layers holding nothing else: the reference's
    instance norms in its older versions, which it drops on loading) from the keys to map."""
    keys = list(keys)
    layers = _layers(keys)
    dropped = [k for k in keys if layers[k.rpartition(".")[0]] <= _STATISTICS]
    return [k for k in keys if k not in set(dropped)], dropped


def _not_reference(key: str, network: str) -> CganError:
    return CganError(f"{key} is not a key of the reference's {network}; is this the right file, "
                     f"saved by {REFERENCE}?")


def _unet_position(key: str) -> tuple[int, int, str]:
    """(level, index of the layer in its level's ``model`` Sequential, parameter name)."""
    parts = key.split(".")
    if parts[0] != "model":
        raise _not_reference(key, "UnetGenerator")
    level, at = 0, 1
    while True:
        if len(parts) < at + 3 or parts[at] != "model" or not parts[at + 1].isdigit():
            raise _not_reference(key, "UnetGenerator")
        index, rest = int(parts[at + 1]), parts[at + 2:]
        if rest[0] != "model":  # a layer of this level
            if len(rest) != 1:
                raise _not_reference(key, "UnetGenerator")
            return level, index, rest[0]
        if index != (1 if level == 0 else 3):  # where each level keeps the next one down
            raise _not_reference(key, "UnetGenerator")
        level, at = level + 1, at + 2


def unet_names(keys: Iterable[str]) -> Renaming:
    """Rename a reference ``UnetGenerator`` (unet_128, unet_256, any depth) to our ``unet``.

    In each level's Sequential the reference keeps: outermost [down conv, next level, relu, up conv,
    tanh]; innermost [leaky relu, down conv, relu, up conv, norm]; others [leaky relu, down conv,
    norm, next level, relu, up conv, norm, (dropout)]. Ours: ``down[l]`` is [conv] at level 0, else
    [activation, conv, (norm)]; ``up[l]`` is [activation, up conv, norm or tanh, (dropout)].
    """
    kept, dropped = _split_statistics(keys)
    positions = {key: _unet_position(key) for key in kept}
    depth = 1 + max(level for level, _, _ in positions.values())
    names = {}
    for key, (level, index, name) in positions.items():
        if level == 0:
            layers = {0: "down.0.0", 3: "up.0.1"}
        elif level == depth - 1:
            layers = {1: f"down.{level}.1", 3: f"up.{level}.1", 4: f"up.{level}.2"}
        else:
            layers = {1: f"down.{level}.1", 2: f"down.{level}.2", 5: f"up.{level}.1", 6: f"up.{level}.2"}
        if index not in layers:
            raise _not_reference(key, "UnetGenerator")
        names[key] = f"{layers[index]}.{name}"
    return Renaming(names, tuple(dropped), {"depth": depth})


_FLAT = re.compile(r"^model\.(\d+)\.(\w+)$")
_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.(\w+)$")


def resnet_names(keys: Iterable[str], dropout: bool) -> Renaming:
    """Rename a reference ``ResnetGenerator`` (resnet_6blocks, resnet_9blocks) to our ``resnet``;
    ``dropout`` says whether ours has dropout in its residual blocks (it shifts our indices).

    Reference: [pad, conv, norm, relu], per downsampling [conv, norm, relu], the residual blocks,
    per upsampling [up conv, norm, relu], then [pad, conv, tanh]; a block's ``conv_block`` is [pad,
    conv, norm, relu, (dropout), pad, conv, norm]. Ours: the same without the pads, in ``body``,
    and a block's ``body`` is [conv, norm, activation, (dropout), conv, norm].
    """
    kept, dropped = _split_statistics(keys)
    flat, blocks = {}, {}
    for key in kept:
        if match := _FLAT.match(key):
            flat[key] = int(match.group(1)), match.group(2)
        elif match := _BLOCK.match(key):
            blocks[key] = int(match.group(1)), int(match.group(2)), match.group(3)
        else:
            raise _not_reference(key, "ResnetGenerator")
    if not blocks or not flat:
        raise CganError(f"no residual blocks among the keys (first: {kept[0]}); not a reference ResnetGenerator")
    block_indices = sorted({index for index, _, _ in blocks.values()})
    first, count = block_indices[0], len(block_indices)
    downsamplings, off = divmod(first - 4, 3)  # [pad, conv, norm, relu] then 3 layers per downsampling
    last = max(index for index, _ in flat.values())
    if off or downsamplings < 0 or block_indices != list(range(first, first + count)) \
            or last != first + count + 3 * downsamplings + 1:
        raise CganError(f"the layer indices (residual blocks at {block_indices[0]}..{block_indices[-1]}, last "
                        f"convolution at {last}) do not follow the reference ResnetGenerator's layout")
    # In a block, the second convolution comes after [pad, conv, norm, relu, pad], one later with
    # dropout: the first layer past the first norm that is not a norm (it has no running stats).
    block_layers = _layers(f"{index}.{sub}.{name}" for index, sub, name in blocks.values())
    seconds = {int(layer.split(".")[1]) for layer, names in block_layers.items()
               if int(layer.split(".")[1]) > 2 and "running_mean" not in names}
    if len(seconds) != 1 or not seconds <= {5, 6}:
        raise CganError(f"the residual blocks' layers {sorted(block_layers)} do not follow the reference "
                        "ResnetBlock's layout")
    second = seconds.pop()
    ours_second = 4 if dropout else 3
    up = first + count
    weighted = {1, 2, last} | {at + 3 * i + k for at in (4, up) for i in range(downsamplings) for k in (0, 1)}
    names = {}
    for key, (index, name) in flat.items():
        if index not in weighted:  # a pad or an activation: no weights there
            raise _not_reference(key, "ResnetGenerator")
        names[key] = f"body.{index - 2 if index == last else index - 1}.{name}"
    for key, (index, sub, name) in blocks.items():
        inner = {1: 0, 2: 1, second: ours_second, second + 1: ours_second + 1}
        if sub not in inner:
            raise _not_reference(key, "ResnetBlock")
        names[key] = f"body.{index - 1}.body.{inner[sub]}.{name}"
    structure = {"blocks": count, "downsamplings": downsamplings, "dropout": int(second == 6)}
    return Renaming(names, tuple(dropped), structure)


def patchgan_names(keys: Iterable[str]) -> Renaming:
    """Rename a reference ``NLayerDiscriminator`` (netD basic or n_layers) to our ``patchgan``.

    Both are [conv, leaky relu], per further layer [conv, norm, leaky relu], then the scoring conv.
    """
    kept, dropped = _split_statistics(keys)
    names, indices = {}, set()
    for key in kept:
        match = _FLAT.match(key)
        if not match:
            raise _not_reference(key, "NLayerDiscriminator")
        indices.add(int(match.group(1)))
        names[key] = f"body.{match.group(1)}.{match.group(2)}"
    n_layers, off = divmod(max(indices) - 2, 3)
    if off or n_layers < 1:
        raise CganError(f"the last layer index {max(indices)} does not follow the reference "
                        "NLayerDiscriminator's layout")
    return Renaming(names, tuple(dropped), {"n_layers": n_layers})


# ---------------------------------------------------------------------------------------------
# What the weights say, and whether the recipe agrees


@dataclass(frozen=True)
class Problem:
    """A recipe value that does not match the weights, and how to change it."""

    path: str
    message: str
    fix: str


def _norm_of(renamed: dict[str, Tensor], conv: str) -> str:
    """The reference's norm: batch (affine, running stats), instance (no params, biased convs), or
    none (neither: its convolutions then have no bias, which no norm of ours reproduces)."""
    if any(key.endswith(".running_mean") for key in renamed):
        return "batch"
    return "instance" if f"{conv}.bias" in renamed else "none"


def _check_norm(path: str, component: Any, found: str) -> list[Problem]:
    if found == "none":
        return [Problem(path, "the weights come from the reference's norm 'none', whose convolutions have no "
                              "bias; no cgan-kit norm matches it", "")]
    ok = (component.type in ("batch", "syncbatch") if found == "batch"
          else component.type == "instance" and not component.args.get("affine", False))
    if ok:
        return []
    recipe = component.type + (" (affine)" if component.type == "instance" else "")
    return [Problem(path, f"the weights use {found} norm, the recipe {recipe}", f"--set {path}={found}")]


def _check_activation(path: str, component: Any, name: str, args: dict[str, Any]) -> list[Problem]:
    if component.type == name and all(component.args.get(k) == v for k, v in args.items()):
        return []
    detail = f" (slope {args['slope']})" if "slope" in args else ""
    return [Problem(path, f"the reference uses {name}{detail}, the recipe {component.type}", f"--set {path}={name}")]


def _check_value(problems: list[Problem], path: str, recipe: Any, weights: Any, what: str) -> None:
    if recipe != weights:
        problems.append(Problem(path, f"the weights have {what.format(weights)}, the recipe {recipe}",
                                f"--set {path}={weights}"))


def _check_channels(problems: list[Problem], data: Any, name: str, recipe: int, weights: int, role: str) -> None:
    if recipe != weights:
        fix = f"--set data.{name}={weights}" if name in data.args else ""
        problems.append(Problem(f"data.{name}", f"the weights {role} {weights} channels, the recipe's data "
                                                f"{recipe}", fix))


def generator_problems(recipe: Any, renaming: Renaming, renamed: dict[str, Tensor],
                       channels: dict[str, int]) -> list[Problem]:
    """How the recipe's generator differs from the reference weights (empty: they fit);
    ``channels`` are the ones the method gives this generator."""
    component, data = recipe.generator, recipe.data
    in_channels, out_channels = channels["in_channels"], channels["out_channels"]
    args, problems = component.args, []
    if "depth" in renaming.structure:  # a U-Net
        depth = renaming.structure["depth"]
        widths = [renamed[f"down.{level}.{0 if level == 0 else 1}.weight"].shape[0] for level in range(depth)]
        _check_value(problems, "generator.depth", args["depth"], depth, "{} levels")
        _check_value(problems, "generator.ngf", args["ngf"], widths[0], "{} channels at the top level")
        if args["ngf"] == widths[0] and widths != [min(widths[0] * 2**level, args["max_channels"])
                                                   for level in range(depth)]:
            _check_value(problems, "generator.max_channels", args["max_channels"], max(widths),
                         "widths capped at {}")
        _check_channels(problems, data, "in_channels", in_channels, renamed["down.0.0.weight"].shape[1], "take")
        _check_channels(problems, data, "out_channels", out_channels, renamed["up.0.1.weight"].shape[1], "give")
        problems += _check_norm("generator.norm", args["norm"], _norm_of(renamed, "down.0.0"))
        problems += _check_activation("generator.encoder_activation", args["encoder_activation"], "leaky_relu",
                                      {"slope": 0.2})
        problems += _check_activation("generator.decoder_activation", args["decoder_activation"], "relu", {})
        if args["upsample"] != "transpose":
            problems.append(Problem("generator.upsample", f'the reference upsamples with transposed convolutions; '
                                    f'"{args["upsample"]}" has no reference equivalent',
                                    "--set generator.upsample=transpose"))
        if args["attention"]:
            problems.append(Problem("generator.attention", "the reference U-Net has no self-attention",
                                    "--set generator.attention=[]"))
    else:  # a ResNet
        blocks, downsamplings = renaming.structure["blocks"], renaming.structure["downsamplings"]
        _check_value(problems, "generator.blocks", args["blocks"], blocks, "{} residual blocks")
        _check_value(problems, "generator.downsamplings", args["downsamplings"], downsamplings,
                     "{} downsamplings")
        _check_value(problems, "generator.ngf", args["ngf"], renamed["body.0.weight"].shape[0],
                     "{} channels in the first convolution")
        _check_channels(problems, data, "in_channels", in_channels, renamed["body.0.weight"].shape[1], "take")
        last = max((key for key in renamed if key.endswith(".weight") and renamed[key].dim() == 4),
                   key=lambda key: int(key.split(".")[1]))
        _check_channels(problems, data, "out_channels", out_channels, renamed[last].shape[0], "give")
        problems += _check_norm("generator.norm", args["norm"], _norm_of(renamed, "body.0"))
        problems += _check_activation("generator.activation", args["activation"], "relu", {})
        if args["padding"] != "reflect":
            problems.append(Problem("generator.padding", f'the reference pads by reflection, the recipe '
                                    f'"{args["padding"]}"', "--set generator.padding=reflect"))
        if args["upsample"] != "transpose":
            problems.append(Problem("generator.upsample", f'the reference upsamples with transposed convolutions; '
                                    f'"{args["upsample"]}" has no reference equivalent',
                                    "--set generator.upsample=transpose"))
    return problems


def critic_problems(recipe: Any, renaming: Renaming, renamed: dict[str, Tensor],
                    channels: dict[str, int]) -> list[Problem]:
    """How the recipe's critic differs from the reference NLayerDiscriminator weights."""
    args, problems = recipe.critic.args, []
    pair = channels["in_channels"]
    _check_value(problems, "critic.n_layers", args["n_layers"], renaming.structure["n_layers"],
                 "{} layers")
    _check_value(problems, "critic.ndf", args["ndf"], renamed["body.0.weight"].shape[0],
                 "{} channels in the first convolution")
    taken = renamed["body.0.weight"].shape[1]
    if taken != pair:
        problems.append(Problem("data", f"the critic weights take {taken} channels, the recipe's method shows "
                                        f"its critic {pair} (pix2pix: input and output image together)", ""))
    problems += _check_norm("critic.norm", args["norm"], _norm_of(renamed, "body.2"))
    problems += _check_activation("critic.activation", args["activation"], "leaky_relu", {"slope": 0.2})
    return problems


def _raise(problems: list[Problem], source: Path) -> None:
    if not problems:
        return
    fixes = [p.fix for p in problems if p.fix]
    text = "; ".join(f"{p.path}: {p.message}" for p in problems)
    advice = f"; use {' '.join(fixes)}" if fixes else f" ({source} cannot be converted to this recipe)"
    raise CganError(f"{text}{advice}")


# ---------------------------------------------------------------------------------------------
# Strict loading


def rename(tensors: dict[str, Tensor], renaming: Renaming) -> dict[str, Tensor]:
    return {renaming.names[key]: value for key, value in tensors.items() if key in renaming.names}


def fit(expected: dict[str, Tensor], renamed: dict[str, Tensor], renaming: Renaming, what: str,
        source: Path) -> dict[str, Tensor]:
    """The renamed tensors, held to exactly the keys and shapes of our network's state dict."""
    renamed = dict(renamed)
    for key, value in expected.items():
        # Batch norms saved by PyTorch before 0.4.1 have no counter; PyTorch itself starts it at 0.
        stem = key.removesuffix("num_batches_tracked")
        if key not in renamed and stem != key and f"{stem}running_mean" in renamed:
            renamed[key] = torch.zeros_like(value)
    original = {ours: theirs for theirs, ours in renaming.names.items()}
    missing = [key for key in expected if key not in renamed]
    unexpected = [key for key in renamed if key not in expected]
    if missing or unexpected:
        detail = (f"the recipe's {what} has {missing[0]} and the weights nothing for it" if missing else
                  f"the weights' {original.get(unexpected[0], unexpected[0])} has no place in the recipe's "
                  f"{what} (it would be {unexpected[0]})")
        raise CganError(f"{source}: {detail} ({len(missing)} missing, {len(unexpected)} extra); is the recipe's "
                        f"{what} the architecture these weights were trained with?")
    for key, value in expected.items():
        if tuple(renamed[key].shape) != tuple(value.shape):
            raise CganError(f"{source}: {original.get(key, key)} has shape {list(renamed[key].shape)}, the "
                            f"recipe's {what} wants {list(value.shape)} for {key}; is the recipe's {what} the "
                            "architecture these weights were trained with?")
    return {key: renamed[key].to(value.dtype) for key, value in expected.items()}


# ---------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote."""

    folder: Path
    checkpoint: Path
    generator: str  # e.g. "unet, 8 levels"
    converted: list[str]  # the roles whose weights came from the reference
    fresh: list[str]  # the roles that start as `cgan run` builds them
    parameters: int


def _generator_renaming(component: Any, keys: list[str], path: Path) -> Renaming:
    is_unet = any(key.startswith("model.model.") for key in keys)
    is_resnet = any(".conv_block." in key for key in keys)
    if not (is_unet or is_resnet):
        raise CganError(f"{path}: not a reference generator (no UnetGenerator or ResnetGenerator keys; first key "
                        f"{keys[0]}); is it a discriminator (pass those with --critic)?")
    found = "unet" if is_unet else "resnet"
    if component.type != found:
        example = " (recipes/pix2pix_facades.toml has the reference's unet_256)" if is_unet else ""
        raise CganError(f'generator.type: the weights are a reference {"U-Net" if is_unet else "ResNet"} '
                        f'generator, the recipe\'s generator is "{component.type}"; use a recipe whose generator '
                        f'is "{found}"{example}')
    if is_unet:
        return unet_names(keys)
    return resnet_names(keys, dropout=component.args["dropout"] > 0)


def _critic_renaming(component: Any, keys: list[str], path: Path) -> Renaming:
    if any(key.startswith("model.model.") or ".conv_block." in key for key in keys):
        raise CganError(f"{path}: holds a generator, not a discriminator (key {keys[0]}); pass the reference's "
                        "latest_net_D.pth with --critic")
    if component.type != "patchgan":
        raise CganError(f'critic.type: only the reference NLayerDiscriminator converts, to "patchgan"; the '
                        f'recipe\'s critic is "{component.type}"; use --set critic.type=patchgan')
    return patchgan_names(keys)


def _convert_network(module: torch.nn.Module, tensors: dict[str, Tensor], renaming: Renaming, problems: Any,
                     recipe: Any, what: str, path: Path, channels: dict[str, int]) -> None:
    renamed = rename(tensors, renaming)
    _raise(problems(recipe, renaming, renamed, channels), path)
    module.load_state_dict(fit(module.state_dict(), renamed, renaming, what, path))


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a run" if (out / RECIPE_FILE).exists() else ("a file" if not out.is_dir() else "files")
        raise CganError(f"--out {out} already holds {what}; choose a new folder (convert-reference never "
                        "writes into an existing one)")


def convert(recipe_path: str, weights: dict[str, Path], overrides: list[str], out: Path) -> Converted:
    """Check, load and write: the reference weights, by the recipe method's role (``{"generator":
    latest_net_G.pth, "critic": latest_net_D.pth}`` for pix2pix; ``a_to_b``, ``b_to_a``,
    ``critic_a``, ``critic_b`` for CycleGAN's G_A, G_B, D_B and D_A), as step 0 of a new run
    folder ``out``. Roles without weights start fresh, as `cgan run` would build them."""
    from cgan_kit.config.build import build_models, channels
    from cgan_kit.config.recipe import load
    from cgan_kit.plugin_api import plugins
    from cgan_kit.runs import state
    from cgan_kit.runs.folder import RunFolder

    _check_out(out)  # before any work, and again just before writing
    registry = plugins.registry()
    recipe = load(recipe_path, overrides, registry)
    method = registry.get("method", recipe.method.type).factory
    for role in weights:
        if role not in method.networks:
            raise CganError(f'{role}: method "{recipe.method.type}" has no such network; its roles are '
                            f"{', '.join(method.networks)}")
    generators = [role for role in weights if method.networks[role].kind == "generator"]
    if not generators:
        raise CganError(f'convert-reference needs generator weights: method "{recipe.method.type}" has '
                        f"{', '.join(r for r, n in method.networks.items() if n.kind == 'generator')}")
    loaded, renamings = {}, {}
    for role, path in weights.items():
        kind = method.networks[role].kind
        loaded[role] = read_state_dict(path, kind)
        renamings[role] = (_generator_renaming(recipe.generator, list(loaded[role]), path) if kind == "generator"
                           else _critic_renaming(recipe.critic, list(loaded[role]), path))

    torch.manual_seed(recipe.train.seed)  # fresh networks are the ones `cgan run` would have built
    models = build_models(recipe, registry)
    data_in, data_out = channels(recipe)
    for role, path in weights.items():
        kind = method.networks[role].kind
        problems = generator_problems if kind == "generator" else critic_problems
        _convert_network(models.networks[role], loaded[role], renamings[role], problems, recipe, role, path,
                         models.method.channels(role, data_in, data_out))
    # As `cgan run` does before its first checkpoint: stabilizers may change the networks (spectral
    # norm) or copy them (the moving average), so the checkpoint holds what a resume expects.
    models.setup_stabilizers(recipe.train.steps)
    tensors, meta = state.state_tensors(models, include_rng=False)  # no optimizer state: a resume starts fresh
    sources = {role: str(path.resolve()) for role, path in weights.items()}
    meta = {"step": 0, "batches": 0, **meta, "recipe": recipe.to_toml(), "versions": state.versions(),
            "converted_from": {**sources, "format": REFERENCE}}

    _check_out(out)
    run = RunFolder(out)
    first = weights[generators[0]]
    run.make(f"# Resolved by cgan-kit {__version__} from {recipe_path} for weights converted from "
             f"{first}; fine-tune with `cgan run --resume {out}`.\n{recipe.to_toml()}")
    path = run.checkpoint(0)
    checkpoint.save(path, tensors, meta)

    structure = ", ".join(f"{k} {v}" for k, v in renamings[generators[0]].structure.items() if k != "dropout")
    parameters = sum(p.numel() for p in models.networks[generators[0]].parameters())
    fresh = [role for role in method.networks if role not in weights]
    return Converted(out, path, f"{recipe.generator.type}, {structure}", sorted(weights), fresh, parameters)
