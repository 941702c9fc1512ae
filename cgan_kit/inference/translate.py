"""Using a trained generator: load it from a checkpoint or a model folder alone, and translate
image files with it.

Everything a checkpoint needs to be used is inside it: the resolved recipe in its metadata says
which generator to build (and with what channels), the tensors hold its weights and, when the
recipe had a moving average of the generator (``[[stabilizers]] type = "ema"``), the averaged
weights too. No flag ever repeats what the checkpoint already says. A model folder (``cgan export
--format safetensors``: model.safetensors and config.json) is loaded the same way, with the same
checks (see ``model_folder``).

Image files are read and written by ``cgan_kit.images`` without losing precision (16-bit in,
16-bit out). The engine knows no architecture and imports no plugin;
this module only relies on the contracts every plugin keeps (a generator maps (B, C, H, W) to
(B, C', H, W) for any H and W).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from cgan_kit import images as image_files
from cgan_kit.device import pick_device
from cgan_kit.errors import CganError
from cgan_kit.images import IMAGE_SUFFIXES, image_size, list_images, to_channels, write_image
from cgan_kit.inference import model_folder
from cgan_kit.inference.model_folder import ModelSpec
from cgan_kit.plugin_api.contracts import inverse
from cgan_kit.runs.folder import CHECKPOINTS_DIR, RunFolder, resolve_checkpoint
from cgan_kit.safe_output import check_folder, check_target, replace
from cgan_kit.runs.state import load_models


Mode = Literal["eval", "paper"]


# ---------------------------------------------------------------------------------------------
# Loading a generator from a checkpoint or a model folder


@dataclass
class Loaded:
    """A generator ready to run, with what it came from."""

    path: Path                 # the checkpoint file, or a model folder's model.safetensors
    recipe: Any                # cgan_kit.config.recipe.Recipe as saved with the checkpoint (a model folder:
                               # model_folder.ModelRecipe, its [data] table alone)
    meta: dict[str, Any]
    generator: nn.Module       # the EMA copy when ``ema``
    ema: bool
    device: torch.device
    direction: str             # the method's direction this generator translates in
    source: str                # the batch key of its inputs ("input")
    target: str                # the batch key its outputs are measured against ("target")
    in_channels: int
    out_channels: int
    measures: str              # the method's: "paired" or "unpaired"
    back: nn.Module | None = None  # the generator of the opposite direction, where the method has one
    size: tuple[int, int] = (256, 256)  # (height, width) the model was trained at
    spec: ModelSpec | None = None  # every direction and generator table, as a model folder describes them
    networks: dict[str, nn.Module] = field(default_factory=dict)  # every direction's generator by role

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def load_generator(target: str | Path, ema: bool | None = None, device: str | torch.device = "auto",
                   overrides: dict[str, dict[str, Any]] | None = None, which: str = "latest",
                   direction: str | None = None) -> Loaded:
    """Build the generator that translates in ``direction`` (default: the method's first) from a
    checkpoint (or a run's checkpoint ``which``: latest, best or a step) or a model folder, and
    load its weights.

    ``ema``: None uses a stabilizer's evaluation generator (the EMA copy) when the checkpoint has
    one, True requires it, False takes the trained weights. The result is in eval mode.
    """
    torch_device = pick_device(device, "--device") if isinstance(device, str) else device
    weights = model_folder.find(target)
    if weights is not None:
        if which != "latest":
            raise CganError(f"--checkpoint {which}: {target} is a model folder, which holds one model; --checkpoint "
                            "picks one of a run folder's checkpoints")
        return _load_model_folder(weights, ema, torch_device, overrides, direction)
    path = resolve_checkpoint(target, which)
    recipe, meta, models = load_models(path, torch_device, overrides, stabilizer_states=ema is not False)
    directions = type(models.method).directions
    name = direction or next(iter(directions))
    if name not in directions:
        raise CganError(f'--direction {name}: method "{recipe.method.type}" translates {", ".join(directions)}')
    chosen_direction = directions[name]
    role = chosen_direction.role
    used_ema = False
    stand_ins = models.eval_networks() if ema is not False else models.networks
    if stand_ins[role] is not models.networks[role]:
        used_ema = True
    if ema and not used_ema:
        raise CganError(f"{path} has no EMA weights (its recipe has no [[stabilizers]] type = \"ema\"); "
                        "leave out --ema")
    networks = {d.role: (stand_ins if used_ema else models.networks)[d.role].to(torch_device).eval()
                .requires_grad_(False) for d in directions.values()}
    opposite = inverse(directions, chosen_direction)
    channels = models.method.channels(role, int(recipe.data.args["in_channels"]), int(recipe.data.args["out_channels"]))
    versions = {str(k): str(v) for k, v in (meta.get("versions") or {}).items()}
    provenance = {"run": recipe.run_name, "checkpoint": path.name, "step": int(meta.get("step", 0)), "ema": used_ema,
                  "versions": versions}
    spec = model_folder.spec_of(recipe, models.method, provenance)
    return Loaded(path, recipe, meta, networks[role], used_ema, torch_device, name, chosen_direction.source,
                  chosen_direction.target, channels["in_channels"], channels["out_channels"],
                  type(models.method).measures, None if opposite is None else networks[opposite.role], spec.size,
                  spec, networks)


def _load_model_folder(weights: Path, ema: bool | None, device: torch.device,
                       overrides: dict[str, dict[str, Any]] | None, direction: str | None) -> Loaded:
    """A model folder's generator for ``direction``, every file checked first."""
    spec = model_folder.read_config(weights.with_name(model_folder.CONFIG_FILE))
    name = direction or next(iter(spec.directions))
    if name not in spec.directions:
        raise CganError(f"--direction {name}: the model in {weights.parent} translates {', '.join(spec.directions)}")
    if ema and not spec.ema:
        raise CganError(f"{weights.parent} holds the trained weights (exported without EMA weights); leave out --ema")
    if ema is False and spec.ema:
        raise CganError(f"{weights.parent} holds the EMA weights alone; leave out --no-ema, or export the run again "
                        "with --no-ema for the trained weights")
    networks, recipe = model_folder.load(weights, spec, device, overrides)
    chosen = spec.directions[name]
    opposite = inverse(spec.directions, chosen)
    meta = {"step": spec.step, "provenance": spec.provenance}
    return Loaded(weights, recipe, meta, networks[chosen.generator], spec.ema, device, name, chosen.source,
                  chosen.target, chosen.in_channels, chosen.out_channels, spec.measures,
                  None if opposite is None else networks[opposite.generator], spec.size, spec, networks)


def set_mode(generator: nn.Module, mode: Mode) -> None:
    """Put a generator in ``eval`` mode (running statistics, no dropout) or the pix2pix paper's
    test-time ``paper`` mode (batch statistics, dropout on, running statistics left untouched)."""
    if mode not in ("eval", "paper"):
        raise ValueError(f"mode must be eval or paper, not {mode}")
    generator.eval()
    for module in generator.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            # Paper: training mode without tracking, so batch statistics are used and the running
            # ones stay as saved. Eval: the running statistics again.
            module.track_running_stats = mode == "eval"
            module.train(mode == "paper")
        elif isinstance(module, nn.modules.dropout._DropoutNd):
            module.train(mode == "paper")


# ---------------------------------------------------------------------------------------------
# Image files


def find_images(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly, and every image inside named folders (sorted), in the given order."""
    if not inputs:
        raise CganError("no INPUT given; name image files or folders of images")
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = list_images(path)
            if not images:
                raise CganError(f'folder "{path}" holds no images ({", ".join(IMAGE_SUFFIXES)})')
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise CganError(f'input "{path}" does not exist; name image files or folders of images')
    return found


def read_image(path: Path) -> tuple[torch.Tensor, int]:
    """An image file as a float32 (C, H, W) tensor in [0, 1], and its bit depth (8 or 16)."""
    return image_files.read_image(path), image_files.read_bit_depth(path)


@dataclass
class Item:
    source: Path
    target: Path
    size: tuple[int, int]  # (width, height), from the file's header


def output_paths(files: list[Path], out: Path) -> list[Path]:
    """out/<input stem>.png for each input; two inputs that would share an output are an error."""
    taken: dict[str, Path] = {}
    paths = []
    for file in files:
        name = f"{file.stem}.png"
        if name in taken:
            raise CganError(f'inputs "{taken[name]}" and "{file}" would both be written to {out / name}; '
                            "rename one or translate them into different --out folders")
        taken[name] = file
        paths.append(out / name)
    return paths


Half = Literal["left", "right"]


def halved(size: tuple[int, int], half: Half | None, path: Path) -> tuple[int, int]:
    """(width, height) of what is translated of an image of ``size``: all of it, or one half."""
    width, height = size
    if half is None:
        return size
    if width < 2:
        raise CganError(f'--half {half}: image "{path}" is {width} pixel wide and has no halves')
    return (width // 2 if half == "left" else width - width // 2), height


def read_folders(checkpoint_path: Path) -> list[Path]:
    """The folders a model is read from: its checkpoint's, and where that is a run folder's
    checkpoints/, the run folder and its parts."""
    folder = checkpoint_path.parent
    if folder.name != CHECKPOINTS_DIR:
        return [folder]
    run = RunFolder(folder.parent)
    return [folder, run.path, run.samples, run.report, run.tensorboard]


def batches(items: list[Item], batch_size: int) -> Iterator[list[Item]]:
    """Groups of up to ``batch_size`` items of equal size, in the order each size first appears."""
    by_size: dict[tuple[int, int], list[Item]] = {}
    for item in items:
        by_size.setdefault(item.size, []).append(item)
    for group in by_size.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


@torch.no_grad()
def run_generator(loaded: Loaded, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> the generator's (B, C', H, W) output in [0, 1] (clamped)."""
    inputs = images.to(loaded.device) * 2 - 1
    outputs = loaded.generator(inputs).float()
    return ((outputs + 1) / 2).clamp_(0, 1).cpu()


def translate(loaded: Loaded, files: list[Path], out: Path, mode: Mode = "eval", batch_size: int = 8,
              seed: int = 0, report: Any = None, half: Half | None = None) -> list[Path]:
    """Translate image files into ``out`` (PNG, the input's stem, the input's bit depth); returns
    the files written, in the order they were written (inputs of one size together). ``half``:
    translate only the left or right half of each image (the pix2pix releases' A|B files)."""
    targets = output_paths(files, out)
    # Check every input's header before translating any (a file that is no image fails fast);
    # each batch is decoded only when its turn comes, so a large folder is never all in memory.
    items = [Item(file, target, halved(image_size(file), half, file)) for file, target in zip(files, targets)]
    check_folder(out, files, read_folders(loaded.path), "--out")
    for item in items:
        check_target(item.target, files, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CganError(f"--out {out}: cannot create the folder ({error.strerror or error})") from None
    set_mode(loaded.generator, mode)
    written = []
    # Paper mode: batch statistics per image, hence one image at a time, each under the same seed
    # (its result depends neither on the order nor on the other inputs). The caller's RNG state is
    # left as it was.
    with torch.random.fork_rng(devices=[loaded.device] if loaded.device.type == "cuda" else []):
        for group in batches(items, 1 if mode == "paper" else batch_size):
            images, depths = [], []
            for item in group:
                image, depth = read_image(item.source)
                if half is not None:  # split as the aligned datasets split A|B: the left half is width // 2
                    middle = image.shape[-1] // 2
                    image = image[..., :middle] if half == "left" else image[..., middle:]
                images.append(to_channels(image, loaded.in_channels))
                depths.append(depth)
            if mode == "paper":
                torch.manual_seed(seed)
            outputs = run_generator(loaded, torch.stack(images))
            for item, output, depth in zip(group, outputs, depths):
                replace(item.target, lambda tmp: write_image(tmp, output, depth))  # noqa: B023 - called at once
                written.append(item.target)
                if report is not None:
                    report(item)
    return written
