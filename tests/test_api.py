"""The Python API (`cgan_kit.load`, `cgan_kit.train`): the README's examples run as written, every
kind of image comes back as the kind it went in, and the outputs equal `cgan translate`'s files.

The translator tests share the tiny EMA run trained once through the real CLI (test_translate.py);
the training tests train the tiny recipe in this process, as a notebook would.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cgan_kit
from cgan_kit import CganError
from conftest import ROOT, cgan
from test_translate import trained_tiny_run

ODD = (37, 53)  # height, width: no multiple of the U-Net's 2**5


def readme_blocks() -> list[str]:
    """The fenced python blocks of the README's "Python API" section."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def substituted(block: str, replacements: dict[str, str]) -> str:
    """``block`` with each README path replaced; each must be there, so an edited README fails here."""
    for old, new in replacements.items():
        assert old in block, f"{old!r} is no longer in the README's example:\n{block}"
        block = block.replace(old, new)
    return block


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def model(run: Path, tmp_path_factory) -> Path:
    """The run exported as a model folder (`cgan export --format safetensors`)."""
    from cgan_kit.inference.export import export

    folder = tmp_path_factory.mktemp("api_model") / "model"
    export(run, "safetensors", folder)
    return folder


@pytest.fixture(scope="module")
def translator(run: Path) -> cgan_kit.Translator:
    return cgan_kit.load(run)


@pytest.fixture(scope="module")
def label(tmp_path_factory) -> Path:
    """A smooth 8-bit RGB PNG of an odd size."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("api_inputs") / "label.png"
    Image.fromarray(coarse).resize((ODD[1], ODD[0]), Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def by_the_cli(run: Path, label: Path, tmp_path_factory) -> np.ndarray:
    """`cgan translate`'s output of ``label``, as uint8 pixels."""
    out = tmp_path_factory.mktemp("api_cli")
    cgan("translate", str(run), str(label), "--out", str(out), check=True)
    return np.asarray(Image.open(out / "label.png"))


def close_to(pixels: np.ndarray, expected: np.ndarray) -> None:
    """8-bit outputs equal but for rounding (at most 1 apart)."""
    assert pixels.shape == expected.shape and pixels.dtype == expected.dtype
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1, "more than 8-bit rounding apart"


# ---------------------------------------------------------------------------------------------
# The README


def test_the_readme_translation_example_runs_as_written_and_equals_cgan_translate(model, label, by_the_cli, tmp_path):
    """Exactly as written, in a fresh process, in a folder holding only the exported model folder
    (no run folder) and the image."""
    block = readme_blocks()[0]
    assert len([line for line in block.splitlines() if line.strip() and "import" not in line]) <= 3
    substituted(block, {'"model"': "", '"label.png"': "", '"translated.png"': ""})  # the names used
    shutil.copytree(model, tmp_path / "model")
    shutil.copy(label, tmp_path / "label.png")
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    close_to(np.asarray(Image.open(tmp_path / "translated.png")), by_the_cli)


def test_a_model_folder_translates_like_its_run(model, translator):
    exported = cgan_kit.load(model)
    batch = torch.rand(2, 3, *ODD, generator=torch.Generator().manual_seed(7))
    assert torch.equal(exported(batch), translator(batch))
    assert (exported.step, exported.ema, exported.direction) == (translator.step, True, "AtoB")
    assert exported.checkpoint == model / "model.safetensors" and "model.safetensors" in repr(exported)


def test_the_readme_training_example_runs_as_written(tiny_recipe, tmp_path):
    code = substituted(readme_blocks()[1], {'"recipes/quickstart.toml"': repr(str(tiny_recipe)),
                                            '{"train.steps": 200}': '{"train.steps": 3}'})
    names: dict = {"cgan_kit": cgan_kit}
    exec(compile(code, "README.md", "exec"), names)
    assert names["run"] == tmp_path / "runs" / "tiny"
    assert (names["run"] / "checkpoints" / "step_00000003.safetensors").is_file()
    assert names["translator"].checkpoint.name == "best.safetensors"


# ---------------------------------------------------------------------------------------------
# Translating: each kind in, the same kind out


def test_a_pil_rgb_image_gives_an_rgb_image_equal_to_cgan_translates_file(translator, label, by_the_cli):
    result = translator(Image.open(label))
    assert isinstance(result, Image.Image) and result.mode == "RGB" and result.size == (ODD[1], ODD[0])
    close_to(np.asarray(result), by_the_cli)


def test_a_pil_grey_image_gives_a_grey_image(translator, label):
    grey = Image.open(label).convert("L")
    result = translator(grey)
    assert result.mode == "L" and result.size == grey.size
    close_to(np.asarray(result), np.asarray(translator(grey.convert("RGB")).convert("L")))


def test_a_pil_rgba_image_keeps_its_alpha_and_16_bit_grey_stays_16_bit(translator, label):
    rgb = Image.open(label).convert("RGB")
    alpha = Image.fromarray(np.random.default_rng(2).integers(0, 256, (ODD[0], ODD[1]), dtype=np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    result = translator(rgba)
    assert result.mode == "RGBA"
    assert np.array_equal(np.asarray(result)[:, :, 3], np.asarray(alpha))
    assert np.array_equal(np.asarray(result)[:, :, :3], np.asarray(translator(rgb)))
    wide = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    assert wide.mode.startswith("I;16") and translator(wide).mode.startswith("I;16")


def test_a_list_of_pil_images_of_different_sizes_gives_a_list(translator, label):
    images = [Image.open(label).convert("RGB"), Image.open(label).convert("L").resize((20, 9)),
              Image.open(label).convert("RGB").resize((20, 9))]
    results = translator(images)
    assert isinstance(results, list) and [(r.mode, r.size) for r in results] == [(i.mode, i.size) for i in images]
    for image, result in zip(images, results):
        assert np.array_equal(np.asarray(result), np.asarray(translator(image)))
    assert translator([]) == []


def test_numpy_uint8_hwc_and_float_hw_keep_their_dtype_and_layout(translator, label):
    pixels = np.asarray(Image.open(label).convert("RGB"))
    result = translator(pixels)
    assert result.dtype == np.uint8 and result.shape == pixels.shape
    assert np.array_equal(result, np.asarray(translator(Image.fromarray(pixels))))
    grey = (np.asarray(Image.open(label).convert("L")) / 255).astype(np.float32)
    flat = translator(grey)
    assert flat.dtype == np.float32 and flat.shape == grey.shape and 0 <= flat.min() <= flat.max() <= 1
    assert np.abs(flat - translator(torch.from_numpy(grey)[None])[0].numpy()).max() < 1e-6
    assert translator(grey.astype(np.float64)).dtype == np.float64
    batch = translator(np.stack([pixels, pixels[::-1]]))
    assert batch.shape == (2, *pixels.shape) and np.array_equal(batch[0], result)
    wide = translator(pixels.astype(np.uint16) * 257)
    assert wide.dtype == np.uint16 and wide.shape == pixels.shape


def test_tensors_chw_and_bchw_keep_their_rank_and_a_batch_equals_each_image(translator):
    batch = torch.rand(4, 3, *ODD, generator=torch.Generator().manual_seed(3))
    together = translator(batch)
    assert together.shape == batch.shape and together.dtype == batch.dtype and together.device == batch.device
    one_by_one = torch.stack([translator(image) for image in batch])
    assert translator(batch[0]).shape == batch[0].shape
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    assert translator(batch.double()).dtype == torch.float64
    assert translator(batch[:, :1]).shape == (4, 1, *ODD)  # grey in, grey out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_tensor_comes_back_on_its_device(run):
    translator = cgan_kit.load(run, device="cuda")
    batch = torch.rand(2, 3, *ODD, device="cuda")
    result = translator(batch)
    assert result.device == batch.device and result.shape == batch.shape
    torch.testing.assert_close(result.cpu(), cgan_kit.load(run, device="cpu")(batch.cpu()), atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [ODD, (1, 1), (5, 200), (64, 31)])
def test_any_size_is_translated_at_its_own_size(translator, size):
    assert translator(torch.rand(3, *size)).shape == (3, *size)
    assert translator(np.zeros(size, np.uint8)).shape == size


def test_what_was_loaded_is_told(translator, run):
    assert (translator.step, translator.direction, translator.in_channels, translator.out_channels) == (6, "AtoB", 3, 3)
    assert translator.device == torch.device("cpu") and translator.ema
    assert translator.checkpoint.parent == run / "checkpoints" and not translator.generator.training
    assert "step=6" in repr(translator)
    trained = cgan_kit.load(translator.checkpoint, ema=False)
    image = torch.rand(3, *ODD)
    assert not trained.ema and (trained(image) - translator(image)).abs().max() > 1e-4
    assert cgan_kit.load(run, checkpoint=3).step == 3


@pytest.mark.parametrize("images, fragment", [
    (np.zeros((4, 4), np.int64), "int64"),
    (np.full((4, 4, 3), 255.0), "[0, 1]"),
    (np.zeros((4, 4, 7), np.uint8), "shape"),
    (torch.zeros(2, 5, 4, 4), "shape"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), "float"),
    (torch.zeros(0, 3, 4, 4), "no pixels"),
    (Image.new("F", (4, 4)), '"F"'),
    ([np.zeros((4, 4), np.uint8)], "PIL images only"),
    ("label.png", "str"),
])
def test_what_cannot_be_translated_is_a_cgan_error(translator, images, fragment):
    with pytest.raises(CganError, match=re.escape(fragment)):
        translator(images)


def test_loading_what_is_no_model_is_a_cgan_error(run, tmp_path):
    with pytest.raises(CganError, match="does not exist"):
        cgan_kit.load(tmp_path / "nothing")
    with pytest.raises(CganError, match="BtoA"):
        cgan_kit.load(run, direction="BtoA")
    with pytest.raises(CganError, match="no checkpoint of step 4"):
        cgan_kit.load(run, checkpoint=4)


def test_loading_logs_to_the_cgan_kit_logger_which_is_silent_by_default(run, caplog):
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("cgan_kit").handlers)
    with caplog.at_level(logging.INFO, logger="cgan_kit"):
        cgan_kit.load(run)
    assert [r.name for r in caplog.records] == ["cgan_kit.api"] and "step 6" in caplog.records[0].getMessage()


def test_importing_cgan_kit_loads_the_api_only_when_it_is_used():
    code = ("import sys, cgan_kit; assert 'cgan_kit.api' not in sys.modules; "
            "import cgan_kit.api; assert cgan_kit.load is cgan_kit.api.load and cgan_kit.train is cgan_kit.api.train")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Training


def test_train_takes_overrides_as_a_dict_or_a_list_and_returns_each_new_run_folder(tiny_recipe, tmp_path):
    threads = torch.get_num_threads()
    first = cgan_kit.train(tiny_recipe, {"train.steps": 3, "train.name": "api"})
    second = cgan_kit.train(str(tiny_recipe), ["train.steps=3", "train.name=api"], until=1)
    assert (first, second) == (tmp_path / "runs" / "api", tmp_path / "runs" / "api-2")
    assert sorted(p.name for p in (first / "checkpoints").glob("step_*")) == ["step_00000000.safetensors",
                                                                                "step_00000003.safetensors"]
    assert cgan_kit.load(second).step == 1
    assert cgan_kit.train(resume=second, until=3) == second and cgan_kit.load(second).step == 3
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("overrides, fragment", [
    ({"train.stepz": 10}, 'did you mean "steps"'),
    ({"train.steps": 0}, "must be >= 1"),
    (["train.steps"], "KEY.PATH=VALUE"),
    ("train.steps=10", "expected a dict"),
    ({"train.steps": object()}, "no recipe value"),
])
def test_a_bad_override_raises_a_cgan_error_not_system_exit_and_writes_nothing(tiny_recipe, tmp_path, overrides,
                                                                                fragment):
    with pytest.raises(CganError, match=re.escape(fragment)):
        cgan_kit.train(tiny_recipe, overrides)
    assert not (tmp_path / "runs").exists()


def test_train_needs_one_of_a_recipe_and_a_run_to_resume(tiny_recipe, tmp_path):
    with pytest.raises(CganError, match="needs a recipe"):
        cgan_kit.train()
    with pytest.raises(CganError, match="not both"):
        cgan_kit.train(tiny_recipe, resume=tmp_path)
    with pytest.raises(CganError, match="until=0"):
        cgan_kit.train(tiny_recipe, until=0)
    with pytest.raises(CganError, match="does not exist"):
        cgan_kit.train(tmp_path / "missing.toml")
