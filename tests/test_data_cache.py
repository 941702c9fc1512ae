"""train.data_cache = "device": the split decoded once and augmented where the model runs gives the
very batches the DataLoader gives, so a cached run equals an uncached one bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgan_kit.runs import checkpoint
from cgan_kit.plugin_api import plugins
from cgan_kit.config.build import build_dataset
from cgan_kit.data import DeviceCache, EpochBatches, train_loader
from cgan_kit.config.recipe import load
from conftest import TINY_RECIPE, cgan_one_thread, one_error

# The tiny recipe's networks and training on real image files: colour pairs of odd sizes, the input
# converted to grey, jittered and flipped.
ALIGNED = """
[data]
type = "aligned"
root = "{root}"
direction = "BtoA"
load_size = 38
crop_size = 32
flip = true
in_channels = 1

""" + TINY_RECIPE[TINY_RECIPE.index("[generator]"):] + 'out_dir = "{runs}"\n'


def aligned_data(root: Path, count: int = 6) -> None:
    """Side-by-side RGB pairs of odd sizes (resized to load_size), for train and test."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (30 + i, 2 * (27 + i), 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"{i}.png")


def test_cached_batches_are_the_loaders_batches(tmp_path):
    aligned_data(tmp_path / "data")
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(ALIGNED.format(root=(tmp_path / "data").as_posix(), runs=(tmp_path / "runs").as_posix()))
    registry = plugins.registry()
    dataset = build_dataset(load(recipe_file, [], registry), registry, "train", augment=True)
    cpu = torch.device("cpu")
    loader = iter(train_loader(dataset, 2, seed=3, start_batch=5, workers=0, device=cpu))
    cached = DeviceCache(dataset, cpu).batches(EpochBatches(len(dataset), 2, seed=3, start_batch=5))
    flips = 0
    for _ in range(9):  # across epoch boundaries (3 batches per epoch)
        expected, got = next(loader), next(cached)
        assert got["input"].shape == (2, 1, 32, 32) and got["target"].shape == (2, 3, 32, 32)
        assert torch.equal(expected["input"], got["input"]) and torch.equal(expected["target"], got["target"])
        flips += int(not torch.equal(got["input"], got["input"].flip(-1)))
    assert flips  # real images, really cropped and flipped


def test_a_cached_run_equals_an_uncached_one_and_resumes(tmp_path):
    aligned_data(tmp_path / "data")
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(ALIGNED.format(root=(tmp_path / "data").as_posix(), runs=(tmp_path / "runs").as_posix()))
    cgan_one_thread("run", str(recipe_file), "--set", 'train.name="plain"', check=True)
    first = cgan_one_thread("run", str(recipe_file), "--set", 'train.name="cached"', "--set",
                            'train.data_cache="device"', "--until", "3", check=True)
    assert "the training split is cached on cpu" in first.stderr
    cgan_one_thread("run", "--resume", str(tmp_path / "runs" / "cached"), check=True)
    plain, _ = checkpoint.load(checkpoint.latest(tmp_path / "runs" / "plain" / "checkpoints"))
    cached, meta = checkpoint.load(checkpoint.latest(tmp_path / "runs" / "cached" / "checkpoints"))
    assert meta["step"] == 6 and plain.keys() == cached.keys()
    for key in plain:
        if not key.startswith("rng."):
            assert torch.equal(plain[key], cached[key]), key


def test_a_dataset_that_cannot_be_cached_is_one_line(tiny_recipe, tmp_path):
    one_error(cgan_one_thread("run", str(tiny_recipe), "--set", 'train.data_cache="device"'),
              'train.data_cache = "device"', "cannot be cached", 'data_cache = "none"')
    assert not (tmp_path / "runs" / "tiny").exists()  # failed before its first checkpoint: nothing left behind


def test_bench_feeds_both_loops_from_the_cache_and_captured_steps(tmp_path):
    # The GPU's fastest setup (cached data, the step captured) run through `cgan bench` on real files.
    aligned_data(tmp_path / "data")
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(ALIGNED.format(root=(tmp_path / "data").as_posix(), runs=(tmp_path / "runs").as_posix()))
    result = cgan_one_thread("bench", str(recipe_file), "--steps", "4", "--rounds", "1", "--json",
                             "--set", 'train.data_cache="device"', "--set", "train.cuda_graphs=true", check=True)
    report = json.loads(result.stdout)
    assert report["data_cache"] == "device" and report["cuda_graphs"] is True and report["bare_ms_per_step"] > 0
