"""data.preprocess: the reference code's resize/crop choices for aligned, paired_folders and
unaligned data, on real non-square image files: sizes in training and evaluation, crops inside the
image and the same for both sides of a pair, flips, determinism, the device cache, images of
varying sizes (one-line refusal of batches, one-at-a-time evaluation, the padded sample grid) and
whole runs through the CLI."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cgan_kit.cli.main import cli
from cgan_kit.data import DeviceCache, EpochBatches, SeededItems, collate, eval_loader, train_loader
from cgan_kit.errors import ArgumentError, CganError
from cgan_kit.images import read_image
from cgan_kit.outputs.samples import rows_grid
from cgan_kit.plugin_api.contracts import Column
from cgan_cyclegan.datasets import unaligned
from cgan_pix2pix.datasets import aligned, paired_folders
from cgan_pix2pix.transforms import resize, scale_width

MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
WIDE, TALL = (200, 300), (300, 200)  # (height, width) of one side of a pair
LOAD, CROP = 72, 64
SEEDS = range(12)
CPU = torch.device("cpu")


def coded(height: int, width: int) -> np.ndarray:
    """An 8-bit RGB image whose pixels spell their own position: red and green the column and row
    modulo 256, blue their multiples of 256. Any crop, and any flip of it, can be located exactly."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, 40 + x // 256 + 2 * (y // 256)], -1).astype(np.uint8)


def locate(crop: torch.Tensor) -> tuple[int, int, bool]:
    """Where a crop of a ``coded`` image (an item tensor in [-1, 1]) came from: (top, left, flipped)."""
    pixels = to_uint8(crop).astype(int)
    x0 = pixels[0, 0, 0] + 256 * ((pixels[0, 0, 2] - 40) % 2)
    y0 = pixels[0, 0, 1] + 256 * ((pixels[0, 0, 2] - 40) // 2)
    x1 = pixels[0, 1, 0] + 256 * ((pixels[0, 1, 2] - 40) % 2)
    flipped = x1 < x0
    return int(y0), int(x0 - (crop.shape[-1] - 1) if flipped else x0), bool(flipped)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """An item tensor in [-1, 1] back to (H, W, C) 8-bit values."""
    return np.rint((tensor.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)


def as_item(image: np.ndarray) -> torch.Tensor:
    """An 8-bit (H, W, C) array as a dataset item tensor would hold it."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255 * 2 - 1


def same_side_pairs(root: Path, splits=("train", "test")) -> dict[str, np.ndarray]:
    """Side-by-side files whose two halves are the same coded image: a wide one and a tall one."""
    images = {"wide": coded(*WIDE), "tall": coded(*TALL)}
    for split in splits:
        (root / split).mkdir(parents=True)
        for name, image in images.items():
            Image.fromarray(np.concatenate([image, image], 1)).save(root / split / f"{name}.png")
    return images


def ab_folders(root: Path, splits=("train", "test"), b_scale: int = 1) -> dict[str, np.ndarray]:
    """root/<split>A/ and root/<split>B/ holding the same coded images (B ``b_scale`` times larger)."""
    images = {"wide": coded(*WIDE), "tall": coded(*TALL)}
    for split in splits:
        for side in "AB":
            (root / f"{split}{side}").mkdir(parents=True)
            for name, image in images.items():
                picture = Image.fromarray(image)
                if side == "B" and b_scale != 1:
                    picture = picture.resize((image.shape[1] * b_scale, image.shape[0] * b_scale), Image.BICUBIC)
                picture.save(root / f"{split}{side}" / f"{name}.png")
    return images


def build(kind: str, root: Path, augment: bool, preprocess: str, split: str = "train", **params):
    params = {"load_size": LOAD, "crop_size": CROP, "preprocess": preprocess, **params}
    if kind == "aligned":
        return aligned(split, augment, str(root), **params)
    if kind == "paired_folders":
        return paired_folders(split, augment, str(root), **params)
    return unaligned(split, augment, str(root), **params)


def make(kind: str, root: Path) -> dict[str, np.ndarray]:
    return same_side_pairs(root) if kind == "aligned" else ab_folders(root)


def sides(kind: str) -> tuple[str, str]:
    return ("A", "B") if kind == "unaligned" else ("input", "target")


def scaled_height(height: int, width: int, target: int) -> int:
    return int(max(target * height / width, CROP))


def expected_shape(preprocess: str, augment: bool, height: int, width: int) -> tuple[int, int]:
    if preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
        return CROP, CROP
    if preprocess == "scale_width":  # the width to load_size in training, crop_size in evaluation
        target = LOAD if augment else CROP
        return scaled_height(height, width, target), target
    return height, width


# --- shapes, determinism, the documented geometry ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["aligned", "paired_folders", "unaligned"])
@pytest.mark.parametrize("preprocess", MODES)
def test_each_mode_gives_its_sizes_in_training_and_evaluation(tmp_path, kind, preprocess):
    images = make(kind, tmp_path)
    first, second = sides(kind)
    for augment in (True, False):
        dataset = build(kind, tmp_path, augment, preprocess)
        assert dataset.sizes_vary == (preprocess in ("scale_width", "none"))
        seeded = SeededItems(dataset)
        for index in range(2):
            item = seeded[(index, 5)]
            height, width = images[item["name"]].shape[:2]
            want = expected_shape(preprocess, augment, height, width)
            assert tuple(item[first].shape) == (3, *want), (preprocess, augment, item["name"])
            if kind != "unaligned":  # a pair: both sides alike
                assert item[second].shape == item[first].shape
            else:  # a partner from the other domain, preprocessed alike
                assert tuple(item[second].shape[1:]) in {expected_shape(preprocess, augment, *image.shape[:2])
                                                         for image in images.values()}
        if not augment:  # evaluation: deterministic, whatever the global generator says
            torch.manual_seed(1)
            once = dataset[0]
            torch.manual_seed(2)
            again = dataset[0]
            assert all(torch.equal(once[key], again[key]) for key in (first, second))


@pytest.mark.parametrize("kind", ["aligned", "paired_folders"])
@pytest.mark.parametrize("preprocess", ["crop", "none"])
def test_crops_lie_inside_the_image_and_are_the_same_for_input_and_target(tmp_path, kind, preprocess):
    images = make(kind, tmp_path)
    seeded = SeededItems(build(kind, tmp_path, True, preprocess))
    positions, flips = set(), set()
    for index in range(2):
        for seed in SEEDS:
            item = seeded[(index, seed)]
            original = images[item["name"]]
            top, left, flipped = locate(item["input"])
            size = item["input"].shape[-2:]
            assert 0 <= top and top + size[0] <= original.shape[0] and 0 <= left and left + size[1] <= original.shape[1]
            manual = original[top:top + size[0], left:left + size[1]]
            manual = manual[:, ::-1] if flipped else manual
            assert np.array_equal(to_uint8(item["input"]), manual)  # exactly the manual crop
            assert torch.equal(item["input"], item["target"])  # the target cut and mirrored alike
            positions.add((item["name"], top, left))
            flips.add(flipped)
    assert flips == {True, False}  # flip as always, in every mode
    if preprocess == "crop":
        assert len(positions) > 10  # random corners
    else:
        assert positions == {("tall", 0, 0), ("wide", 0, 0)}  # the whole image


@pytest.mark.parametrize("kind", ["aligned", "paired_folders", "unaligned"])
def test_evaluation_crops_the_centre_without_flipping(tmp_path, kind):
    images = make(kind, tmp_path)
    dataset = build(kind, tmp_path, False, "crop")
    for index in range(len(dataset)):
        item = dataset[index]
        height, width = images[item["name"]].shape[:2]
        for key in sides(kind):
            assert locate(item[key]) == ((height - CROP) // 2, (width - CROP) // 2, False)


def _windows(image: torch.Tensor, crop: torch.Tensor) -> list[tuple[int, int, bool]]:
    """Every (top, left, flipped) at which ``crop`` is an exact window of ``image``."""
    found = []
    size = crop.shape[-1]
    for flipped in (False, True):
        wanted = crop.flip(-1) if flipped else crop
        for top in range(image.shape[-2] - size + 1):
            for left in range(image.shape[-1] - size + 1):
                if torch.equal(image[..., top:top + size, left:left + size], wanted):
                    found.append((top, left, flipped))
    return found


@pytest.mark.parametrize("kind", ["aligned", "paired_folders"])
def test_scale_width_keeps_the_aspect_ratio_and_scale_width_and_crop_cuts_from_it(tmp_path, kind):
    images = make(kind, tmp_path)
    for augment in (True, False):
        seeded = SeededItems(build(kind, tmp_path, augment, "scale_width"))
        for index in range(2):
            item = seeded[(index, 3)]
            source = torch.from_numpy(images[item["name"]]).permute(2, 0, 1).float() / 255
            height, width = source.shape[-2:]
            # The reference's rule: width = load_size (training; crop_size at test time),
            # height = int(max(width * h / w, crop_size)).
            target = LOAD if augment else CROP
            assert item["input"].shape[-2:] == (scaled_height(height, width, target), target)
            if height > width:  # the tall image keeps its proportions exactly
                assert item["input"].shape[-2] / target == height / width
            manual = scale_width(source, target, CROP) * 2 - 1
            assert torch.equal(item["input"], manual) or (augment and torch.equal(item["input"], manual.flip(-1)))
            assert torch.equal(item["input"], item["target"])
    seeded = SeededItems(build(kind, tmp_path, True, "scale_width_and_crop"))
    corners = set()
    for index in range(2):
        for seed in range(4):
            item = seeded[(index, seed)]
            source = torch.from_numpy(images[item["name"]]).permute(2, 0, 1).float() / 255
            scaled = scale_width(source, LOAD, CROP) * 2 - 1  # training scales the width to load_size
            found = _windows(scaled, item["input"])
            assert found, "the crop is not a window of the image scaled to load_size"
            assert torch.equal(item["input"], item["target"])
            corners.update((item["name"], *where) for where in found)
    assert len(corners) > 2
    evaluation = build(kind, tmp_path, False, "scale_width_and_crop")
    for index in range(2):
        item = evaluation[index]
        source = torch.from_numpy(images[item["name"]]).permute(2, 0, 1).float() / 255
        scaled = scale_width(source, CROP, CROP) * 2 - 1
        top, left = (scaled.shape[-2] - CROP) // 2, (scaled.shape[-1] - CROP) // 2
        assert torch.equal(item["input"], scaled[:, top:top + CROP, left:left + CROP])


def test_paired_folders_resize_a_target_of_another_size_to_its_input(tmp_path):
    images = ab_folders(tmp_path, splits=("train",), b_scale=2)  # B twice as large as A
    for preprocess in ("crop", "none", "scale_width"):
        seeded = SeededItems(build("paired_folders", tmp_path, True, preprocess))
        for index in range(2):
            item = seeded[(index, 4)]
            assert item["target"].shape == item["input"].shape
            if preprocess == "scale_width":
                continue
            top, left, flipped = locate(item["input"])
            assert np.array_equal(to_uint8(item["input"]),
                                  (lambda c: c[:, ::-1] if flipped else c)(
                                      images[item["name"]][top:top + item["input"].shape[-2],
                                                           left:left + item["input"].shape[-1]]))
            b = read_image(tmp_path / "trainB" / f"{item['name']}.png")
            b = resize(b, images[item["name"]].shape[:2]) * 2 - 1  # B on A's grid, then A's crop and flip
            b = b[:, top:top + item["input"].shape[-2], left:left + item["input"].shape[-1]]
            assert torch.equal(item["target"], b.flip(-1) if flipped else b)
    # BtoA: B is the input now and sets the geometry; A is resized to B's size.
    item = build("paired_folders", tmp_path, False, "none", direction="BtoA")[0]
    assert item["input"].shape[-2:] == tuple(2 * side for side in images[item["name"]].shape[:2])
    assert item["target"].shape == item["input"].shape


def test_unaligned_domains_draw_their_own_crops(tmp_path):
    images = {"wide": coded(*WIDE)}
    for folder in ("trainA", "trainB"):
        (tmp_path / folder).mkdir()
        Image.fromarray(images["wide"]).save(tmp_path / folder / "wide.png")
    seeded = SeededItems(build("unaligned", tmp_path, True, "crop"))
    draws = [(locate(seeded[(0, seed)]["A"]), locate(seeded[(0, seed)]["B"])) for seed in SEEDS]
    assert any(a != b for a, b in draws)  # not one crop for both domains
    assert draws == [(locate(seeded[(0, seed)]["A"]), locate(seeded[(0, seed)]["B"])) for seed in SEEDS]


def test_an_unaligned_paired_test_split_keeps_its_pairs_pixel_for_pixel(tmp_path):
    (tmp_path / "test").mkdir()
    image = np.concatenate([coded(40, 31), coded(40, 32)], 1)  # an odd width: B one column wider
    Image.fromarray(image).save(tmp_path / "test" / "odd.png")
    for preprocess in ("none", "scale_width"):
        test = build("unaligned", tmp_path, False, preprocess, split="test", layout="side_by_side", crop_size=16)
        item = test[0]
        assert test.paired and item["A"].shape == item["B"].shape


def test_flip_false_never_mirrors(tmp_path):
    same_side_pairs(tmp_path)
    seeded = SeededItems(build("aligned", tmp_path, True, "none", flip=False))
    assert all(locate(seeded[(i, seed)]["input"])[2] is False for i in range(2) for seed in SEEDS)


# --- refusals ----------------------------------------------------------------------------------------------

def test_an_image_smaller_than_the_crop_is_one_line_naming_it(tmp_path):
    same_side_pairs(tmp_path)
    for augment in (True, False):
        dataset = build("aligned", tmp_path, augment, "crop", crop_size=250, load_size=16)
        with pytest.raises(CganError) as caught:
            SeededItems(dataset)[(1, 0)]
        message = str(caught.value)
        assert "\n" not in message
        for fragment in ("wide.png", "300x200 pixels", "data.crop_size = 250", "lower crop_size"):
            assert fragment in message, message
    ab_folders(tmp_path / "u", splits=("train",))
    with pytest.raises(CganError, match=r'image ".*trainA.wide\.png" is 300x200'):
        SeededItems(build("unaligned", tmp_path / "u", True, "crop", crop_size=250))[(1, 0)]


@pytest.mark.parametrize("kind", ["aligned", "paired_folders", "unaligned"])
def test_load_size_only_matters_where_the_mode_resizes_to_it(tmp_path, kind):
    make(kind, tmp_path)
    for preprocess in MODES:
        if preprocess in ("resize_and_crop", "scale_width", "scale_width_and_crop"):
            with pytest.raises(ArgumentError, match="data.crop_size: 64 is larger than data.load_size = 32"):
                build(kind, tmp_path, True, preprocess, load_size=32)
        else:
            build(kind, tmp_path, True, preprocess, load_size=32)


def test_a_batch_of_examples_of_different_sizes_is_one_line_naming_two(tmp_path):
    same_side_pairs(tmp_path)
    dataset = build("aligned", tmp_path, True, "none")
    with pytest.raises(CganError) as caught:
        next(iter(train_loader(dataset, 2, seed=0, start_batch=0, workers=0, device=CPU)))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in ('example "tall"', 'example "wide"', "300x200 pixels", "200x300 pixels", "train.batch_size = 1",
                     '"resize_and_crop"'):
        assert fragment in message, message
    same = [{"input": torch.zeros(3, 4, 5), "name": "a"}, {"input": torch.ones(3, 4, 5), "name": "b"}]
    assert torch.equal(collate(same)["input"], torch.utils.data.default_collate(same)["input"])


# --- the device cache, evaluation and the sample grid with varying sizes --------------------------------------

@pytest.mark.parametrize("preprocess", MODES)
def test_the_device_cache_gives_the_loaders_batches_where_sizes_agree(tmp_path, preprocess):
    (tmp_path / "train").mkdir()
    for i in range(4):  # all wide: one size, whatever the mode
        Image.fromarray(np.concatenate([coded(*WIDE)] * 2, 1)[:, ::(1 if i % 2 else -1)].copy()).save(
            tmp_path / "train" / f"{i}.png")
    dataset = build("aligned", tmp_path, True, preprocess)
    loader = iter(train_loader(dataset, 2, seed=3, start_batch=1, workers=0, device=CPU))
    cached = DeviceCache(dataset, CPU).batches(EpochBatches(len(dataset), 2, seed=3, start_batch=1))
    for _ in range(3):
        expected, got = next(loader), next(cached)
        assert torch.equal(expected["input"], got["input"]) and torch.equal(expected["target"], got["target"])


def test_the_device_cache_refuses_varying_sizes_in_one_line(tmp_path):
    same_side_pairs(tmp_path)
    with pytest.raises(CganError) as caught:
        DeviceCache(build("aligned", tmp_path, True, "none"), CPU)
    assert "\n" not in str(caught.value) and 'data_cache = "none"' in str(caught.value)


def test_evaluation_takes_varying_sizes_one_at_a_time_and_the_grid_pads_them(tmp_path):
    same_side_pairs(tmp_path)
    varying = build("aligned", tmp_path, False, "none", split="test")
    batches = list(eval_loader(varying, 8, 8, 0, CPU))
    assert [tuple(b["input"].shape) for b in batches] == [(1, 3, 300, 200), (1, 3, 200, 300)]
    assert len(list(eval_loader(build("aligned", tmp_path, False, "crop", split="test"), 8, 8, 0, CPU))) == 1
    groups = [[Column("in", b["input"]), Column("critic", torch.rand(1, 1, 3, 3), "critic")] for b in batches]
    grid = rows_grid(groups)
    assert grid.shape == (3, 2 * 300 + 2, 2 * 300 + 2)  # tiles padded to the largest, 2 px lines


# --- through the command line -------------------------------------------------------------------------------

PIX2PIX = """
[data]
type = "{data}"
root = "{root}"
load_size = 36
crop_size = 32
preprocess = "{preprocess}"

[generator]
type = "unet"
depth = 3
ngf = 8

[critic]
type = "patchgan"
n_layers = 2
ndf = 8

[[losses]]
type = "{adversarial}"
{more}
[train]
steps = 3
batch_size = 1
log_every = 1
sample_every = 3
checkpoint_every = 3
eval_every = 3
eval_images = 3
eval_fid = "off"
precision = "fp32"
workers = 0
out_dir = "{runs}"
"""
L1 = '\n[[losses]]\ntype = "l1"\nweight = 100.0\n'
CYCLEGAN = '[method]\ntype = "cyclegan"\n'


SHAPES = [(24, 36), (36, 24), (24, 36)]  # (height, width) of each example's images; B 4 px higher (unaligned)


def small_data(root: Path, kind: str, shapes: list[tuple[int, int]] = SHAPES) -> None:
    """Non-square images of two shapes, side by side (aligned) or in domains (unaligned)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i, (height, width) in enumerate(shapes):
            if kind == "aligned":
                (root / split).mkdir(parents=True, exist_ok=True)
                image = rng.integers(0, 256, (height, 2 * width, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / f"{i}.png")
            else:
                for side in "AB":
                    (root / f"{split}{side}").mkdir(parents=True, exist_ok=True)
                    image = rng.integers(0, 256, (height + (side == "B") * 4, width, 3), dtype=np.uint8)
                    Image.fromarray(image).save(root / f"{split}{side}" / f"{i}.png")


def recipe(tmp_path: Path, method: str, preprocess: str, shapes: list[tuple[int, int]] = SHAPES) -> Path:
    kind = "aligned" if method == "pix2pix" else "unaligned"
    small_data(tmp_path / "data", kind, shapes)
    text = PIX2PIX.format(data=kind, root=(tmp_path / "data").as_posix(), preprocess=preprocess,
                          adversarial="bce" if method == "pix2pix" else "lsgan",
                          more=L1 if method == "pix2pix" else "", runs=(tmp_path / "runs").as_posix())
    path = tmp_path / f"{method}_{preprocess}.toml"
    path.write_text((CYCLEGAN if method == "cyclegan" else "") + text)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("method", ["pix2pix", "cyclegan"])
@pytest.mark.parametrize("preprocess", ["none", "scale_width"])
def test_a_run_trains_evaluates_and_draws_samples_of_varying_sizes(tmp_path, method, preprocess):
    code, output = invoke("run", str(recipe(tmp_path, method, preprocess)))
    assert code == 0, output
    run = tmp_path / "runs" / f"{method}_{preprocess}"
    assert (run / "checkpoints" / "step_00000003.safetensors").is_file()
    grid = Image.open(run / "samples" / "step_00000003.png")
    shown = SHAPES + ([(height + 4, width) for height, width in SHAPES] if method == "cyclegan" else [])
    if preprocess == "scale_width":  # 32 wide, the aspect ratio kept (at least 32 high)
        shown = [(int(max(32 * height / width, 32)), 32) for height, width in shown]
    tile = max(height for height, _ in shown)  # every tile padded to the largest
    assert grid.height == 3 * tile + 2 * 2  # three test examples, 2 px lines
    lines = [line for line in output.splitlines() if "evaluation:" in line]
    assert lines and "nan" not in lines[-1]
    # `cgan eval` measures the run on the same images, one at a time where their sizes differ.
    code, output = invoke("eval", str(run), "--no-fid", "--json")
    assert code == 0, output
    report = json.loads(output.splitlines()[-1])
    assert report["images"] == 3 and ("l1" in report if method == "pix2pix" else "cycle_l1" in report)


def test_a_batch_of_two_sizes_stops_the_run_with_one_line(tmp_path):
    code, output = invoke("run", str(recipe(tmp_path, "pix2pix", "none", shapes=[(24, 36), (36, 24)])),
                          "--set", "train.batch_size=2")
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert "24x36 pixels" in errors[0] and "36x24 pixels" in errors[0] and "train.batch_size = 1" in errors[0]


def test_a_misspelt_mode_is_one_line_listing_the_choices(tmp_path):
    code, output = invoke("check", str(recipe(tmp_path, "pix2pix", "none")), "--set", 'data.preprocess="scale"')
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data.preprocess" in errors[0] and 'did you mean "scale_width"?' in errors[0], output


def test_check_warns_where_the_generator_pads_a_small_crop_and_not_where_it_fits(tmp_path):
    path = recipe(tmp_path, "pix2pix", "resize_and_crop")
    sets = ["--set", "generator.depth=8", "--set", "data.load_size=64"]
    code, output = invoke("check", str(path), *sets, "--set", "data.crop_size=64", "--json")
    assert code == 0, output
    warnings = json.loads(output[output.index("{"):])["warnings"]
    assert len(warnings) == 1
    assert "the 64 px crop is padded to 256 px" in warnings[0] and "multiple of 256" in warnings[0]
    code, output = invoke("check", str(path), *sets, "--set", "generator.depth=5", "--set", "data.crop_size=64",
                          "--json")
    assert code == 0 and json.loads(output[output.index("{"):])["warnings"] == [], output
    # Where sizes vary there is no one crop to judge.
    code, output = invoke("check", str(recipe(tmp_path, "pix2pix", "none")), *sets, "--json")
    assert code == 0 and json.loads(output[output.index("{"):])["warnings"] == [], output
