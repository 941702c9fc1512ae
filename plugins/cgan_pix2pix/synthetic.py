"""Procedural paired data: label maps of simple shapes and their shaded renderings, made on the fly.

The input is a label map: two to five rectangles, ellipses and triangles on a background, one flat
colour per class. The target renders it: each class has a paint colour and a height; the height
map, blurred, lights the scene from above (by its vertical slope), darkens the rims of shapes and,
on two classes, draws contour rings. The target is thus a local function of the input alone, which
a small U-Net learns quickly, and it is mirror-symmetric, so random left-right flips keep pairs
consistent.

Each example comes from its own generator seeded by (seed, split, index): the same example every
time, different examples for different seeds, and disjoint streams for the splits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cgan_kit.images import to_channels

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}

# One column per class, class 0 the background: label colour (RGB, of distinct luma so that grey
# inputs work too), paint colour (RGB), height, contour rings per unit of height.
_CLASSES = torch.tensor([
    [0.10, 0.10, 0.40, 0.72, 0.68, 0.60, 0.00, 0],
    [0.85, 0.15, 0.10, 0.70, 0.30, 0.22, 1.00, 0],
    [0.15, 0.70, 0.20, 0.25, 0.50, 0.20, 0.50, 3],
    [0.95, 0.85, 0.20, 0.85, 0.75, 0.45, 1.50, 0],
    [0.45, 0.75, 1.00, 0.35, 0.55, 0.80, 0.75, 0],
    [0.95, 0.95, 0.95, 0.55, 0.40, 0.65, 1.25, 4],
]).T.contiguous()


class Shapes(Dataset):
    """Label maps of shapes -> shaded renderings, as {"input", "target", "name"} items in [-1, 1]."""

    bit_depth = 8

    def __init__(self, split: str, length: int, size: int, seed: int, in_channels: int, out_channels: int,
                 flip: bool):
        self.split, self.length, self.size, self.seed = split, length, size, seed
        self.in_channels, self.out_channels, self.flip = in_channels, out_channels, flip
        centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
        y, x = (axis.reshape(-1) for axis in torch.meshgrid(centres, centres, indexing="ij"))
        self.features = torch.stack([x * x, y * y, x, y, torch.ones_like(x)])  # see _constraints
        # The height map's blur and vertical slope (scaled by sigma: the same look at every size)
        # come from a Gaussian and its derivative.
        sigma = max(1.0, size / 32)
        taps = torch.arange(-math.ceil(2.5 * sigma), math.ceil(2.5 * sigma) + 1, dtype=torch.float32)
        gauss = torch.exp(-0.5 * (taps / sigma) ** 2)
        gauss /= gauss.sum()
        self.across = gauss.view(1, 1, 1, -1)
        self.down = torch.stack([gauss, -taps / sigma * gauss]).view(2, 1, -1, 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} examples")
        label = self.label_map(torch.Generator().manual_seed(self.example_seed(index)))
        classes = _CLASSES.index_select(1, label.view(-1)).view(-1, self.size, self.size)
        colour, paint, height, rings = classes.split([3, 3, 1, 1])
        source = to_channels(colour, self.in_channels)
        target = to_channels(self.render(paint, height, rings), self.out_channels)
        if self.flip and torch.rand(()) < 0.5:  # the engine seeds this draw per example
            source, target = source.flip(-1), target.flip(-1)
        return {"input": source * 2 - 1, "target": target * 2 - 1, "name": f"shapes_{self.split}_{index:05d}"}

    def example_seed(self, index: int) -> int:
        """The generator seed of an example: distinct for each index (below 2**30) and never shared by two splits.

        32 bits, as torch's CPU generator ignores the rest: 30 bits mixed from seed and index, then the split.
        """
        mixed = (index * 0x9E3779B1 + self.seed * 0x85EBCA77) % 2**30  # odd multiplier: one value per index
        return mixed * len(SPLIT_STREAMS) + SPLIT_STREAMS[self.split]

    def label_map(self, generator: torch.Generator) -> torch.Tensor:
        """A (size, size) map of class indices: 2 to 5 shapes, later ones on top."""
        count = int(torch.randint(2, 6, (), generator=generator))
        kinds = torch.randint(3, (count,), generator=generator).tolist()
        classes = torch.randint(1, _CLASSES.shape[1], (count,), generator=generator)
        geometry = torch.rand(count, 5, generator=generator, dtype=torch.float64).tolist()
        constraints = torch.tensor([_constraints(kind, *shape) for kind, shape in zip(kinds, geometry)],
                                   dtype=torch.float64)
        # A pixel is in a shape when it meets all four of the shape's constraints.
        masks = (constraints.view(count * 4, 5) @ self.features).view(count, 4, -1).amin(1) >= 0
        top = (masks * torch.arange(1, count + 1).view(count, 1)).amax(0)  # 1 + topmost shape's index; 0: none
        classes = torch.cat([torch.zeros(1, dtype=torch.long), classes])
        return classes.index_select(0, top).view(self.size, self.size)

    def render(self, paint: torch.Tensor, height: torch.Tensor, rings: torch.Tensor) -> torch.Tensor:
        """Shade per-pixel paint (3, size, size) by the height map and ring frequencies (1, size, size)."""
        # Zero padding: the background (height 0) goes on beyond the borders.
        across = F.conv2d(height[None], self.across, padding=(0, self.across.shape[-1] // 2))
        blurred, slope = F.conv2d(across, self.down, padding=(self.down.shape[-2] // 2, 0))[0]
        light = 1 + slope  # brighter where the height rises towards the light above (+-0.4 at a unit step)
        rims = 1 - 0.4 * (height - blurred).abs().clamp(max=1)
        contours = 1 - 0.15 * (1 - torch.cos(2 * math.pi * rings * blurred))
        return (paint * (light * rims * contours)).clamp_(0, 1)


def _constraints(kind: int, cx: float, cy: float, rx: float, ry: float, turn: float) -> list[list[float]]:
    """A shape as four constraints: coefficients of (x^2, y^2, x, y, 1) in sums that are >= 0 inside it.

    ``kind`` picks a rectangle, an ellipse or a triangle; the rest, uniform in [0, 1), place it:
    centre, half-extents and (triangles) rotation in turns.
    """
    cx, cy, rx, ry = 0.15 + 0.7 * cx, 0.15 + 0.7 * cy, 0.08 + 0.2 * rx, 0.08 + 0.2 * ry
    always = [0.0, 0.0, 0.0, 0.0, 1.0]
    if kind == 0:  # rectangle: cx - rx <= x <= cx + rx, cy - ry <= y <= cy + ry
        return [[0, 0, 1, 0, rx - cx], [0, 0, -1, 0, rx + cx], [0, 0, 0, 1, ry - cy], [0, 0, 0, -1, ry + cy]]
    if kind == 1:  # ellipse: 1 - ((x - cx) / rx)^2 - ((y - cy) / ry)^2 >= 0
        a, b = 1 / rx**2, 1 / ry**2
        return [[-a, -b, 2 * a * cx, 2 * b * cy, 1 - a * cx**2 - b * cy**2], always, always, always]
    # triangle: on the inner side of the edges between corners a third of a turn apart
    corners = [(cx + rx * math.cos(angle), cy + ry * math.sin(angle))
               for angle in ((turn + k / 3) * 2 * math.pi for k in range(3))]
    edges = [[0, 0, y0 - y1, x1 - x0, (y1 - y0) * x0 - (x1 - x0) * y0]
             for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1])]
    return [*edges, always]
