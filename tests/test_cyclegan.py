"""The cyclegan method and unpaired data: the reference's networks, exact resume with every
stabilizer, both directions at any size, the unaligned layouts, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cgan_kit.cli.main import cli
from cgan_kit.data import SeededItems
from cgan_kit.images import write_image
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import state

from conftest import ROOT

TINY = """
[method]
type = "cyclegan"
cycle_a = 10.0
cycle_b = 5.0
identity = 0.5

[data]
type = "synthetic_unpaired"
size = 32
length = 16

[generator]
type = "resnet"
blocks = 1
ngf = 4

[critic]
type = "patchgan"
n_layers = 2
ndf = 4

[[losses]]
type = "lsgan"

[[stabilizers]]
type = "history_buffer"
size = 3

[[stabilizers]]
type = "spectral_norm"
target = "critic"

[[stabilizers]]
type = "label_smoothing"

[[stabilizers]]
type = "instance_noise"
sigma = 0.1

[[stabilizers]]
type = "ema"
decay = 0.9

[[stabilizers]]
type = "diffaugment"

[train]
steps = 6
batch_size = 2
log_every = 1
sample_every = 3
checkpoint_every = 3
eval_every = 3
eval_images = 4
precision = "fp32"
workers = 0
eval_fid = "off"
"""


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, f"cgan {' '.join(args)}:\n{result.output}"
    return result.output


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "cyc.toml"
    path.write_text(TINY + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    return path


def test_the_facades_recipe_has_the_reference_networks():
    report = json.loads(invoke("check", str(ROOT / "recipes" / "cyclegan_facades.toml"), "--json"))
    assert report["method"] == "cyclegan" and report["roles"] == ["a_to_b", "b_to_a", "critic_a", "critic_b"]
    assert report["a_to_b"]["parameters"] == report["b_to_a"]["parameters"] == 11_378_179  # resnet_9blocks
    assert report["critic_a"]["parameters"] == report["critic_b"]["parameters"] == 2_764_737  # 70x70, 3 channels
    assert report["critic_a"]["receptive_field"] == 70
    for name in ("cyclegan_quickstart", "cyclegan_facades_stable"):
        invoke("check", str(ROOT / "recipes" / f"{name}.toml"))


def test_cyclegan_resumes_bit_exactly_with_every_stabilizer_and_translates_both_ways(tiny: Path, tmp_path: Path):
    invoke("run", str(tiny), "--until", "3")
    run = tmp_path / "runs" / "cyc"
    invoke("run", "--resume", str(run))
    invoke("run", str(tiny), "--set", "train.name=straight")
    resumed, _ = state.read(run / "checkpoints" / "step_00000006.safetensors")
    straight, _ = state.read(tmp_path / "runs" / "straight" / "checkpoints" / "step_00000006.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    assert {"stabilizers.0.critic_a.pool", "stabilizers.0.critic_b.pool"} <= set(resumed)  # a pool per critic
    assert any(key.startswith("stabilizers.4.b_to_a.") for key in resumed)  # an average per generator
    assert any("critic_b" in key and "parametrizations" in key for key in resumed)  # both critics normalized

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {key for row in rows for key in row}
    assert {"loss/g_cycle_a", "loss/g_cycle_b", "loss/g_identity", "loss/g_lsgan", "grad_norm/generators",
            "grad_norm/critics", "lr/generators", "lr/critics", "eval/AtoB/cycle_l1", "eval/BtoA/ssim"} <= logged
    assert (run / "samples" / "step_00000006.png").is_file() and (run / "report" / "index.html").is_file()

    for direction, size in (("AtoB", (3, 24, 40)), ("BtoA", (3, 50, 18))):  # any size, both ways
        image = tmp_path / f"{direction}.png"
        write_image(image, torch.rand(*size), 8)
        invoke("translate", str(run), str(image), "--out", str(tmp_path / direction), "--direction", direction)
        assert (tmp_path / direction / f"{direction}.png").is_file()
        evaluated = invoke("eval", str(run), "--no-fid", "--json", "--direction", direction)
        report = json.loads(evaluated.splitlines()[-1])  # after the progress lines on stderr
        assert report["direction"] == direction and report["ema"] and 0 < report["cycle_l1"] < 2
        assert "ssim" in report  # the synthetic test split is paired
    invoke("export", str(run), "--format", "pt2", "--out", str(tmp_path / "b_to_a.pt2"), "--direction", "BtoA")


def test_identity_needs_equal_channels_and_reconstruction_losses_are_refused(tiny: Path):
    tiny.write_text(tiny.read_text().replace("length = 16", "length = 16\nout_channels = 1"))
    assert "method.identity: the identity loss" in invoke("check", str(tiny), code=2)
    tiny.write_text(tiny.read_text().replace("out_channels = 1", "") + '\n[[losses]]\ntype = "l1"\n')
    for command in ("check", "run"):  # the method's own checks run in `cgan check` too
        assert 'losses: "l1" compares an output with its paired target' in invoke(command, str(tiny), code=2)


def dataset(split: str, augment: bool, **params):
    return plugins.registry().get("dataset", "unaligned").factory(split=split, augment=augment, **params)


def test_unaligned_folders_of_different_sizes_take_a_reproducible_random_partner(tmp_path: Path):
    for folder, count, value in (("trainA", 3, 0.25), ("trainB", 5, 0.75), ("testA", 2, 0.25), ("testB", 2, 0.75)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            write_image(tmp_path / folder / f"{i}.png", torch.full((3, 20, 30), value) + i * 0.01, 8)
    train = dataset("train", True, root=str(tmp_path), load_size=16, crop_size=12)
    assert len(train) == 5  # the larger domain
    seeded = SeededItems(train)
    first = [seeded[(0, seed)]["B"] for seed in range(40)]
    assert first[0].shape == (3, 12, 12)
    partners = {round(float(b.mean()), 2) for b in first}
    assert len(partners) > 2  # a fresh random partner...
    assert torch.equal(seeded[(0, 7)]["B"], seeded[(0, 7)]["B"])  # ...reproducible under its seed
    swapped = dataset("train", False, root=str(tmp_path), direction="BtoA", load_size=16, crop_size=12)
    assert swapped[0]["A"].mean() > 0  # B's bright images are domain A now
    test = dataset("test", False, root=str(tmp_path), crop_size=12)
    assert len(test) == 2 and test[1]["name"] == "1"


def test_an_aligned_release_is_two_unpaired_domains_without_copying(tmp_path: Path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for split in ("train", "test"):
        for i in range(4):
            image = torch.cat([torch.full((3, 8, 8), 0.1 * i), torch.full((3, 8, 8), 0.9)], dim=2)
            write_image(tmp_path / split / f"{i}.png", image, 8)
    test = dataset("test", False, root=str(tmp_path), layout="side_by_side", crop_size=8)
    assert test.paired and torch.allclose(test[2]["A"], torch.full((3, 8, 8), 0.2 * 2 - 1), atol=0.01)
    assert torch.allclose(test[2]["B"], torch.full((3, 8, 8), 0.8), atol=0.01)
    labels_first = dataset("test", False, root=str(tmp_path), layout="side_by_side", direction="BtoA", crop_size=8)
    assert torch.allclose(labels_first[2]["A"], torch.full((3, 8, 8), 0.8), atol=0.01)
    train = dataset("train", True, root=str(tmp_path), layout="side_by_side", load_size=8, crop_size=8)
    assert not train.paired


def test_the_facades_recipe_trains_resumes_translates_and_reports_on_real_data(tmp_path: Path):
    from conftest import FACADES, cgan_one_thread

    if not (FACADES / "train").is_dir():
        pytest.skip(f"no facades data at {FACADES}")
    small = ["--set", f"data.root={FACADES.as_posix()}", "--set", "data.load_size=72", "--set", "data.crop_size=64",
             "--set", f"train.out_dir={(tmp_path / 'runs').as_posix()}", "--set", "train.steps=3",
             "--set", "train.eval_every=2", "--set", "train.eval_images=4", "--set", "train.sample_every=2",
             "--set", "train.checkpoint_every=2", "--set", "train.log_every=1", "--set", "train.precision=fp32"]
    cgan_one_thread("run", str(ROOT / "recipes" / "cyclegan_facades.toml"), *small, "--until", "2", check=True)
    run = tmp_path / "runs" / "cyclegan_facades"
    cgan_one_thread("run", "--resume", str(run), check=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/BtoA/ssim" in row and "eval/AtoB/cycle_l1" in row for row in rows)  # facades' test is paired
    photo = sorted((FACADES / "test").iterdir())[0]
    cgan_one_thread("translate", str(run), str(photo), "--out", str(tmp_path / "out"), "--direction", "BtoA",
                    check=True)
    assert (tmp_path / "out" / f"{photo.stem}.png").is_file() and (run / "report" / "index.html").is_file()


def test_two_processes_update_cyclegan_like_one_with_twice_the_batch(tmp_path: Path):
    from conftest import cgan

    # Per-image norms with an affine shift: no convolution bias that a norm cancels (its gradient is
    # rounding noise, which Adam's first steps would blow up to +-lr differently in each split).
    norm = 'norm = { type = "instance", affine = true }\n'
    per_image = TINY.split("[[stabilizers]]")[0].replace("ndf = 4\n", f"ndf = 4\n{norm}").replace(
        "ngf = 4\n", f"ngf = 4\n{norm}")
    per_image += "\n[train]\nsteps = 2\nprecision = \"fp32\"\nworkers = 0\nlog_every = 1\n"
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(per_image + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    cgan("run", str(recipe), "--set", "train.name=single", "--set", "train.batch_size=2", check=True)
    cgan("run", str(recipe), "--nproc", "2", "--set", "train.name=ddp", "--set", "train.batch_size=1", check=True)
    single, _ = state.read(tmp_path / "runs" / "single" / "checkpoints" / "step_00000002.safetensors")
    ddp, _ = state.read(tmp_path / "runs" / "ddp" / "checkpoints" / "step_00000002.safetensors")
    networks = [key for key in single if key.startswith("networks.")]
    assert len(networks) > 20
    worst = max((single[key] - ddp[key]).abs().max().item() for key in networks)
    assert worst < 1e-5, worst
