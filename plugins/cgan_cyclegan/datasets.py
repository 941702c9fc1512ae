"""Unpaired data: two image domains, A and B, each example a fresh random partner from the other.

``unaligned`` reads the reference code's CycleGAN layout (trainA/, trainB/, testA/, testB/) or
an aligned release's side-by-side images as two domains (no copying: left halves are one domain,
right halves the other, each side shuffled on its own). ``synthetic_unpaired`` makes both domains
procedurally for a quickstart. Items are {"A", "B", "name"} in [-1, 1]. The partner is drawn from
torch's generator, which the engine seeds per example: reproducible, and a resumed run draws the
partners the uninterrupted one would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from torch.utils.data import Dataset

from cgan_kit import Range, hookimpl
from cgan_kit.errors import ArgumentError, CganError
from cgan_kit.images import list_images, read_image, to_channels
from cgan_pix2pix.datasets import Channels, Side, Split, _ab_folders, _root, _split_folder
from cgan_pix2pix.synthetic import Shapes
from cgan_pix2pix.transforms import Geometry, Preprocess, load_size_fits, resize


def domain_transform(load_size: int, crop_size: int, flip: bool, augment: bool,
                     preprocess: Preprocess = "resize_and_crop") -> Geometry:
    """The reference's unpaired preprocessing of one (C, H, W) image in [0, 1] (see ``Geometry``):
    by default training resizes to a ``load_size`` square, takes a random ``crop_size`` crop and
    mirrors at random, and evaluation resizes straight to ``crop_size``. Each domain's image draws
    its own crop and flip."""
    problem = load_size_fits(preprocess, load_size, crop_size)
    if problem:
        raise ArgumentError(problem)
    return Geometry(load_size, crop_size, flip and augment, augment, preprocess)


class _Domains(Dataset):
    """Two lists of images; example i is A image i (cycling) with a random B partner in training,
    B image i (cycling) in evaluation, as the reference's unaligned dataset pairs them."""

    paired = False  # whether evaluation's A image i and B image i are a true pair (set where known)

    def __init__(self, count_a: int, count_b: int, transform: Geometry, in_channels: int, out_channels: int):
        self.count_a, self.count_b, self.transform = count_a, count_b, transform
        self.in_channels, self.out_channels = in_channels, out_channels
        self.sizes_vary = transform.sizes_vary  # evaluation and samples then take one example at a time
        # evaluation counts each image once: the smaller domain repeats after its last image
        self.distinct_images = {"A": count_a, "B": count_b}

    def __len__(self) -> int:
        return max(self.count_a, self.count_b)

    def read(self, domain: str, index: int) -> tuple[torch.Tensor, str]:
        """Image ``index`` of ``domain`` ("A" or "B") as (C, H, W) in [0, 1], and its name."""
        raise NotImplementedError

    def describe(self, domain: str, index: int) -> str:
        """Which file holds image ``index`` of ``domain``, for error messages."""
        return f"image {index} of domain {domain}"

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        a, name = self.read("A", index % self.count_a)
        partner = int(torch.randint(self.count_b, ())) if self.transform.augment else index % self.count_b
        b, _ = self.read("B", partner)
        a = self.transform(a, self.describe("A", index % self.count_a))
        b = self.transform(b, self.describe("B", partner))
        if self.paired and b.shape[-2:] != a.shape[-2:]:  # a true pair, measured pixel for pixel: B on A's grid
            b = resize(b, tuple(a.shape[-2:]))
        return {"A": to_channels(a, self.in_channels) * 2 - 1, "B": to_channels(b, self.out_channels) * 2 - 1,
                "name": name}


class _Folders(_Domains):
    def __init__(self, files_a: list[Path], files_b: list[Path], **kwargs):
        super().__init__(len(files_a), len(files_b), **kwargs)
        self.files = {"A": files_a, "B": files_b}

    def read(self, domain: str, index: int) -> tuple[torch.Tensor, str]:
        file = self.files[domain][index]
        return read_image(file), file.stem

    def describe(self, domain: str, index: int) -> str:
        return f'image "{self.files[domain][index]}"'


class _Halves(_Domains):
    def __init__(self, files: list[Path], swap: bool, **kwargs):
        super().__init__(len(files), len(files), **kwargs)
        self.files, self.swap = files, swap
        self.paired = not self.transform.augment  # the release's own pairs, in evaluation

    def read(self, domain: str, index: int) -> tuple[torch.Tensor, str]:
        image = read_image(self.files[index])
        width = image.shape[-1]
        if width < 2:
            raise CganError(f'image "{self.files[index]}" is {width} pixel wide: it cannot hold A and B side by '
                            "side; replace or remove it")
        left = (domain == "A") != self.swap
        return (image[..., :width // 2] if left else image[..., width // 2:]), self.files[index].stem

    def describe(self, domain: str, index: int) -> str:
        left = (domain == "A") != self.swap
        return f'the {"left" if left else "right"} half (domain {domain}) of image "{self.files[index]}"'


def unaligned(split: Split, augment: bool, root: str, layout: Literal["folders", "side_by_side"] = "folders",
              direction: Literal["AtoB", "BtoA"] = "AtoB", load_size: Side = 286, crop_size: Side = 256,
              flip: bool = True, in_channels: Channels = 3, out_channels: Channels = 3,
              preprocess: Preprocess = "resize_and_crop") -> Dataset:
    """Two unpaired image domains, A and B, of any sizes (CycleGAN's data).

    "folders" reads root/trainA/ and root/trainB/ (and testA/, testB/; or train/A/ and train/B/),
    the reference's CycleGAN release layout. "side_by_side" reads a pix2pix release (root/train/,
    root/test/, A left and B right) as two domains without copying: its pairs are broken, each
    training example taking a random partner. In training each A image meets a fresh random B
    image; in evaluation A image i meets B image i, so a test split that happens to be paired
    stays paired (there, a B image of another size than its A is resized to A's size). Each
    image is preprocessed on its own, with its own random crop and flip. Generators pad any size
    up to a multiple of their stride and crop the output back (see aligned).

    Args:
        root: Folder with the splits' images (see layout).
        layout: "folders" (trainA/, trainB/, ...) or "side_by_side" (an aligned release).
        direction: "AtoB" keeps the domains as stored; "BtoA" swaps them (facades: labels as A).
        load_size: The size images are resized to before the random crop, in training: the side of
            the square ("resize_and_crop") or the width ("scale_width", "scale_width_and_crop"); other
            modes ignore it.
        crop_size: Side of the square crop the models see (for "scale_width": the width in
            evaluation, and the least height).
        flip: Mirror each training image left-right half of the time (in every preprocess mode).
        in_channels: Channels of domain A: 1 (grey), 3 (RGB) or 4 (RGBA).
        out_channels: Channels of domain B: 1 (grey), 3 (RGB) or 4 (RGBA).
        preprocess: "resize_and_crop" (stretch to a load_size square, random crop_size crop), "crop",
            "scale_width", "scale_width_and_crop" or "none", each as `cgan describe dataset aligned`
            details (train and evaluation). "scale_width" and "none" keep each image's size: train
            with train.batch_size = 1.
    """
    transform = domain_transform(load_size, crop_size, flip, augment, preprocess)
    options = {"transform": transform, "in_channels": in_channels, "out_channels": out_channels}
    if layout == "side_by_side":
        folder = _split_folder(root, split)
        files = list_images(folder)
        if not files:
            raise CganError(f'data.root: folder "{folder}" holds no images; put the {split} split\'s side-by-side '
                            "images there")
        return _Halves(files, direction == "BtoA", **options)
    _root(root)
    folder_a, folder_b = _ab_folders(root, split)
    files = [list_images(folder) for folder in (folder_a, folder_b)]
    for folder, found in zip((folder_a, folder_b), files):
        if not found:
            raise CganError(f'data.root: folder "{folder}" holds no images; put the {split} split\'s images there')
    if direction == "BtoA":
        files.reverse()
    return _Folders(*files, **options)


class _ShapeDomains(_Domains):
    def __init__(self, shapes: Shapes, **kwargs):
        super().__init__(len(shapes), len(shapes), **kwargs)
        self.shapes = shapes
        self.paired = not self.transform.augment  # each label map with its own rendering, in evaluation

    def read(self, domain: str, index: int) -> tuple[torch.Tensor, str]:
        item = self.shapes[index]
        image = item["input"] if domain == "A" else item["target"]
        return (image + 1) / 2, item["name"]


def synthetic_unpaired(split: Split, augment: bool, size: Annotated[int, Range(ge=8, le=4096)] = 32,
                       length: Annotated[int, Range(ge=1, le=10**8)] = 1000, seed: Annotated[int, Range(ge=0)] = 0,
                       flip: bool = True, in_channels: Channels = 3, out_channels: Channels = 3) -> Dataset:
    """Procedural shapes as two unpaired domains: label maps (A) and shaded renderings (B).

    The synthetic dataset's pairs, broken: in training each label map meets the rendering of a
    random other example. The test split stays paired (example i with its own rendering), so the
    cycle and translation errors can be measured against the truth.

    Args:
        size: Side of the square images, in pixels.
        length: Examples in the train split; val and test have a quarter as many (at least one).
        seed: Chooses the examples; another seed gives other examples.
        flip: Mirror each training image left-right half of the time.
        in_channels: Channels of the label maps: 1 (grey), 3 (RGB) or 4 (RGBA).
        out_channels: Channels of the renderings: 1 (grey), 3 (RGB) or 4 (RGBA).
    """
    count = length if split == "train" else max(1, length // 4)
    shapes = Shapes(split, count, size, seed, in_channels, out_channels, False)
    return _ShapeDomains(shapes, transform=domain_transform(size, size, flip, augment), in_channels=in_channels,
                         out_channels=out_channels)


@hookimpl
def register_datasets(register):
    register("unaligned", unaligned)
    register("synthetic_unpaired", synthetic_unpaired)
