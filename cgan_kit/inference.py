"""Using a trained generator: load it from a checkpoint alone, and translate image files with it.

Everything a checkpoint needs to be used is inside it: the resolved recipe in its metadata says
which generator to build (and with what channels), the tensors hold its weights and, when the
recipe had a moving average of the generator (``[[stabilizers]] type = "ema"``), the averaged
weights too. No flag ever repeats what the checkpoint already says.

Image files are read and written here with Pillow and numpy, without losing precision: 8- and
16-bit grey, grey + alpha, RGB and RGBA (16-bit colour PNGs, which Pillow would narrow to 8 bits,
through a small reader of their own). The engine knows no architecture and imports no plugin;
this module only relies on the contracts every plugin keeps (a generator maps (B, C, H, W) to
(B, C', H, W) for any H and W).
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from cgan_kit import checkpoint
from cgan_kit.errors import CganError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Mode = Literal["eval", "paper"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


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


def resolve_checkpoint(target: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run folder (or of its checkpoints/ folder)."""
    path = Path(target)
    if not path.exists():
        raise CganError(f"{path} does not exist; give a run folder (runs/NAME) or a .safetensors checkpoint")
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        found = checkpoint.latest(folder)
        if found is not None:
            return found
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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CganError(f'--device: "{name}" is not a device; use "auto", "cpu" or "cuda"') from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CganError(f'--device: "{name}" asked for, but torch sees no CUDA GPU; use "auto" or "cpu"')
    return device


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


def load_generator(target: str | Path, ema: bool | None = None, device: str | torch.device = "auto",
                   overrides: dict[str, dict[str, Any]] | None = None) -> Loaded:
    """Build the generator a checkpoint (or a run's newest one) describes and load its weights.

    ``ema``: None uses a stabilizer's evaluation generator (the EMA copy) when the checkpoint has
    one, True requires it, False takes the trained weights. The result is in eval mode.
    """
    from cgan_kit import plugins
    from cgan_kit.build import build_models

    torch_device = pick_device(device) if isinstance(device, str) else device
    path = resolve_checkpoint(target)
    _check_format(path)
    tensors, meta = checkpoint.load(path)
    recipe = saved_recipe(path, meta, overrides)
    models = build_models(recipe, plugins.registry())
    # Stabilizers may change the networks (spectral norm reparametrizes them): set them up as the
    # training loop did, so that the saved tensor names fit.
    for stabilizer in models.stabilizers:
        stabilizer.setup(models.generator, models.critic, recipe.train.steps)
    checkpoint.load_weights(models.generator, checkpoint.split(tensors, "generator"), "generator", path)
    chosen, used_ema = models.generator, False
    if ema is not False:
        saved_extra = meta.get("stabilizers") or []
        for i, stabilizer in enumerate(models.stabilizers):
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
            candidate = stabilizer.eval_generator()
            if candidate is not None:
                chosen, used_ema = candidate, True
                break
        if ema and not used_ema:
            raise CganError(f"{path} has no EMA weights (its recipe has no [[stabilizers]] type = \"ema\"); "
                            "leave out --ema")
    del tensors
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


_NATURAL = re.compile(r"(\d+)")


def natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in _NATURAL.split(path.name)]


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (hidden files skipped), in natural order (2 before 10)."""
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=natural_key)


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # samples per pixel -> PNG colour type
_AS_IS = {"L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N"}
_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
            "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" conversion


def read_image(path: Path) -> tuple[torch.Tensor, int]:
    """An image file as a float32 (C, H, W) tensor in [0, 1], and its bit depth (8 or 16)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            samples = _read_png16(path) if _is_wide_colour(image) else _pillow_samples(image, path)
    except CganError:
        raise
    except _DECODE_ERRORS as error:
        raise CganError(_unreadable(path, error)) from None
    if samples.ndim == 2:
        samples = samples[:, :, None]
    wide = samples.dtype.itemsize == 2
    planar = np.ascontiguousarray(samples.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(planar).div_(65535 if wide else 255), 16 if wide else 8


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a (C, H, W) image of 1 to 4 channels to 1 (grey), 3 (RGB) or 4 (RGBA) channels.

    Colour becomes grey by BT.601 luma; grey becomes colour by repetition; a missing alpha is
    opaque; alpha is dropped when the result has none.
    """
    have = image.shape[0]
    if have == channels:
        return image
    colour, alpha = (image[:-1], image[-1:]) if have in (2, 4) else (image, None)
    if channels == 1:
        return colour if len(colour) == 1 else (colour * _LUMA[:, None, None]).sum(0, keepdim=True)
    rgb = colour.expand(3, -1, -1) if len(colour) == 1 else colour
    if channels == 3:
        return rgb
    if channels == 4:
        return torch.cat([rgb, alpha if alpha is not None else torch.ones_like(rgb[:1])])
    raise ValueError(f"channels must be 1, 3 or 4, not {channels}")


def write_image(path: Path, image: torch.Tensor, bit_depth: int = 8) -> None:
    """Save a (C, H, W) tensor in [0, 1] (C of 1 to 4) as a PNG, atomically: the file appears
    complete under its name or not at all."""
    path = Path(path)
    samples = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if bit_depth == 16:
            _write_png16(tmp, np.rint(samples * 65535).astype(np.uint16))
        elif bit_depth == 8:
            pixels = np.rint(samples * 255).astype(np.uint8)
            Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(tmp, format="PNG")
        else:
            raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CganError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def _rawmode(image: Image.Image) -> str:
    if not image.tile:
        return ""
    args = image.tile[0].args
    first = args if isinstance(args, str) else args[0] if args else ""
    return first if isinstance(first, str) else ""


def _is_wide_colour(image: Image.Image) -> bool:
    """16-bit samples that Pillow would narrow to 8 bits (it keeps only 16-bit grey)."""
    return not image.mode.startswith("I") and ";16" in _rawmode(image)


def _pillow_samples(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in _CONVERT:
        image = image.convert(_CONVERT[mode])
    elif mode == "I":  # 32-bit integers: fine when they hold 16-bit samples
        samples = np.asarray(image)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise CganError(f'image "{path}" holds 32-bit integer samples beyond the 16-bit range; '
                            "save it as an 8- or 16-bit PNG")
        return samples.astype(np.uint16)
    elif mode not in _AS_IS:
        raise CganError(f'image "{path}" has pixel mode "{mode}", which cannot be read as 8- or 16-bit '
                        "grey, RGB or RGBA; save it as an 8- or 16-bit PNG")
    samples = np.asarray(image)
    return samples.astype(np.uint16) if samples.dtype.itemsize == 2 else samples


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit colour (or grey + alpha) PNG's samples as (H, W, C) uint16."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise CganError(f'image "{path}" holds 16-bit colour samples but is not a PNG, which cannot be read '
                        "without losing precision; save it as a 16-bit PNG")
    header, compressed = b"", []
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = next((n for n, kind in _PNG_COLOUR_TYPES.items() if kind == colour), 0)
    if depth != 16 or not channels:
        raise ValueError(f"unexpected PNG header (bit depth {depth}, colour type {colour})")
    if interlace:
        raise CganError(f'image "{path}" is an interlaced 16-bit PNG, which cannot be read; '
                        "save it without interlacing")
    pixel = 2 * channels  # bytes per pixel
    rows = np.frombuffer(zlib.decompress(b"".join(compressed)), np.uint8)
    if rows.size < height * (1 + width * pixel):
        raise ValueError("image data is truncated")
    rows = rows[:height * (1 + width * pixel)].reshape(height, 1 + width * pixel)
    # PNG filters predict each byte from the byte one pixel to the left, the one above and the one
    # above-left, so byte k of every pixel forms an 8-bit grey image with the same row filters.
    # Stacked into one grey PNG stream (each preceded by a blank row standing in for the row above
    # the first), Pillow's C decoder undoes the filters of all of them at once.
    lanes = np.zeros((pixel, height + 1, 1 + width), np.uint8)
    lanes[:, 1:, 0] = rows[:, 0]
    lanes[:, 1:, 1:] = rows[:, 1:].reshape(height, width, pixel).transpose(2, 0, 1)
    grey = Image.frombytes("L", (width, pixel * (height + 1)), zlib.compress(lanes.tobytes(), 0), "zip", "L")
    unfiltered = np.asarray(grey).reshape(pixel, height + 1, width)[:, 1:].transpose(1, 2, 0)
    return np.ascontiguousarray(unfiltered).view(">u2").astype(np.uint16)


def _write_png16(path: Path, samples: np.ndarray) -> None:
    """Write (H, W, C) uint16 samples as a 16-bit PNG (no filtering, zlib level 6)."""
    height, width, channels = samples.shape
    rows = np.zeros((height, 1 + width * channels * 2), np.uint8)  # filter byte 0 ("none") per row
    rows[:, 1:] = samples.astype(">u2").reshape(height, -1).view(np.uint8)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(rows.tobytes(), 6)), (b"IEND", b"")]
    with open(path, "wb") as file:
        file.write(_PNG_SIGNATURE)
        for kind, body in chunks:
            file.write(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
        file.flush()
        os.fsync(file.fileno())


def _unreadable(path: Path, error: BaseException) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return f'image "{path}" is too large to decode safely ({error}); resize it or remove it'
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f'image "{path}" cannot be opened ({error.strerror or error}); check that it exists and is readable'
    try:
        empty = Path(path).stat().st_size == 0
    except OSError:
        return f'image "{path}" cannot be opened ({error}); check that it exists and is readable'
    if empty:
        return f'image "{path}" is empty (0 bytes); replace or remove it'
    return f'image "{path}" is not a readable image ({" ".join(str(error).split())}); replace or remove it'


# ---------------------------------------------------------------------------------------------
# Translating files


@dataclass
class Item:
    source: Path
    target: Path
    size: tuple[int, int]  # (width, height), from the file's header


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding it: unreadable files fail fast."""
    try:
        with Image.open(path) as image:
            return image.size
    except _DECODE_ERRORS as error:
        raise CganError(_unreadable(path, error)) from None


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
