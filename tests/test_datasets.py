"""The built-in datasets: layouts, pairing, preprocessing, errors, the synthetic set and documentation."""

import inspect
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgan_kit.plugin_api import plugins
from cgan_kit.errors import CganError
from cgan_kit.plugin_api.params import params_of, parse_docstring
from cgan_pix2pix.datasets import aligned, paired_folders, synthetic
from cgan_kit.images import write_image
from conftest import FACADES  # CGAN_FACADES, or ../shared/datasets/facades

needs_facades = pytest.mark.skipif(not (FACADES / "train").is_dir(), reason="facades data set not present")
FACTORIES = {"aligned": aligned, "paired_folders": paired_folders, "synthetic": synthetic}


def marked_pair(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A and B halves whose pixels encode their position: A red + B red = 255, A green = B green (rows),
    blue says which half it is. Any crop or flip applied to one half and not the other breaks these."""
    x = np.linspace(30, 220, width).round().astype(np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(40, 200, height).round().astype(np.uint8)[:, None].repeat(width, 1)
    y = y + np.random.default_rng(seed).integers(0, 10, (height, 1), dtype=np.uint8)  # rows differ per image
    a = np.stack([x, y, np.full_like(x, 50)], -1)
    b = np.stack([255 - x, y, np.full_like(x, 200)], -1)
    return a, b


def side_by_side(folder: Path, count: int = 3, height: int = 24, width: int = 24) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [marked_pair(height, width, i) for i in range(count)]
    for i, (a, b) in enumerate(pairs):
        Image.fromarray(np.concatenate([a, b], 1)).save(folder / f"{i}.png")
    return pairs


def pixels(tensor: torch.Tensor) -> np.ndarray:
    """An item tensor in [-1, 1] back to (H, W, C) 8-bit values."""
    return np.rint((tensor.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)


def check_item(item: dict, in_channels: int, out_channels: int, size: int) -> None:
    assert set(item) == {"input", "target", "name"} and isinstance(item["name"], str)
    for key, channels in (("input", in_channels), ("target", out_channels)):
        tensor = item[key]
        assert tensor.dtype == torch.float32 and tensor.shape == (channels, size, size)
        assert tensor.min() >= -1 and tensor.max() <= 1


# --- aligned ---------------------------------------------------------------------------------------------

def test_aligned_direction_swaps_halves(tmp_path):
    pairs = side_by_side(tmp_path / "test")
    forward = aligned("test", False, str(tmp_path), load_size=24, crop_size=24)
    backward = aligned("test", False, str(tmp_path), direction="BtoA", load_size=24, crop_size=24)
    assert len(forward) == 3 and forward.bit_depth == 8
    assert (forward.in_channels, forward.out_channels) == (3, 3)
    for i, (a, b) in enumerate(pairs):
        check_item(forward[i], 3, 3, 24)
        assert forward[i]["name"] == str(i)
        assert np.array_equal(pixels(forward[i]["input"]), a) and np.array_equal(pixels(forward[i]["target"]), b)
        assert np.array_equal(pixels(backward[i]["input"]), b) and np.array_equal(pixels(backward[i]["target"]), a)


def test_aligned_same_crop_and_flip_for_both_halves(tmp_path):
    side_by_side(tmp_path / "train", count=1, height=20, width=28)  # non-square halves
    data = aligned("train", True, str(tmp_path), load_size=24, crop_size=16)
    corners, flips = set(), set()
    for seed in range(24):
        torch.manual_seed(seed)
        item = data[0]
        check_item(item, 3, 3, 16)
        source, target = (item["input"] + 1) / 2, (item["target"] + 1) / 2
        assert torch.allclose(source[0] + target[0], torch.ones(16, 16), atol=1e-5)  # same columns
        assert torch.allclose(source[1], target[1], atol=1e-6)  # same rows
        corners.add((round(source[0, 0, 0].item(), 3), round(source[1, 0, 0].item(), 3)))
        flips.add(bool(source[0, 0, -1] < source[0, 0, 0]))  # red falls left to right: mirrored
    assert len(corners) > 5 and flips == {True, False}
    unflipped = aligned("train", True, str(tmp_path), load_size=24, crop_size=16, flip=False)
    for seed in range(8):
        torch.manual_seed(seed)
        source = unflipped[0]["input"]
        assert (source[0, :, 1:] >= source[0, :, :-1]).all()


def test_aligned_same_seed_same_crop(tmp_path):
    side_by_side(tmp_path / "train", count=1)
    data = aligned("train", True, str(tmp_path), load_size=30, crop_size=16)
    torch.manual_seed(3)
    first = data[0]
    torch.manual_seed(3)
    assert torch.equal(first["input"], data[0]["input"])


def test_aligned_without_augment_is_deterministic(tmp_path):
    side_by_side(tmp_path / "val", count=1, height=20, width=28)
    data = aligned("val", False, str(tmp_path), load_size=30, crop_size=16)
    torch.manual_seed(0)
    first = data[0]
    torch.manual_seed(1)
    second = data[0]
    check_item(first, 3, 3, 16)
    assert torch.equal(first["input"], second["input"]) and torch.equal(first["target"], second["target"])
    source = (first["input"] + 1) / 2
    assert (source[0, :, 1:] >= source[0, :, :-1]).all()  # never mirrored


def test_aligned_channels(tmp_path):
    side_by_side(tmp_path / "train", count=1)
    data = aligned("train", True, str(tmp_path), load_size=20, crop_size=16, in_channels=1, out_channels=4)
    item = data[0]
    check_item(item, 1, 4, 16)
    assert torch.equal(item["target"][3], torch.ones(16, 16))  # opaque alpha added


@needs_facades
def test_aligned_facades():
    train = aligned("train", True, str(FACADES), direction="BtoA")
    assert len(train) == 400 and train.bit_depth == 8
    torch.manual_seed(0)
    for i in (0, 1, 399):
        check_item(train[i], 3, 3, 256)
    plain = aligned("train", False, str(FACADES), direction="BtoA")
    whole = np.asarray(Image.open(plain.files[5]).convert("RGB"))  # 256 x 512: no resize at crop_size 256
    assert np.array_equal(pixels(plain[5]["input"]), whole[:, 256:])  # BtoA: the label map is the input
    assert np.array_equal(pixels(plain[5]["target"]), whole[:, :256])
    assert len(aligned("test", False, str(FACADES))) == 106
    with pytest.raises(CganError, match=r"has no val/ folder \(it has train/, test/\)"):
        aligned("val", False, str(FACADES))


# --- paired_folders --------------------------------------------------------------------------------------

def write_folders(root: Path, stems_a, stems_b, suffix_b=".png") -> None:
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir(parents=True)
    for i, stem in enumerate(stems_a):
        Image.fromarray(marked_pair(16, 16, i)[0]).save(root / "A" / f"{stem}.png")
    for i, stem in enumerate(stems_b):
        Image.fromarray(marked_pair(16, 16, i)[1]).save(root / "B" / f"{stem}{suffix_b}")


def test_paired_folders_match_by_stem(tmp_path):
    write_folders(tmp_path / "train", ["10", "2", "x"], ["x", "2", "10"], suffix_b=".bmp")
    data = paired_folders("train", False, str(tmp_path), load_size=16, crop_size=16)
    assert [data[i]["name"] for i in range(len(data))] == ["2", "10", "x"]
    for i, stem in enumerate(["2", "10", "x"]):
        a = np.asarray(Image.open(tmp_path / "train" / "A" / f"{stem}.png"))
        b = np.asarray(Image.open(tmp_path / "train" / "B" / f"{stem}.bmp"))
        assert np.array_equal(pixels(data[i]["input"]), a) and np.array_equal(pixels(data[i]["target"]), b)
    backward = paired_folders("train", False, str(tmp_path), direction="BtoA", load_size=16, crop_size=16)
    assert np.array_equal(pixels(backward[0]["input"]), np.asarray(Image.open(tmp_path / "train" / "B" / "2.bmp")))


def test_paired_folders_cyclegan_layout(tmp_path):
    write_folders(tmp_path / "x", ["1", "2"], ["1", "2"])
    (tmp_path / "x" / "A").rename(tmp_path / "testA")
    (tmp_path / "x" / "B").rename(tmp_path / "testB")
    data = paired_folders("test", True, str(tmp_path), load_size=20, crop_size=16)
    check_item(data[1], 3, 3, 16)
    with pytest.raises(CganError, match=r"has neither train/A/ with train/B/ nor trainA/ with trainB/ "
                                        r"\(it has testA/ and testB/\)"):
        paired_folders("train", True, str(tmp_path))


def test_paired_folders_mismatched_names(tmp_path):
    write_folders(tmp_path / "train", ["1", "2", "3", "4", "5"], ["1", "7"])
    with pytest.raises(CganError) as info:
        paired_folders("train", True, str(tmp_path))
    message = str(info.value)
    assert message.startswith("data.root: A and B images pair by file name without extension")
    assert '4 image(s) in "' in message and "(2.png, 3.png, 4.png, and 1 more)" in message
    assert "(7.png)" in message and message.endswith("rename or remove them") and "\n" not in message


def test_paired_folders_duplicate_stems(tmp_path):
    write_folders(tmp_path / "train", ["1"], ["1"])
    Image.new("RGB", (16, 16)).save(tmp_path / "train" / "A" / "1.jpg")
    with pytest.raises(CganError, match=r"holds both 1\.jpg and 1\.png"):
        paired_folders("train", True, str(tmp_path))


def test_paired_folders_16bit_keeps_precision(tmp_path):
    for side in ("A", "B"):
        (tmp_path / "train" / side).mkdir(parents=True)
    ramp = torch.arange(3 * 16 * 16, dtype=torch.float32).view(3, 16, 16) / 65535  # steps of 1/65535
    write_image(tmp_path / "train" / "A" / "0.png", ramp, bit_depth=16)
    write_image(tmp_path / "train" / "B" / "0.png", 1 - ramp, bit_depth=16)
    data = paired_folders("train", False, str(tmp_path), load_size=16, crop_size=16)
    assert data.bit_depth == 16
    item = data[0]
    assert torch.allclose((item["input"] + 1) / 2 * 65535, ramp * 65535, atol=1e-2)
    assert torch.allclose((item["target"] + 1) / 2 * 65535, (1 - ramp) * 65535, atol=1e-2)


# --- errors ----------------------------------------------------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(CganError, match=r'^data\.root: folder ".*nowhere" does not exist'):
        aligned("train", True, str(tmp_path / "nowhere"))
    with pytest.raises(CganError, match=r'^data\.root: folder ".*nowhere" does not exist'):
        paired_folders("train", True, str(tmp_path / "nowhere"))


def test_missing_split_and_empty_folder(tmp_path):
    with pytest.raises(CganError, match=r"has no train/ folder \(nor any other split\)"):
        aligned("train", True, str(tmp_path))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "notes.txt").write_text("no images here")
    with pytest.raises(CganError, match=r'folder ".*train" holds no images \(\.png, \.jpg'):
        aligned("train", True, str(tmp_path))


def test_layout_hints(tmp_path):
    write_folders(tmp_path / "train", ["1"], ["1"])
    with pytest.raises(CganError, match=r'use type = "paired_folders"'):
        aligned("train", True, str(tmp_path))
    side_by_side(tmp_path / "test", count=1)
    with pytest.raises(CganError, match=r'use type = "aligned"'):
        paired_folders("test", True, str(tmp_path))
    write_folders(tmp_path, ["1"], ["1"])  # root/A and root/B: no split
    with pytest.raises(CganError, match=r"its A/ and B/ belong to no split: move them to test/A/ and test/B/"):
        paired_folders("test", True, str(tmp_path))


def test_crop_larger_than_load(tmp_path):
    side_by_side(tmp_path / "train", count=1)
    with pytest.raises(CganError, match=r"data\.crop_size: 32 is larger than data\.load_size = 16"):
        aligned("train", True, str(tmp_path), load_size=16, crop_size=32)


def test_corrupt_image_named_when_read(tmp_path):
    side_by_side(tmp_path / "train", count=2)
    data = (tmp_path / "train" / "1.png").read_bytes()
    (tmp_path / "train" / "1.png").write_bytes(data[:len(data) // 2])
    dataset = aligned("train", True, str(tmp_path), load_size=24, crop_size=16)  # the first image is fine
    dataset[0]
    with pytest.raises(CganError, match=r'image ".*1\.png" is corrupt or truncated'):
        dataset[1]


# --- synthetic -------------------------------------------------------------------------------------------

def test_synthetic_deterministic_and_distinct():
    first, again = synthetic("train", False, size=32, length=8), synthetic("train", False, size=32, length=8)
    other_seed = synthetic("train", False, size=32, length=8, seed=1)
    test = synthetic("test", False, size=32, length=8)
    assert len(first) == 8 and len(test) == 2 and len(synthetic("val", False, length=3)) == 1
    assert first.bit_depth == 8
    for i in range(len(first)):
        item = first[i]
        check_item(item, 3, 3, 32)
        assert torch.equal(item["input"], again[i]["input"]) and torch.equal(item["target"], again[i]["target"])
        assert not torch.equal(item["input"], other_seed[i]["input"])
    assert not torch.equal(first[0]["input"], first[1]["input"])
    for i in range(len(test)):
        assert not torch.equal(test[i]["input"], first[i]["input"]) and test[i]["name"] != first[i]["name"]
    with pytest.raises(IndexError):
        first[8]


def test_synthetic_flip_only_when_augmenting():
    plain, augmented = synthetic("train", False, size=32, length=2), synthetic("train", True, size=32, length=2)
    unflipped = plain[0]
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        item = augmented[0]
        mirrored = torch.equal(item["input"], unflipped["input"].flip(-1))
        assert mirrored or torch.equal(item["input"], unflipped["input"])
        assert torch.equal(item["target"], unflipped["target"].flip(-1) if mirrored else unflipped["target"])
        seen.add(mirrored)
        torch.manual_seed(seed)
        assert torch.equal(plain[0]["input"], unflipped["input"])
    assert seen == {True, False}


@pytest.mark.parametrize("in_channels,out_channels", [(1, 1), (1, 3), (3, 4), (4, 1)])
def test_synthetic_channels(in_channels, out_channels):
    data = synthetic("train", True, size=16, length=2, in_channels=in_channels, out_channels=out_channels)
    check_item(data[1], in_channels, out_channels, 16)
    assert (data.in_channels, data.out_channels) == (in_channels, out_channels)


def test_synthetic_target_follows_input():
    """Equal label maps render equally: the target is a function of the input."""
    data = synthetic("train", False, size=32, length=64)
    renders = {}
    for i in range(len(data)):
        item = data[i]
        key = item["input"].numpy().tobytes()
        assert renders.setdefault(key, item["target"].numpy().tobytes()) == item["target"].numpy().tobytes()
    assert len(renders) == 64


# --- registration and documentation ----------------------------------------------------------------------

@pytest.mark.parametrize("name", FACTORIES)
def test_registered_and_documented(name):
    registry = plugins.registry()
    assert name in registry.names("dataset")
    entry = registry.get("dataset", name)
    assert entry.factory is FACTORIES[name]
    assert [p.name for p in entry.context] == ["split", "augment"]
    factory = FACTORIES[name]
    typing.get_type_hints(factory, include_extras=True)  # every annotation resolves
    summary, _, _ = parse_docstring(factory.__doc__)
    assert summary
    for param in params_of(factory, skip=("split", "augment")):
        assert param.annotation is not inspect.Parameter.empty, (name, param.name)
        assert param.doc, (name, param.name)
        assert param.required == (param.name == "root"), (name, param.name)
        if not param.required:
            assert param.check(param.default)[1] is None, (name, param.name)
    assert {"in_channels", "out_channels"} <= {p.name for p in params_of(factory)}
