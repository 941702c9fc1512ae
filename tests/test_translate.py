"""`cgan translate`: a trained generator on image files, with everything taken from the checkpoint.

The runs are trained once per session through the real CLI (`trained_tiny_run`, `trained_facades_run`,
also used by test_eval.py and test_export.py); the commands are run in subprocesses, and checked
against generators rebuilt here from the run's recipe and the checkpoint's tensors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import FACADES, TINY_RECIPE, cgan

# The tiny recipe with a moving average of the generator; a slow average lags the trained weights
# enough for their outputs to differ visibly after 6 steps.
EMA_RECIPE = TINY_RECIPE.replace("[train]", '[[stabilizers]]\ntype = "ema"\ndecay = 0.99\n\n[train]', 1)
FACADES_ARGS = ["--set", "data.load_size=72", "--set", "data.crop_size=64", "--set", "generator.depth=6",
                "--set", "generator.ngf=8", "--set", "critic.ndf=8", "--set", "train.steps=4",
                "--set", "train.eval_images=4"]


def _trained(tmp_path_factory, name: str, args: list[str]) -> Path:
    """Train once per session (the folder is shared by the modules that ask) and return the run folder."""
    base = tmp_path_factory.getbasetemp() / f"trained_{name}"
    done = base / "done"
    if not done.exists():
        base.mkdir(exist_ok=True)
        cgan("run", *args, "--set", f"train.out_dir={(base / 'runs').as_posix()}", "--set", f"train.name={name}",
             check=True)
        done.write_text("ok")
    return base / "runs" / name


def trained_tiny_run(tmp_path_factory) -> Path:
    """The tiny 32-px synthetic recipe with EMA (batch norm, no dropout), 6 steps."""
    recipe = tmp_path_factory.getbasetemp() / "tiny_ema.toml"
    recipe.write_text(EMA_RECIPE)
    return _trained(tmp_path_factory, "tiny", [str(recipe)])


def trained_facades_run(tmp_path_factory) -> Path:
    """The paper's facades recipe with tiny nets (batch norm and dropout), 4 steps at 64 px."""
    if not (FACADES / "train").is_dir():
        pytest.skip(f"facades not found at {FACADES} (set CGAN_FACADES)")
    root = Path(__file__).resolve().parents[1]
    return _trained(tmp_path_factory, "facades", [str(root / "recipes" / "pix2pix_facades.toml"),
                                                  "--set", f"data.root={FACADES.as_posix()}", *FACADES_ARGS])


def rebuilt_generator(run: Path, weights: str = "networks.generator") -> torch.nn.Module:
    """The run's generator built from its recipe.toml, with the newest checkpoint's tensors under
    ``weights`` ("networks.generator", or "stabilizers.0.generator" for the EMA copy), in eval mode."""
    from cgan_kit.runs import checkpoint
    from cgan_kit.plugin_api import plugins
    from cgan_kit.config.build import build_models
    from cgan_kit.config.recipe import load

    recipe = load(run / "recipe.toml")
    generator = build_models(recipe, plugins.registry()).networks["generator"]
    tensors, _ = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    generator.load_state_dict(checkpoint.split(tensors, weights))
    return generator.eval()


def as_input(path: Path) -> torch.Tensor:
    """An 8-bit RGB file as the generator's (1, 3, H, W) input in [-1, 1]."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1


def as_output(path: Path) -> torch.Tensor:
    pixels = np.asarray(Image.open(path), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def to_image(output: torch.Tensor) -> torch.Tensor:
    return ((output + 1) / 2).clamp(0, 1)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def one_error(result, *fragments: str) -> str:
    """A CliRunner result: exit 2 and one `error:` line holding every fragment, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def invoke(*args: str):
    from cgan_kit.cli.main import cli

    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A single RGB JPEG, and a folder of: an RGB PNG, a 300x200 photo, a 16-bit RGB PNG, a grey PNG,
    plus a hidden image and a text file that are not inputs."""
    from cgan_kit.images import write_image

    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp("inputs")
    single = base / "single.jpg"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(single, quality=95)
    folder = base / "folder"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(folder / "wide.png")  # W 300, H 200
    write_image(folder / "deep.png", torch.rand(3, 33, 17, generator=torch.Generator().manual_seed(0)), 16)
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    return single, folder


@pytest.fixture(scope="module")
def translated(run, inputs, tmp_path_factory) -> Path:
    """`cgan translate RUN single.jpg folder/ --out OUT` with the defaults (eval mode, EMA when present)."""
    single, folder = inputs
    out = tmp_path_factory.mktemp("translated") / "out"
    result = cgan("translate", str(run), str(single), str(folder), "--out", str(out), "--batch-size", "2",
                  check=True)
    assert "translated 5 images" in result.stdout and "EMA weights" in result.stdout and "eval mode" in result.stdout
    assert "translating: 0/5 images" in result.stderr  # progress, off a terminal a line as it starts
    return out


def test_a_file_and_a_folder_give_one_png_each_at_the_input_size_and_depth(translated):
    from cgan_kit.images import read_bit_depth

    assert sorted(p.name for p in translated.iterdir()) == ["b.png", "deep.png", "grey.png", "single.png", "wide.png"]
    sizes = {name: Image.open(translated / f"{name}.png").size for name in ("single", "b", "wide", "deep", "grey")}
    assert sizes == {"single": (32, 32), "b": (32, 32), "wide": (300, 200), "deep": (17, 33), "grey": (24, 20)}
    # The recipe's generator makes RGB: the grey input was converted to the 3 channels it takes.
    assert {Image.open(p).mode for p in translated.iterdir()} == {"RGB"}
    assert read_bit_depth(translated / "deep.png") == 16
    assert {read_bit_depth(translated / f"{n}.png") for n in ("single", "b", "wide", "grey")} == {8}


def test_half_translates_one_side_of_an_a_b_file_as_that_side_alone(run, tmp_path):
    """The pix2pix releases' files are A|B side by side: --half left is A, --half right is B (odd widths
    split as the aligned datasets split them)."""
    rng = np.random.default_rng(1)
    pair = rng.integers(0, 256, (32, 65, 3), dtype=np.uint8)
    Image.fromarray(pair).save(tmp_path / "pair.png")
    Image.fromarray(pair[:, :32]).save(tmp_path / "a.png")
    Image.fromarray(pair[:, 32:]).save(tmp_path / "b.png")
    for half, alone in (("left", "a"), ("right", "b")):
        out = tmp_path / f"out_{half}"
        cgan("translate", str(run), str(tmp_path / "pair.png"), "--half", half, "--out", str(out), check=True)
        cgan("translate", str(run), str(tmp_path / f"{alone}.png"), "--out", str(out / "alone"), check=True)
        expected = np.asarray(Image.open(out / "alone" / f"{alone}.png"))
        assert np.array_equal(np.asarray(Image.open(out / "pair.png")), expected)


def test_the_ema_weights_are_used_when_the_checkpoint_has_them(run, inputs, translated, tmp_path):
    _, folder = inputs
    x = as_input(folder / "b.png")
    with torch.no_grad():
        ema = to_image(rebuilt_generator(run, "stabilizers.0.generator")(x))
        trained = to_image(rebuilt_generator(run)(x))
    written = as_output(translated / "b.png")
    assert (written - ema).abs().max() <= 0.5 / 255 + 1e-6  # the EMA output, rounded to 8 bits
    assert (written - trained).abs().max() > 0.5 / 255  # and not the trained weights' output
    # --no-ema (here on the checkpoint file itself) gives the trained weights' output.
    checkpoint_file = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    result = cgan("translate", str(checkpoint_file), str(folder / "b.png"), "--out", str(tmp_path), "--no-ema",
                  check=True)
    assert "trained weights" in result.stdout
    assert (as_output(tmp_path / "b.png") - trained).abs().max() <= 0.5 / 255 + 1e-6


def test_paper_mode_uses_batch_statistics_and_leaves_the_checkpoint_untouched(run, inputs, translated, tmp_path):
    _, folder = inputs
    before = digests(run / "checkpoints")
    result = cgan("translate", str(run), str(folder), "--out", str(tmp_path), "--mode", "paper", check=True)
    assert "paper mode" in result.stdout
    assert digests(run / "checkpoints") == before
    x = as_input(folder / "b.png")
    with torch.no_grad():
        # The tiny U-Net has batch norm and no dropout: paper mode is the network in training mode on one image.
        expected = to_image(rebuilt_generator(run, "stabilizers.0.generator").train()(x))
    paper, evaluated = as_output(tmp_path / "b.png"), as_output(translated / "b.png")
    assert (paper - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert (paper - evaluated).abs().mean() > 2 / 255  # clearly not the running statistics' output
    assert Image.open(tmp_path / "wide.png").size == (300, 200)


def test_paper_mode_keeps_the_running_statistics_and_repeats_its_dropout(tmp_path_factory, tmp_path):
    from cgan_kit.inference.translate import load_generator, set_mode, translate

    run = trained_facades_run(tmp_path_factory)  # batch norm and dropout
    loaded = load_generator(run, device="cpu")
    saved = {name: value.clone() for name, value in loaded.generator.state_dict().items()}
    photo = FACADES / "test" / "1.jpg"
    first = translate(loaded, [photo], tmp_path / "a", mode="paper", seed=0)[0]
    again = translate(loaded, [photo], tmp_path / "b", mode="paper", seed=0)[0]
    other = translate(loaded, [photo], tmp_path / "c", mode="paper", seed=1)[0]
    for name, value in loaded.generator.state_dict().items():
        assert torch.equal(value, saved[name]), f"{name} changed"
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(other)))  # dropout is on
    set_mode(loaded.generator, "eval")  # and back: running statistics, no dropout
    assert not any(m.training for m in loaded.generator.modules())
    assert all(m.track_running_stats for m in loaded.generator.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_real_photos_through_a_facades_checkpoint_keep_their_size(tmp_path_factory, tmp_path):
    run = trained_facades_run(tmp_path_factory)
    images = [FACADES / "test" / name for name in ("1.jpg", "2.jpg")]
    cgan("translate", str(run), *map(str, images), "--out", str(tmp_path), check=True)
    assert [Image.open(tmp_path / f"{p.stem}.png").size for p in images] == [Image.open(p).size for p in images]


def test_bad_inputs_and_checkpoints_are_one_line_errors(run, inputs, tmp_path):
    single, folder = inputs
    out = str(tmp_path / "out")
    one_error(invoke("translate", str(run), str(tmp_path / "missing.png"), "--out", out),
              "missing.png", "does not exist")
    (tmp_path / "empty").mkdir()
    one_error(invoke("translate", str(run), str(tmp_path / "empty"), "--out", out), "empty", "holds no images")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    one_error(invoke("translate", str(run), str(tmp_path / "broken.png"), "--out", out), "broken.png")
    one_error(invoke("translate", str(run / "recipe.toml"), str(single), "--out", out), "not a cgan-kit checkpoint")
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    one_error(invoke("translate", str(tmp_path / "foreign.safetensors"), str(single), "--out", out),
              "not a cgan-kit checkpoint")
    one_error(invoke("translate", str(tmp_path), str(single), "--out", out), "holds no checkpoints")
    # Two inputs that would be written to the same output name.
    Image.open(single).save(tmp_path / "single.png")
    one_error(invoke("translate", str(run), str(single), str(tmp_path / "single.png"), "--out", out),
              "would both be written")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
