"""Using a trained generator: load it from a checkpoint alone, and translate image files with it.

Everything a checkpoint needs to be used is inside it: the resolved recipe in its metadata says
which generator to build (and with what channels), the tensors hold its weights and, when the
recipe had a moving average of the generator (``[[stabilizers]] type = "ema"``), the averaged
weights too. No flag ever repeats what the checkpoint already says.

Image files are read and written by ``cgan_kit.images`` without losing precision (16-bit in,
16-bit out). The engine knows no architecture and imports no plugin;
this module only relies on the contracts every plugin keeps (a generator maps (B, C, H, W) to
(B, C', H, W) for any H and W).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from cgan_kit import checkpoint
from cgan_kit import images as image_files
from cgan_kit.images import IMAGE_SUFFIXES, image_size, list_images, to_channels, write_image
from cgan_kit.errors import CganError
from cgan_kit.train import pick_device

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Mode = Literal["eval", "paper"]


# ---------------------------------------------------------------------------------------------
# Loading a generator from a checkpoint


@dataclass
class Loaded:
    """A generator ready to run, with what it came from."""

    path: Path                 # the checkpoint file
    recipe: Any                # cgan_kit.recipe.Recipe, as saved with the checkpoint
    meta: dict[str, Any]
    generator: nn.Module       # the EMA copy when ``ema``
    ema: bool
    device: torch.device

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def in_channels(self) -> int:
        return int(self.recipe.data.args["in_channels"])

    @property
    def out_channels(self) -> int:
        return int(self.recipe.data.args["out_channels"])


def resolve_checkpoint(target: str | Path, which: str = "latest") -> Path:
    """A checkpoint file, or one of a run folder's checkpoints: ``which`` is "latest", "best" (the
    best held-out evaluation, ``train.best_metric``) or a step number."""
    path = Path(target)
    if not path.exists():
        raise CganError(f"{path} does not exist; give a run folder (runs/NAME) or a .safetensors checkpoint")
    if path.is_file():
        if which != "latest":
            raise CganError(f"--checkpoint {which}: {path} is a checkpoint file already; --checkpoint picks one of a "
                            "run folder's checkpoints (give the run folder instead)")
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    saved = checkpoint.saved_steps(folder)
    if which == "best":
        best = folder / checkpoint.BEST_NAME
        if best.is_file():
            return best
        raise CganError(f"--checkpoint best: {folder} has no {checkpoint.BEST_NAME}; a run keeps one once it has "
                        "evaluated on held-out data (train.eval_every, train.best_metric); use --checkpoint latest")
    if which != "latest":
        if not which.isdigit():
            raise CganError(f'--checkpoint {which}: expected "latest", "best" or a step number')
        for step, found in saved:
            if step == int(which):
                return found
        steps = ", ".join(str(step) for step, _ in saved) or "none"
        raise CganError(f"--checkpoint {which}: {folder} has no checkpoint of step {int(which)} (it has: {steps}; "
                        "train.keep_checkpoints says how many are kept)")
    if saved:
        return saved[-1][1]
    raise CganError(f"{path} holds no checkpoints (looked for {path / 'checkpoints'}/step_*.safetensors); "
                    "give a run folder made by `cgan run` or a checkpoint file")


def _check_format(path: Path) -> None:
    """Refuse, in one line, a file that is not a safetensors file at all (a recipe, an image, a
    .pth); pickles are left to checkpoint.load, which explains them."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError as error:
        raise CganError(f"{path} cannot be read ({error.strerror or error})") from None
    is_pickle = head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)
    if is_pickle:
        return
    length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) < 9 or not 2 <= length <= size - 8 or head[8:9] != b"{":
        raise CganError(f"{path} is not a cgan-kit checkpoint (not a safetensors file); give a run folder or a "
                        "checkpoints/step_*.safetensors file written by `cgan run`")


def saved_recipe(path: Path, meta: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None) -> Any:
    """The recipe a checkpoint was trained with, validated against the installed plugins.

    ``overrides`` replaces keys of tables before validation, e.g. {"data": {"root": "..."}}.
    """
    from cgan_kit import plugins
    from cgan_kit.errors import RecipeError
    from cgan_kit.recipe import validate

    text = meta.get("recipe")
    if not isinstance(text, str):
        raise CganError(f"{path} is a cgan-kit checkpoint without its recipe in the metadata; it cannot be "
                        "used on its own (was it written by an old or foreign tool?)")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CganError(f"{path}: the recipe in its metadata is not valid TOML ({error}); the file is damaged") \
            from None
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
        raise CganError(f"{error}\n{path}: the recipe saved in this checkpoint does not validate with the installed "
                        "plugins; install the plugins (and versions) it was trained with") from None


def load_models(path: Path, device: torch.device, overrides: dict[str, dict[str, Any]] | None = None,
                stabilizer_states: bool = True) -> tuple[Any, dict[str, Any], Any]:
    """Rebuild everything a checkpoint file's recipe describes and load its weights: (recipe,
    metadata, cgan_kit.build.Models) with generator, critic and (with ``stabilizer_states``) the
    stabilizers' state, on ``device`` and in eval mode."""
    from cgan_kit import plugins
    from cgan_kit.build import build_models

    _check_format(path)
    tensors, meta = checkpoint.load(path)
    recipe = saved_recipe(path, meta, overrides)
    models = build_models(recipe, plugins.registry())
    # Stabilizers may change the networks (spectral norm reparametrizes them): set them up as the
    # training loop did, so that the saved tensor names fit.
    for stabilizer in models.stabilizers:
        stabilizer.setup(models.generator, models.critic, recipe.train.steps)
    checkpoint.load_weights(models.generator, checkpoint.split(tensors, "generator"), "generator", path)
    checkpoint.load_weights(models.critic, checkpoint.split(tensors, "critic"), "critic", path)
    saved_extra = meta.get("stabilizers") or []
    for i, stabilizer in enumerate(models.stabilizers if stabilizer_states else []):
        state = checkpoint.split(tensors, f"stabilizers.{i}")
        if not state:
            continue
        try:
            stabilizer.load_state_dict(state)
            if i < len(saved_extra):
                stabilizer.load_extra_state(saved_extra[i])
        except (RuntimeError, KeyError, ValueError) as error:
            raise CganError(f"{path}: the state of stabilizer {i} ({recipe.stabilizers[i].type}) does not fit "
                            f"its recipe ({' '.join(str(error).split())[:200]}); the file is damaged") from None
    del tensors
    models.generator = models.generator.to(device).eval().requires_grad_(False)
    models.critic = models.critic.to(device).eval().requires_grad_(False)
    return recipe, meta, models


def load_generator(target: str | Path, ema: bool | None = None, device: str | torch.device = "auto",
                   overrides: dict[str, dict[str, Any]] | None = None, which: str = "latest") -> Loaded:
    """Build the generator a checkpoint (or a run's checkpoint ``which``: latest, best or a step)
    describes and load its weights.

    ``ema``: None uses a stabilizer's evaluation generator (the EMA copy) when the checkpoint has
    one, True requires it, False takes the trained weights. The result is in eval mode.
    """
    torch_device = pick_device(device, "--device") if isinstance(device, str) else device
    path = resolve_checkpoint(target, which)
    recipe, meta, models = load_models(path, torch_device, overrides, stabilizer_states=ema is not False)
    chosen, used_ema = models.generator, False
    if ema is not False:
        for stabilizer in models.stabilizers:
            candidate = stabilizer.eval_generator()
            if candidate is not None:
                chosen, used_ema = candidate, True
                break
        if ema and not used_ema:
            raise CganError(f"{path} has no EMA weights (its recipe has no [[stabilizers]] type = \"ema\"); "
                            "leave out --ema")
    chosen = chosen.to(torch_device).eval().requires_grad_(False)
    return Loaded(path, recipe, meta, chosen, used_ema, torch_device)


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
              seed: int = 0, report: Any = None) -> list[Path]:
    """Translate image files into ``out`` (PNG, the input's stem, the input's bit depth); returns
    the files written, in the order they were written (inputs of one size together)."""
    targets = output_paths(files, out)
    # Check every input's header before translating any (a file that is no image fails fast);
    # each batch is decoded only when its turn comes, so a large folder is never all in memory.
    items = [Item(file, target, image_size(file)) for file, target in zip(files, targets)]
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
                images.append(to_channels(image, loaded.in_channels))
                depths.append(depth)
            if mode == "paper":
                torch.manual_seed(seed)
            outputs = run_generator(loaded, torch.stack(images))
            for item, output, depth in zip(group, outputs, depths):
                write_image(item.target, output, depth)
                written.append(item.target)
                if report is not None:
                    report(item)
    return written
