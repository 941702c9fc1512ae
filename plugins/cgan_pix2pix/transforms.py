"""Preprocessing of images and pairs: the reference code's ``--preprocess`` choices (resize, crop,
scale the width, or nothing), then a random crop and flip applied identically to an input and its
target.

Everything runs in float32 with torch, so 16-bit images keep their precision, and the random draws
come from torch's global generator, which the engine seeds per example: a resumed run repeats the
crops and flips of the uninterrupted one.

Each preprocessing has a deterministic part (``prepare``: the resize, and in evaluation the centre
crop) and a random part (``draw`` then ``crop_flip``: the training crop and flip), so that the
device cache (``cgan_kit.data.DeviceCache``) can apply the random part to a batch on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from cgan_kit.errors import CganError

Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
PREPROCESS = get_args(Preprocess)
USES_LOAD_SIZE = ("resize_and_crop", "scale_width", "scale_width_and_crop")  # the others ignore load_size
SIZES_VARY = ("scale_width", "none")  # no crop to one size: examples keep their own proportions
_CROPPING = ("resize_and_crop", "crop", "scale_width_and_crop")


def resize(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (C, H, W) image in [0, 1] to ``size`` x ``size``, or to ``size`` = (height,
    width) (antialiased, as PIL does)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == size:
        return image
    resized = F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized[0].clamp_(0, 1)  # bicubic overshoots at sharp edges


def scale_width(image: torch.Tensor, width: int, min_height: int) -> torch.Tensor:
    """Resize to ``width`` keeping the aspect ratio, the height at least ``min_height``: the
    reference's rule, height = int(max(width * h / w, min_height))."""
    h, w = image.shape[-2:]
    return resize(image, (int(max(width * h / w, min_height)), width))


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` square at the centre of a (C, H, W) image at least that large on both sides."""
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[..., top:top + size, left:left + size]


@dataclass(frozen=True)
class Geometry:
    """One image's preprocessing, as the reference's ``--preprocess`` has it (``augment``: training;
    otherwise evaluation's deterministic counterpart):

    - "resize_and_crop": resize to a ``load_size`` square (stretching), random ``crop_size`` crop;
      evaluation resizes straight to ``crop_size``.
    - "crop": no resize, random ``crop_size`` crop; evaluation takes the centre one. An image
      smaller than ``crop_size`` on a side is an error.
    - "scale_width": the width resized to ``load_size``, the aspect ratio kept (the height at least
      ``crop_size``), no crop; evaluation scales the width to ``crop_size`` (the reference's test
      default, load_size = crop_size).
    - "scale_width_and_crop": the width resized to ``load_size`` likewise, random ``crop_size``
      crop; evaluation scales the width to ``crop_size`` and takes the centre crop.
    - "none": the image as it is.

    Training mirrors left-right half of the time when ``flip``, in every mode.
    """

    load_size: int
    crop_size: int
    flip: bool
    augment: bool
    preprocess: Preprocess = "resize_and_crop"

    @property
    def sizes_vary(self) -> bool:
        """Whether prepared images may differ in size (no crop to one size)."""
        return self.preprocess in SIZES_VARY

    def prepare_one(self, image: torch.Tensor, name: str = "the image") -> torch.Tensor:
        """The deterministic part for one image: the resize (and evaluation's centre crop).
        ``name`` says which image it is in an error."""
        mode, crop = self.preprocess, self.crop_size
        if mode == "resize_and_crop":
            return resize(image, self.load_size if self.augment else crop)
        if mode == "crop":
            self._check_crop(image, name)
            return image if self.augment else centre_crop(image, crop)
        if mode == "scale_width":  # the reference's: the width to load_size in training, crop_size at test time
            return scale_width(image, self.load_size if self.augment else crop, crop)
        if mode == "scale_width_and_crop":
            if self.augment:
                return scale_width(image, self.load_size, crop)
            return centre_crop(scale_width(image, crop, crop), crop)
        return image

    def draw(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int, bool]:
        """One example's random crop corner (top, left) in a prepared ``height`` x ``width`` image, and
        its flip, from ``generator`` or torch's global one."""
        if self.preprocess == "resize_and_crop":  # a square: one draw for both corners, as always
            top, left = torch.randint(height - self.crop_size + 1, (2,), generator=generator).tolist()
        elif self.augment and self.preprocess in _CROPPING:
            top = int(torch.randint(height - self.crop_size + 1, (), generator=generator))
            left = int(torch.randint(width - self.crop_size + 1, (), generator=generator))
        else:
            top = left = 0
        flipped = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return top, left, flipped

    def crop_flip_one(self, image: torch.Tensor, top: int, left: int, flipped: bool) -> torch.Tensor:
        """The drawn crop (where the mode crops) and flip of one prepared image, or of a batch."""
        if self.augment and self.preprocess in _CROPPING:
            image = image[..., top:top + self.crop_size, left:left + self.crop_size]
        return image.flip(-1) if flipped else image

    def __call__(self, image: torch.Tensor, name: str = "the image") -> torch.Tensor:
        """The whole preprocessing of one image, its random part from torch's global generator."""
        image = self.prepare_one(image, name)
        if not self.augment:
            return image
        return self.crop_flip_one(image, *self.draw(*image.shape[-2:]))

    def _check_crop(self, image: torch.Tensor, name: str) -> None:
        height, width = image.shape[-2:]
        if height < self.crop_size or width < self.crop_size:
            raise CganError(f"{name} is {width}x{height} pixels (width x height), smaller than data.crop_size = "
                            f'{self.crop_size} on a side, and data.preprocess = "crop" does not resize; lower '
                            'crop_size, remove the image, or use preprocess = "resize_and_crop" or '
                            '"scale_width_and_crop"')


@dataclass(frozen=True)
class PairTransform(Geometry):
    """pix2pix's preprocessing of a pair of (C, H, W) images in [0, 1]: the input's geometry, with
    the same crop and flip for both. In every mode but "resize_and_crop" (which stretches both to
    one square whatever their sizes) a target of another size than its input is first resized
    (bicubic) to the input's size, so that the two stay aligned pixel for pixel."""

    def prepare(self, a: torch.Tensor, b: torch.Tensor, name: str = "the input image") -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
        """The deterministic part for the input ``a`` and target ``b``: the resize (and evaluation's
        centre crop); ``name`` says which input image it is in an error."""
        if self.preprocess != "resize_and_crop" and b.shape[-2:] != a.shape[-2:]:
            b = resize(b, tuple(a.shape[-2:]))
        return self.prepare_one(a, name), self.prepare_one(b, name)

    def crop_flip(self, a: torch.Tensor, b: torch.Tensor, top: int, left: int,
                  flipped: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The drawn crop at (top, left) of both (prepared) images, mirrored if ``flipped``."""
        return self.crop_flip_one(a, top, left, flipped), self.crop_flip_one(b, top, left, flipped)


def load_size_fits(preprocess: str, load_size: int, crop_size: int) -> str | None:
    """Why ``crop_size`` cannot be cut from images resized to ``load_size`` (None: it can, or the mode
    does not resize to ``load_size``)."""
    if preprocess in USES_LOAD_SIZE and crop_size > load_size:
        return (f"data.crop_size: {crop_size} is larger than data.load_size = {load_size}, so images resized to "
                f"load_size are smaller than the crop; lower crop_size or raise load_size")
    return None
