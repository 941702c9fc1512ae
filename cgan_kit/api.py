"""The Python API, for notebooks and services: ``cgan_kit.load`` and ``cgan_kit.train``.

``load`` reads a trained generator (a model folder, a run or a checkpoint) as ``cgan translate``
does and returns a ``Translator``, a callable that maps PIL images, numpy arrays and torch
tensors of any size to the same kind.
``train`` runs the same loop as ``cgan run`` and returns the run folder. Problems with the input
raise ``CganError`` (the command line's one-line messages); nothing calls ``sys.exit``. The API's
own messages go to the ``logging`` logger "cgan_kit" (silent unless the host configures logging).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cgan_kit.errors import CganError
from cgan_kit.images import readable_mode, to_channels
from cgan_kit.inference.translate import Loaded, load_generator, run_generator, set_mode

log = logging.getLogger(__name__)

_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}

Restore = Callable[[list[torch.Tensor]], Any]


def load(source: str | Path, *, direction: str | None = None, checkpoint: str | int = "latest",
         ema: bool | None = None, device: str | torch.device = "auto") -> Translator:
    """A translator from a model folder (``cgan export --format safetensors``: model.safetensors and
    config.json), a run folder (its ``checkpoint``: "latest", "best" or a step) or a .safetensors
    checkpoint; ``direction``, ``ema`` and ``device`` as in ``cgan translate``."""
    loaded = load_generator(source, ema=ema, device=device, which=str(checkpoint), direction=direction)
    translator = Translator(loaded)
    log.info("loaded %s: step %d, %s, %s on %s", loaded.path, loaded.step,
             "EMA weights" if loaded.ema else "trained weights", loaded.direction, loaded.device)
    return translator


class Translator:
    """A loaded generator as a function of images; make one with ``cgan_kit.load``.

    Takes a PIL image, a list of them, a numpy array (HxW, HxWxC or NxHxWxC; uint8, uint16 or
    float in [0, 1]) or a float tensor in [0, 1] (CxHxW or BxCxHxW), of any size, and returns the
    same kind (type, size, dtype, layout, device), grey for grey and colour for colour; a model
    whose output channels differ from its input's (a colorizer) gives its own channels.
    """

    def __init__(self, loaded: Loaded):
        self.loaded = loaded
        set_mode(loaded.generator, "eval")

    direction = property(lambda self: self.loaded.direction, doc="The method's direction translated in.")
    step = property(lambda self: self.loaded.step, doc="The training step of the checkpoint.")
    in_channels = property(lambda self: self.loaded.in_channels, doc="The channels the generator takes.")
    out_channels = property(lambda self: self.loaded.out_channels, doc="The channels the generator gives.")
    device = property(lambda self: self.loaded.device, doc="Where the generator computes.")
    checkpoint = property(lambda self: self.loaded.path,
                          doc="The file it was loaded from: a checkpoint, or a model folder's model.safetensors.")
    ema = property(lambda self: self.loaded.ema, doc="Whether these are the EMA weights.")
    generator = property(lambda self: self.loaded.generator, doc="The torch module (eval mode).")

    def __repr__(self) -> str:
        return (f"Translator({str(self.checkpoint)!r}, step={self.step}, direction={self.direction!r}, "
                f"channels={self.in_channels}->{self.out_channels}, device={str(self.device)!r})")

    def __call__(self, images: Any) -> Any:
        """Translate ``images``; a batch runs as one batch (a list: one batch per size)."""
        items, restore = _unpack(images)
        return restore(self._translate(items))

    @torch.no_grad()
    def _translate(self, items: list[torch.Tensor]) -> list[torch.Tensor]:
        """(C, H, W) images in [0, 1] -> outputs in the same channel form, each on the CPU."""
        outputs: list[torch.Tensor | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(tuple(item.shape[1:]), []).append(index)
        for indices in groups.values():
            batch = torch.stack([self._fit(items[i]) for i in indices])
            for i, output in zip(indices, run_generator(self.loaded, batch)):
                outputs[i] = self._back(output, items[i])
        return outputs  # type: ignore[return-value]

    def _fit(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] == self.in_channels:
            return image.float()
        return to_channels(image.detach().float().cpu(), self.in_channels)

    def _back(self, output: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The output in the source's channel form (grey or colour, its alpha kept), where the
        model keeps the channel count; else as the model gives it."""
        have = source.shape[0]
        if self.in_channels != self.out_channels or output.shape[0] == have:
            return output
        colour = to_channels(output, 1 if have in (1, 2) else 3)
        if have in (2, 4):
            colour = torch.cat([colour, source[-1:].detach().float().cpu()])
        return colour


def train(recipe: str | Path | None = None, overrides: Mapping[str, Any] | Sequence[str] | None = None, *,
          resume: str | Path | None = None, until: int | None = None) -> Path:
    """Train ``recipe`` (or continue the run folder ``resume``) as ``cgan run`` does, to
    ``train.steps`` or to step ``until``; returns the run folder. ``overrides`` are ``--set``
    values: {"train.steps": 10} or ["train.steps=10"]."""
    from cgan_kit.config.recipe import load as load_recipe
    from cgan_kit.training import loop

    if (recipe is None) == (resume is None):
        raise CganError("cgan_kit.train needs a recipe or resume=RUN_DIR (not both; a run resumes with its own "
                        "recipe, changed by overrides)")
    if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 1):
        raise CganError(f"until={until!r}: expected a step number >= 1")
    settings = _override_list(overrides)
    if recipe is not None:
        resolved = load_recipe(recipe, settings)  # fails before anything is written; train() checks it again
        log.info("training %s into %s", recipe, Path(resolved.train.out_dir))
    threads = torch.get_num_threads()
    try:
        folder = loop.train(None if recipe is None else str(recipe), settings,
                            None if resume is None else str(resume), until)
    finally:
        torch.set_num_threads(threads)  # the loop sets train.threads; the host's setting comes back
    log.info("trained %s", folder)
    return folder


def _override_list(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``--set`` strings from a dict of dotted keys and values, or a list of KEY=VALUE strings."""
    from cgan_kit.config.recipe import toml_value

    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        found = []
        for key, value in overrides.items():
            try:
                found.append(f"{key}={toml_value(str(value) if isinstance(value, Path) else value)}")
            except TypeError:
                raise CganError(f"overrides[{key!r}]: a value of type {type(value).__name__} is no recipe value; use "
                                "a bool, number, string, list or dict") from None
        return found
    if isinstance(overrides, (str, bytes)) or not all(isinstance(item, str) for item in overrides):
        raise CganError(f"overrides={overrides!r}: expected a dict {{'train.steps': 10}} or a list of "
                        "'KEY.PATH=VALUE' strings")
    return list(overrides)


# ---------------------------------------------------------------------------------------------
# Inputs and outputs: each kind as a list of (C, H, W) float tensors in [0, 1], and back


def _unpack(images: Any) -> tuple[list[torch.Tensor], Restore]:
    if isinstance(images, Image.Image):
        item, restore = _from_pil(images)
        return [item], lambda outputs: restore(outputs[0])
    if isinstance(images, (list, tuple)):
        if not all(isinstance(image, Image.Image) for image in images):
            raise CganError("a list to translate must hold PIL images only; stack arrays or tensors into a batch")
        pairs = [_from_pil(image) for image in images]
        return [item for item, _ in pairs], lambda outputs: [back(o) for (_, back), o in zip(pairs, outputs)]
    if isinstance(images, np.ndarray):
        return _from_numpy(images)
    if isinstance(images, torch.Tensor):
        return _from_tensor(images)
    raise CganError(f"cannot translate a {type(images).__name__}; give a PIL image, a list of them, a numpy array "
                    "or a torch tensor")


def _from_pil(image: Image.Image) -> tuple[torch.Tensor, Callable[[torch.Tensor], Image.Image]]:
    readable = readable_mode(image)  # the modes image files are read in, converted as they are
    if readable is None:
        raise CganError(f'a PIL image of mode "{image.mode}" cannot be translated; convert it to "L", "RGB", "RGBA" '
                        'or "I;16" first')
    image = readable
    wide = image.mode.startswith("I;16")
    samples = np.asarray(image).astype(np.uint16 if wide else np.uint8)
    item = _checked_size(torch.from_numpy(samples.astype(np.float32) / (65535.0 if wide else 255.0)))
    item = item[None] if item.ndim == 2 else item.permute(2, 0, 1)

    def back(output: torch.Tensor) -> Image.Image:
        grey = output.shape[0] == 1
        scale, dtype = (65535.0, np.uint16) if wide and grey else (255.0, np.uint8)
        pixels = np.rint(output.permute(1, 2, 0).numpy() * scale).astype(dtype)
        return Image.fromarray(pixels[:, :, 0] if grey else pixels)

    return item, back


def _from_numpy(array: np.ndarray) -> tuple[list[torch.Tensor], Restore]:
    scale = _SCALES.get(array.dtype, 1.0 if np.issubdtype(array.dtype, np.floating) else None)
    if scale is None:
        raise CganError(f"cannot translate a numpy array of {array.dtype}; give uint8, uint16 or float in [0, 1]")
    if array.ndim not in (2, 3, 4) or (array.ndim > 2 and not 1 <= array.shape[-1] <= 4):
        raise CganError(f"cannot translate a numpy array of shape {array.shape}; give HxW, HxWxC or NxHxWxC with "
                        "C of 1 to 4")
    values = torch.from_numpy(np.asarray(array, dtype=np.float32) / np.float32(scale))
    batch = _checked_size(values)
    if scale == 1.0:
        _check_range(batch, "numpy array")
    batch = batch[None, None] if array.ndim == 2 else batch[None] if array.ndim == 3 else batch
    items = list(batch.permute(0, 3, 1, 2) if array.ndim > 2 else batch)

    def restore(outputs: list[torch.Tensor]) -> np.ndarray:
        pixels = torch.stack(outputs).permute(0, 2, 3, 1).numpy()
        pixels = np.rint(pixels * scale).astype(array.dtype) if scale != 1.0 else pixels.astype(array.dtype)
        if array.ndim == 2:
            return pixels[0, :, :, 0] if pixels.shape[3] == 1 else pixels[0]
        return pixels[0] if array.ndim == 3 else pixels

    return items, restore


def _from_tensor(tensor: torch.Tensor) -> tuple[list[torch.Tensor], Restore]:
    if not tensor.is_floating_point():
        raise CganError(f"cannot translate a tensor of {tensor.dtype}; give a float tensor in [0, 1] (e.g. "
                        "images.float() / 255)")
    if tensor.ndim not in (3, 4) or not 1 <= tensor.shape[-3] <= 4:
        raise CganError(f"cannot translate a tensor of shape {tuple(tensor.shape)}; give CxHxW or BxCxHxW with C "
                        "of 1 to 4")
    batch = _checked_size(tensor.detach())
    _check_range(batch, "tensor")
    items = list(batch[None] if tensor.ndim == 3 else batch)

    def restore(outputs: list[torch.Tensor]) -> torch.Tensor:
        result = torch.stack(outputs).to(device=tensor.device, dtype=tensor.dtype)
        return result[0] if tensor.ndim == 3 else result

    return items, restore


def _checked_size(values: torch.Tensor) -> torch.Tensor:
    """Refuse what holds no image: an empty batch, or no pixels."""
    if values.numel() == 0:
        raise CganError(f"nothing to translate: the input's shape {tuple(values.shape)} holds no pixels")
    return values


def _check_range(values: torch.Tensor, what: str) -> None:
    low, high = values.min().item(), values.max().item()
    if low < 0 or high > 1:
        raise CganError(f"a float {what} must hold values in [0, 1], found {low:g} to {high:g} (for 0-255 values "
                        "divide by 255)")
