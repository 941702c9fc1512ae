"""The HTML report, the best checkpoint and picking a run's checkpoint: through real training runs,
the real CLI, real files, and the page loaded in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgan_kit.runs import checkpoint
from cgan_kit import Column
from cgan_kit.outputs.samples import heat_map, sample_grid
from cgan_kit.outputs import report
from cgan_kit.outputs.report import best_evaluation
from cgan_kit.runs.folder import COLUMNS_KEY
from conftest import FACADES, cgan_one_thread, one_error

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run of 8 steps: samples every 2, evaluations every 2, checkpoints every 4."""
    from conftest import TINY_RECIPE

    folder = tmp_path_factory.mktemp("report")
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY_RECIPE.replace("steps = 6", "steps = 8").replace("sample_every = 3", "sample_every = 2")
                      .replace("eval_every = 3", "eval_every = 2")
                      .replace("checkpoint_every = 3", "checkpoint_every = 4")
                      + f'out_dir = "{(folder / "runs").as_posix()}"\nbest_metric = "l1"\nkeep_checkpoints = 5\n')
    cgan_one_thread("run", str(recipe), check=True)
    return folder / "runs" / "tiny"


def eval_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval/l1" in row]


def test_training_keeps_the_best_checkpoint_by_the_recipe_metric(trained):
    rows = eval_rows(trained)
    assert [row["step"] for row in rows] == [0, 2, 4, 6, 8]
    assert all({"eval/l1", "eval/psnr", "eval/ssim"} <= row.keys() for row in rows)
    best_row = min(rows, key=lambda row: row["eval/l1"])
    meta = checkpoint.read_meta(trained / "checkpoints" / checkpoint.BEST_NAME)
    assert meta["step"] == best_row["step"]
    assert meta["best"] == {"metric": "eval/l1", "value": pytest.approx(best_row["eval/l1"])}
    assert best_evaluation(rows, "l1") is best_row
    # The best file is a whole checkpoint: cgan eval on it measures what training measured.
    result = cgan_one_thread("eval", str(trained), "--checkpoint", "best", "--images", "8", "--no-fid", "--json",
                             check=True)
    measured = json.loads(result.stdout)
    assert measured["step"] == best_row["step"]
    assert measured["l1"] == pytest.approx(best_row["eval/l1"], rel=1e-4)


def test_translate_eval_export_pick_a_checkpoint_by_step_or_best(trained, tmp_path):
    measured = json.loads(cgan_one_thread("eval", str(trained), "--checkpoint", "4", "--images", "4", "--no-fid",
                                          "--json", check=True).stdout)
    assert measured["step"] == 4 and measured["checkpoint"].endswith("step_00000004.safetensors")
    Image.new("RGB", (40, 24), "white").save(tmp_path / "in.png")
    done = cgan_one_thread("translate", str(trained), str(tmp_path / "in.png"), "--out", str(tmp_path / "out"),
                           "--checkpoint", "best", check=True)
    assert "best.safetensors" in done.stdout and Image.open(tmp_path / "out" / "in.png").size == (40, 24)
    exported = cgan_one_thread("export", str(trained), "--format", "pt2", "--out", str(tmp_path / "g.pt2"),
                               "--checkpoint", "0", "--json", check=True)
    assert json.loads(exported.stdout)["step"] == 0

    one_error(cgan_one_thread("eval", str(trained), "--checkpoint", "5"), "no checkpoint of step 5", "0, 4, 8")
    one_error(cgan_one_thread("eval", str(trained), "--checkpoint", "newest"), '"latest", "best" or a step')
    file = trained / "checkpoints" / "step_00000008.safetensors"
    one_error(cgan_one_thread("eval", str(file), "--checkpoint", "best"), "is a checkpoint file already")


def test_best_needs_an_evaluation(tiny_recipe, tmp_path):
    cgan_one_thread("run", str(tiny_recipe), "--set", "train.steps=2", check=True)
    run = tmp_path / "runs" / "tiny"
    (run / "checkpoints" / checkpoint.BEST_NAME).unlink()  # as in a run with no held-out split
    one_error(cgan_one_thread("eval", str(run), "--checkpoint", "best"), "has no best.safetensors",
              "train.eval_every")


def test_the_report_shows_curves_table_samples_and_an_animation(trained):
    page = (trained / "report" / "index.html").read_text()
    assert page.count('<svg class="plot"') >= 6  # l1, psnr, ssim, losses, critic scores, ...
    for title in ("Held-out l1 (lower is better)", "Held-out ssim (higher is better)", "Losses", "Critic scores"):
        assert title in page
    assert "http-equiv=\"refresh\"" not in page  # the run has finished: no more reloading
    best_step = checkpoint.read_meta(trained / "checkpoints" / checkpoint.BEST_NAME)["step"]
    assert f'<tr class="best"><td>{best_step}</td>' in page
    samples = sorted(p.name for p in (trained / "samples").glob("step_*.png"))
    assert samples == [f"step_{s:08d}.png" for s in (0, 2, 4, 6, 8)]
    for name in samples:
        assert f"../samples/{name}" in page
    gif = Image.open(trained / "report" / "progress.gif")
    assert gif.is_animated and gif.n_frames == len(samples)
    # A grid row: input | output | target | critic on the fake pair | critic on the real pair.
    grid = Image.open(trained / "samples" / "step_00000008.png")
    assert grid.size == (5 * 32 + 4 * 2, 4 * 32 + 3 * 2)
    # ... and the grid names its columns, which the page shows as headers above every grid.
    titles = ["input", "output", "target", "critic: output", "critic: target"]
    assert report.column_titles(trained / "samples" / "step_00000008.png") == titles
    head = "".join(f'<span title="{t}">{t}</span>' for t in titles)
    assert page.count(head) == len(samples) + 1  # the newest, the animation, the older ones


def test_loss_curves_on_a_log_scale_with_smoothing_when_they_need_it():
    wide = {"l1": [(i, 30.0 - i / 10) for i in range(40)], "gan": [(i, 0.7 + (i % 3) / 10) for i in range(40)]}
    title, scale, smoothing = report._curve_style("Losses", wide)
    assert (title, scale, smoothing) == ("Losses (log scale, smoothed 0.8)", "log", 0.8)
    svg = report.plot(title, wide, scale=scale, smoothing=smoothing)
    assert svg.count("<polyline") == 4 and svg.count('stroke-opacity="0.25"') == 2  # raw faint, smoothed over
    assert ">10</text>" in svg and ">1</text>" in svg  # decades as ticks
    # Few points, a narrow range or values at or below zero: as they are.
    assert report._curve_style("Losses", {"a": [(0, 1.0), (1, 2.0)]}) == ("Losses", "linear", 0.0)
    assert report._curve_style("Critic", {"a": [(i, i - 20.0) for i in range(40)]})[1] == "linear"
    assert report.plot("x", {"a": [(0, -1.0), (1, 5.0)]}, scale="log").count("<polyline") == 1
    # The moving average starts at the first value (debiased) and follows a constant exactly.
    assert [y for _, y in report.smoothed([(0, 5.0), (1, 5.0)], 0.8)] == pytest.approx([5.0, 5.0])
    assert report.smoothed([(0, 1.0), (1, 1e308), (2, 1.7e308)], 0.9)[0] == (0, 1.0)
    # Extreme ranges do not break the axis.
    assert "<svg" in report.plot("x", {"a": [(0, 1e-300), (1, 1.7e308)]}, scale="log", smoothing=0.8)


def test_grid_titles_from_a_damaged_or_foreign_png_are_none(tmp_path):
    from PIL import PngImagePlugin

    for text in ("not json", '{"a": 1}', "[1, 2]", json.dumps(["x"] * 100), "[" * 5000):
        info = PngImagePlugin.PngInfo()
        info.add_itxt(COLUMNS_KEY, text)
        Image.new("RGB", (4, 4)).save(tmp_path / "grid.png", pnginfo=info)
        assert report.column_titles(tmp_path / "grid.png") == []
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert report.column_titles(tmp_path / "broken.png") == []


def test_cgan_report_redraws_missing_grids_exactly_as_training_drew_them(trained, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    drawn_in_training = np.asarray(Image.open(run / "samples" / "step_00000004.png"))
    for step in (0, 4, 8):
        (run / "samples" / f"step_{step:08d}.png").unlink()
    shutil.rmtree(run / "report")
    result = cgan_one_thread("report", str(run), check=True)
    assert "drew the samples of steps 0, 4, 8" in result.stdout
    assert np.array_equal(np.asarray(Image.open(run / "samples" / "step_00000004.png")), drawn_in_training)
    assert (run / "report" / "index.html").is_file() and (run / "report" / "progress.gif").is_file()
    assert "drew" not in cgan_one_thread("report", str(run), check=True).stdout  # nothing missing now
    # The best checkpoint's step is drawn from best.safetensors when its step file has been pruned.
    best_step = checkpoint.read_meta(run / "checkpoints" / checkpoint.BEST_NAME)["step"]
    checkpoint.step_path(run / "checkpoints", best_step).unlink(missing_ok=True)
    (run / "samples" / f"step_{best_step:08d}.png").unlink()
    assert f"drew the samples of step {best_step}" in cgan_one_thread("report", str(run), check=True).stdout


def test_cgan_report_errors(tmp_path):
    one_error(cgan_one_thread("report", str(tmp_path)), "is not a run folder", "recipe.toml")
    one_error(cgan_one_thread("report", str(tmp_path / "absent")), "is not a run folder")
    one_error(cgan_one_thread("report", str(tmp_path / "absent"), "--no-samples"), "is not a run folder")


def test_heat_map_colours_and_grid_layout():
    blue, grey, red = heat_map(torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1), (2, 2))[:, :, 0, 0]
    assert blue[2] > blue[0] and red[0] > red[2] and abs(grey[0] - grey[2]) < 1e-6
    # One score per patch: a 2x2 map covers a 4x4 image in 2x2 blocks.
    patches = heat_map(torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), (4, 4))[0]
    assert torch.equal(patches[:, 0, 0], patches[:, 1, 1]) and not torch.equal(patches[:, 0, 0], patches[:, 0, 2])
    # Scores of several scales side by side (B, 1, 1, N) have no layout: one colour, their mean.
    flat = heat_map(torch.tensor([[[[0.0, 1.0, 0.5, 0.5]]]]), (4, 4))[0]
    assert torch.allclose(flat, flat[:, :1, :1].expand_as(flat)) and torch.allclose(flat[:, 0, 0], grey)
    images = torch.zeros(2, 3, 8, 8)
    assert sample_grid([Column("a", images), Column("b", images), Column("c", images)]).shape == \
        (3, 2 * 8 + 2, 3 * 8 + 2 * 2)
    # A critic's 2x2 realness becomes a tile the size of the images.
    grid = sample_grid([Column("a", images), Column("critic", torch.ones(2, 1, 2, 2), "critic")])
    assert grid.shape == (3, 2 * 8 + 2, 2 * 8 + 2) and grid[0, 0, 10] > grid[2, 0, 10]  # red: judged real


def test_a_missing_device_fails_before_creating_the_run_folder(tiny_recipe, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_error(cgan_one_thread("run", str(tiny_recipe), "--set", 'train.device="cuda"'), "train.device")
    assert not (tmp_path / "runs" / "tiny").exists()


# ---------------------------------------------------------------------------------------------
# The page in a real browser


def browser():
    """Headless Chromium driven by its ChromeDriver; skipped where they are not installed, unless
    CGAN_REQUIRE_BROWSER=1 (CI) makes their absence a failure."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        selenium_missing = True
    else:
        selenium_missing = False
    if selenium_missing or not CHROMIUM or not CHROMEDRIVER:
        reason = "needs selenium and Debian's chromium and chromium-driver packages"
        if os.environ.get("CGAN_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_the_report_loads_without_errors_and_its_images_render_in_chromium(trained, tmp_path):
    driver = browser()
    try:
        driver.get((trained / "report" / "index.html").as_uri())
        # Open the folded earlier steps too, then wait until every image has loaded or failed.
        driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true);"
                              "document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
        driver.set_script_timeout(20)
        images = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const all = [...document.images];
            Promise.all(all.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })))
              .then(() => done(all.map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])));
        """)
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        plots = driver.execute_script(
            "return [...document.querySelectorAll('svg.plot')].map(s => s.getBBox().width * s.getBBox().height)")
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert not severe, severe
    assert len(images) == 5 + 1  # the newest grid, the GIF and the four earlier grids
    for src, width, height in images:
        assert width > 0 and height > 0, f"{src} did not render"
    assert len(plots) >= 6 and all(area > 0 for area in plots)
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert shot.std() > 10  # a drawn page, not a blank one


def test_the_best_so_far_survives_a_resume(tiny_recipe, tmp_path):
    cgan_one_thread("run", str(tiny_recipe), "--set", 'train.best_metric="l1"', "--until", "3", check=True)
    run = tmp_path / "runs" / "tiny"
    best = run / "checkpoints" / checkpoint.BEST_NAME
    tensors, meta = checkpoint.load(best)
    assert meta["best"]["metric"] == "eval/l1"
    # A best L1 no evaluation can beat: the resumed run must compare against it, not start afresh.
    checkpoint.save(best, tensors, {**meta, "best": {"metric": "eval/l1", "value": -1.0}})
    cgan_one_thread("run", "--resume", str(run), check=True)
    assert [r["step"] for r in eval_rows(run)] == [0, 3, 6]
    assert checkpoint.read_meta(best)["best"]["value"] == -1.0
    # Judged by another measure now (--set on resume): that one starts its own record.
    cgan_one_thread("run", "--resume", str(run), "--set", "train.steps=9", "--set", 'train.best_metric="psnr"',
                    check=True)
    assert checkpoint.read_meta(best)["best"]["metric"] == "eval/psnr"


def test_report_translate_and_export_of_a_facades_run(tmp_path_factory, tmp_path):
    from test_translate import trained_facades_run

    run = tmp_path / "facades"
    shutil.copytree(trained_facades_run(tmp_path_factory), run)
    shutil.rmtree(run / "report")
    cgan_one_thread("report", str(run), check=True)
    page = (run / "report" / "index.html").read_text()
    assert "Held-out ssim" in page and '<tr class="best">' in page and "progress.gif" in page
    grid = Image.open(run / "samples" / "step_00000004.png")
    assert grid.size == (5 * 64 + 4 * 2, 4 * 64 + 3 * 2)  # four facades test pairs at 64 px
    Image.open(FACADES / "test" / "1.jpg").resize((300, 200)).save(tmp_path / "wide.png")
    cgan_one_thread("translate", str(run), str(tmp_path / "wide.png"), "--out", str(tmp_path / "out"),
                    "--checkpoint", "best", check=True)
    assert Image.open(tmp_path / "out" / "wide.png").size == (300, 200)
    exported = cgan_one_thread("export", str(run), "--format", "pt2", "--checkpoint", "best", "--size", "200",
                               "300", "--out", str(tmp_path / "generator.pt2"), "--json", check=True)
    report = json.loads(exported.stdout)
    assert report["input_shape"] == [1, 3, 200, 300] and report["max_abs_diff"] <= 1e-4
