"""Built-in datasets: pix2pix's side-by-side files, paired A/B folders, and procedural shapes.

A factory receives ``split`` and ``augment`` from the engine and its other arguments from the
recipe's ``[data]`` table. Folder layouts and file names are checked when a dataset is built;
images are decoded, and their problems reported, when an item is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import torch
from torch.utils.data import Dataset

from cgan_kit import Range, hookimpl
from cgan_kit.errors import ArgumentError, CganError
from cgan_pix2pix.releases import release_for
from cgan_kit.images import IMAGE_SUFFIXES, list_images, read_bit_depth, read_image, to_channels
from cgan_pix2pix.synthetic import Shapes
from cgan_pix2pix.transforms import PairTransform, Preprocess, load_size_fits

Split = Literal["train", "val", "test"]
Direction = Literal["AtoB", "BtoA"]
Channels = Literal[1, 3, 4]
Side = Annotated[int, Range(ge=1, le=16384)]  # pixels; larger would not fit in memory
SPLITS = get_args(Split)

_FEW = 3  # names quoted in an error message


class _PairedImages(Dataset):
    """Pairs of images read from files, turned into {"input", "target", "name"} items in [-1, 1]."""

    def __init__(self, names: list[str], transform: PairTransform, direction: Direction, in_channels: int,
                 out_channels: int, bit_depth: int):
        self.names, self.transform, self.swap = names, transform, direction == "BtoA"
        self.in_channels, self.out_channels, self.bit_depth = in_channels, out_channels, bit_depth
        # Examples may differ in size (data.preprocess keeps each image's proportions): evaluation
        # and the sample grid take them one at a time (cgan_kit.data.eval_loader).
        self.sizes_vary = transform.sizes_vary

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images A and B of example ``index``, (C, H, W) in [0, 1]."""
        raise NotImplementedError

    def describe(self, index: int, side: str) -> str:
        """Which file holds image ``side`` ("A" or "B") of example ``index``, for error messages."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        item = self.decoded(index)
        if self.transform.augment:  # the random crop and flip, from torch's global generator
            item["input"], item["target"] = self.transform.crop_flip(
                item["input"], item["target"], *self.transform.draw(*item["input"].shape[-2:]))
        return {**item, "name": self.names[index]}

    # The device cache's protocol (cgan_kit.data.DeviceCache): the deterministic part of an item,
    # and its random part applied to a batch wherever that batch lives. __getitem__ is built from
    # the same two parts, so the cache gives exactly the tensors the DataLoader gives.

    def decoded(self, index: int) -> dict[str, torch.Tensor]:
        """Example ``index`` before its random crop and flip: resized, converted and scaled to [-1, 1]."""
        a, b = self.read(index)
        source, target = self.transform.prepare(*((b, a) if self.swap else (a, b)),
                                                name=self.describe(index, "B" if self.swap else "A"))
        return {"input": to_channels(source, self.in_channels) * 2 - 1,
                "target": to_channels(target, self.out_channels) * 2 - 1}

    def augment_batch(self, batch: dict[str, torch.Tensor], seeds: list[int]) -> dict[str, torch.Tensor]:
        """The crops and flips ``__getitem__`` would draw under each example's seed, applied on the
        batch's own device."""
        if not self.transform.augment:
            return batch
        height, width = batch["input"].shape[-2:]
        pairs = [self.transform.crop_flip(batch["input"][i], batch["target"][i],
                                          *self.transform.draw(height, width, torch.Generator().manual_seed(seed)))
                 for i, seed in enumerate(seeds)]
        return {"input": torch.stack([a for a, _ in pairs]), "target": torch.stack([b for _, b in pairs])}


class _SideBySide(_PairedImages):
    def __init__(self, files: list[Path], **kwargs):
        super().__init__([file.stem for file in files], **kwargs)
        self.files = files

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.files[index])
        width = image.shape[-1]
        if width < 2:
            raise CganError(f'image "{self.files[index]}" is {width} pixel wide: it cannot hold A and B side by '
                            "side; replace or remove it")
        return image[..., :width // 2], image[..., width // 2:]

    def describe(self, index: int, side: str) -> str:
        return f'the {"left" if side == "A" else "right"} half (image {side}) of image "{self.files[index]}"'


class _FilePairs(_PairedImages):
    def __init__(self, pairs: list[tuple[Path, Path]], **kwargs):
        super().__init__([a.stem for a, _ in pairs], **kwargs)
        self.pairs = pairs

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.pairs[index]
        return read_image(a), read_image(b)

    def describe(self, index: int, side: str) -> str:
        return f'image "{self.pairs[index][0 if side == "A" else 1]}"'


def aligned(split: Split, augment: bool, root: str, direction: Direction = "AtoB", load_size: Side = 286,
            crop_size: Side = 256, flip: bool = True, in_channels: Channels = 3, out_channels: Channels = 3,
            preprocess: Preprocess = "resize_and_crop") -> Dataset:
    """Pairs stored side by side in one image, A left and B right (the pix2pix release layout).

    Each image in root/<split>/ is one example; its left half (the narrower one for an odd width)
    is A. By default training resizes both halves to a load_size square (bicubic), crops the same
    random crop_size square from both and mirrors both at random; evaluation resizes straight to
    crop_size. preprocess offers the reference code's other choices, for images that should not
    be stretched to a square. Both halves always get the same geometry: the input's (where the
    halves differ in size, by a pixel for an odd width, the target is first resized to the
    input's size, except in "resize_and_crop", which stretches both to one square). Images of any
    size reach the generator: it pads them up to a multiple of its stride (a U-Net of depth d:
    2**d, never below one stride) and crops the output back, so a depth-8 U-Net pads a 64 px crop
    to 256 px; sizes that are multiples of the stride waste nothing. 8- and 16-bit grey, RGB and
    RGBA images are read exactly, then converted to the channel counts asked for.

    Args:
        root: Folder with one subfolder of images per split: train/, test/ and, optionally, val/.
        direction: "AtoB" maps the left half to the right one; "BtoA" the right to the left
            (facades: labels to photos).
        load_size: The size images are resized to before the random crop, in training: the side of
            the square ("resize_and_crop") or the width ("scale_width", "scale_width_and_crop"); other
            modes ignore it.
        crop_size: Side of the square crop the models see (for "scale_width": the width in
            evaluation, and the least height).
        flip: Mirror each training pair left-right half of the time (in every preprocess mode).
        in_channels: Channels of the input: 1 (grey), 3 (RGB) or 4 (RGBA).
        out_channels: Channels of the target: 1 (grey), 3 (RGB) or 4 (RGBA).
        preprocess: "resize_and_crop": training resizes to a load_size square (stretching) and takes
            a random crop_size square; evaluation resizes straight to crop_size. "crop": no resize;
            training takes a random crop_size square, evaluation the centre one (an image smaller than
            crop_size is an error). "scale_width": training resizes the width to load_size,
            evaluation to crop_size, keeping the aspect ratio (the height at least crop_size), no crop.
            "scale_width_and_crop": training scales the width to load_size likewise and takes a random
            crop_size square; evaluation scales the width to crop_size and takes the centre square.
            "none": the images as they are. With "scale_width" (mixed aspect ratios) and "none",
            examples differ in size: train with train.batch_size = 1; evaluation takes them one at a
            time.
    """
    transform = _transform(load_size, crop_size, flip, augment, preprocess)
    folder = _split_folder(root, split)
    files = list_images(folder)
    if not files:
        hint = ("; it has A/ and B/ folders: use type = \"paired_folders\""
                if (folder / "A").is_dir() and (folder / "B").is_dir() else "")
        raise CganError(f"data.root: {_no_images(folder)}{hint}")
    return _SideBySide(files, transform=transform, direction=direction, in_channels=in_channels,
                       out_channels=out_channels, bit_depth=read_bit_depth(files[0]))


def paired_folders(split: Split, augment: bool, root: str, direction: Direction = "AtoB", load_size: Side = 286,
                   crop_size: Side = 256, flip: bool = True, in_channels: Channels = 3,
                   out_channels: Channels = 3, preprocess: Preprocess = "resize_and_crop") -> Dataset:
    """Pairs stored as separate images in A and B folders, matched by file name without extension.

    Each split lives in root/<split>/A/ and root/<split>/B/, or in root/<split>A/ and
    root/<split>B/ (the CycleGAN release layout). A split-less root/A/ is refused: training and
    evaluation would see the same images. 12.png in A pairs with 12.jpg in B; an image without a
    partner is an error. Preprocessing is that of aligned. A and B may differ in size: the input
    image sets the geometry, and a target of another size is first resized (bicubic) to the
    input's size, so the crop and flip cut the same part of both ("resize_and_crop" stretches
    both to one square whatever their sizes).

    Args:
        root: Folder holding, per split, A and B folders: train/A/ and train/B/ (or trainA/ and trainB/).
        direction: "AtoB" maps A images to B images; "BtoA" B to A.
        load_size: The size images are resized to before the random crop, in training: the side of
            the square ("resize_and_crop") or the width ("scale_width", "scale_width_and_crop"); other
            modes ignore it.
        crop_size: Side of the square crop the models see (for "scale_width": the width in
            evaluation, and the least height).
        flip: Mirror each training pair left-right half of the time (in every preprocess mode).
        in_channels: Channels of the input: 1 (grey), 3 (RGB) or 4 (RGBA).
        out_channels: Channels of the target: 1 (grey), 3 (RGB) or 4 (RGBA).
        preprocess: "resize_and_crop" (stretch to a load_size square, random crop_size crop), "crop",
            "scale_width", "scale_width_and_crop" or "none", each as `cgan describe dataset aligned`
            details (train and evaluation). "scale_width" and "none" keep each image's size: train
            with train.batch_size = 1.
    """
    transform = _transform(load_size, crop_size, flip, augment, preprocess)
    folder_a, folder_b = _ab_folders(root, split)
    pairs = _match(folder_a, folder_b)
    target = pairs[0][0 if direction == "BtoA" else 1]
    return _FilePairs(pairs, transform=transform, direction=direction, in_channels=in_channels,
                      out_channels=out_channels, bit_depth=read_bit_depth(target))


def synthetic(split: Split, augment: bool, size: Annotated[int, Range(ge=8, le=4096)] = 64,
              length: Annotated[int, Range(ge=1, le=10**8)] = 1000, seed: Annotated[int, Range(ge=0)] = 0,
              in_channels: Channels = 3, out_channels: Channels = 3, flip: bool = True) -> Dataset:
    """Procedural shapes: label maps of rectangles, ellipses and triangles to shaded renderings.

    Made on the fly, with no files: each example is a function of (seed, split, index), and the
    splits never share one. The target is a deterministic, local function of the input, learnable
    by a small U-Net in about a thousand steps at 32 to 64 pixels on a CPU.

    Args:
        size: Side of the square images, in pixels.
        length: Examples in the train split; val and test have a quarter as many (at least one).
        seed: Chooses the examples; another seed gives other examples.
        in_channels: Channels of the input label map: 1 (grey), 3 (RGB) or 4 (RGBA).
        out_channels: Channels of the target rendering: 1 (grey), 3 (RGB) or 4 (RGBA).
        flip: Mirror each training pair left-right half of the time.
    """
    count = length if split == "train" else max(1, length // 4)
    return Shapes(split, count, size, seed, in_channels, out_channels, flip and augment)


@hookimpl
def register_datasets(register):
    register("aligned", aligned)
    register("paired_folders", paired_folders)
    register("synthetic", synthetic)


def _transform(load_size: int, crop_size: int, flip: bool, augment: bool,
               preprocess: Preprocess = "resize_and_crop") -> PairTransform:
    problem = load_size_fits(preprocess, load_size, crop_size)
    if problem:
        raise ArgumentError(problem)
    return PairTransform(load_size, crop_size, flip and augment, augment, preprocess)


def _root(root: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        release = release_for(path)
        if release is not None:
            raise CganError(f'data.root: folder "{path}" does not exist; fetch the {release.name} release with '
                            f"`cgan data download {release.name} --dir {path.parent}`, or point data.root at "
                            "your copy (relative paths start from the current directory)")
        raise CganError(f'data.root: folder "{path}" does not exist; check the path (relative paths start '
                        "from the current directory)")
    if not path.is_dir():
        raise CganError(f'data.root: "{path}" is a file, not a folder; name the folder holding the splits')
    return path


def _split_folder(root: str, split: str) -> Path:
    base = _root(root)
    folder = base / split
    if not folder.is_dir():
        present = [f"{name}/" for name in SPLITS if (base / name).is_dir()]
        raise CganError(f'data.root: folder "{base}" has no {split}/ folder ({_splits_present(present)}); '
                        f"put the {split} images in {folder}")
    return folder


def _ab_folders(root: str, split: str) -> tuple[Path, Path]:
    base = _root(root)
    layouts = {name: ((base / name / "A", base / name / "B"), (base / f"{name}A", base / f"{name}B"))
               for name in SPLITS}
    for folder_a, folder_b in layouts[split]:
        if folder_a.is_dir() and folder_b.is_dir():
            return folder_a, folder_b
    present = [f"{a.relative_to(base)}/ and {b.relative_to(base)}/" for name in SPLITS
               for a, b in layouts[name] if a.is_dir() and b.is_dir()]
    if (base / "A").is_dir() and (base / "B").is_dir():
        hint = f"; its A/ and B/ belong to no split: move them to {split}/A/ and {split}/B/, keeping others apart"
    elif (base / split).is_dir() and list_images(base / split):
        hint = "; it holds images directly: use type = \"aligned\""
    else:
        hint = ""
    raise CganError(f'data.root: folder "{base}" has neither {split}/A/ with {split}/B/ nor {split}A/ with '
                    f"{split}B/ ({_splits_present(present)}){hint}")


def _match(folder_a: Path, folder_b: Path) -> list[tuple[Path, Path]]:
    """The images of two folders paired by stem, in the natural order of A's names."""
    by_stem = []
    for folder in (folder_a, folder_b):
        files = list_images(folder)
        if not files:
            raise CganError(f"data.root: {_no_images(folder)}")
        stems: dict[str, Path] = {}
        for file in files:
            if file.stem in stems:
                raise CganError(f'data.root: folder "{folder}" holds both {stems[file.stem].name} and {file.name}, '
                                "which pair with the same partner; keep one")
            stems[file.stem] = file
        by_stem.append(stems)
    a, b = by_stem
    problems = [f'{len(alone)} image(s) in "{mine}" have no partner in "{other}" ({_few(alone)})'
                for mine, other, alone in ((folder_a, folder_b, [p.name for s, p in a.items() if s not in b]),
                                           (folder_b, folder_a, [p.name for s, p in b.items() if s not in a]))
                if alone]
    if problems:
        raise CganError(f"data.root: A and B images pair by file name without extension, but {'; '.join(problems)}; "
                        "rename or remove them")
    return [(path, b[stem]) for stem, path in a.items()]


def _no_images(folder: Path) -> str:
    return f'folder "{folder}" holds no images ({", ".join(IMAGE_SUFFIXES)}); put the split\'s images there'


def _splits_present(present: list[str]) -> str:
    return f"it has {', '.join(present)}" if present else "nor any other split"


def _few(names: list[str]) -> str:
    more = f", and {len(names) - _FEW} more" if len(names) > _FEW else ""
    return ", ".join(names[:_FEW]) + more
