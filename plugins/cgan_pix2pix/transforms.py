"""Paired preprocessing: one resize, random crop and flip, applied identically to an input and its target.

Everything runs in float32 with torch, so 16-bit images keep their precision, and the random draws
come from torch's global generator, which the engine seeds per example: a resumed run repeats the
crops and flips of the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a (C, H, W) image in [0, 1] to ``size`` x ``size`` (antialiased, as PIL does)."""
    if image.shape[-2:] == (size, size):
        return image
    resized = F.interpolate(image[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return resized[0].clamp_(0, 1)  # bicubic overshoots at sharp edges


@dataclass(frozen=True)
class PairTransform:
    """pix2pix's preprocessing of a pair of (C, H, W) images in [0, 1].

    With ``augment``: resize both to ``load_size`` square, crop the same random ``crop_size``
    square from both and, when ``flip``, mirror both left-right half of the time. Without: resize
    straight to ``crop_size`` (pix2pix's test behaviour), no flip. Non-square images are
    stretched to the square, as pix2pix does. ``crop_size`` must not exceed ``load_size``.
    """

    load_size: int
    crop_size: int
    flip: bool
    augment: bool

    def prepare(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic part: the resize (to ``load_size`` when augmenting, else to ``crop_size``)."""
        size = self.load_size if self.augment else self.crop_size
        return resize(a, size), resize(b, size)

    def draw(self, generator: torch.Generator | None = None) -> tuple[int, int, bool]:
        """One example's random crop corner (top, left) and flip, from ``generator`` or torch's global one."""
        top, left = torch.randint(self.load_size - self.crop_size + 1, (2,), generator=generator).tolist()
        flipped = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return top, left, flipped

    def crop_flip(self, a: torch.Tensor, b: torch.Tensor, top: int, left: int,
                  flipped: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop the ``crop_size`` square at (top, left) from both (prepared) images, mirrored if ``flipped``."""
        window = (..., slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        a, b = a[window], b[window]
        if flipped:
            a, b = a.flip(-1), b.flip(-1)
        return a, b
