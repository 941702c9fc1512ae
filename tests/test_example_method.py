"""A method written by a third party from docs/plugins.md alone (examples/cgan-example-method):
registered in-process for the fast tier, pip-installed into a fresh environment for the slow one;
either way it trains, resumes, translates both ways and evaluates without any change to cgan-kit."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cgan_kit.cli.main import cli
from cgan_kit.images import write_image
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import state

from conftest import ROOT, TINY_RECIPE

EXAMPLE = ROOT / "examples" / "cgan-example-method"
RECIPE = '''
[method]
type = "two_way"
cycle_weight = 5.0

[[stabilizers]]
type = "history_buffer"
size = 2

[[stabilizers]]
type = "ema"
decay = 0.9
''' + TINY_RECIPE


@pytest.fixture
def two_way():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import cgan_example_method

        with plugins.registered(cgan_example_method, "two-way"):
            yield
    finally:
        sys.path.remove(str(EXAMPLE))


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, f"cgan {' '.join(args)}:\n{result.output}"
    return result.output


def test_a_third_party_method_trains_resumes_translates_and_evaluates(two_way, tmp_path: Path):
    recipe = tmp_path / "two_way.toml"
    recipe.write_text(RECIPE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    listed = json.loads(invoke("list", "methods", "--json"))["methods"]
    assert {"pix2pix", "two_way"} <= {entry["name"] for entry in listed}
    assert "cycle_weight" in invoke("describe", "method", "two_way")
    checked = json.loads(invoke("check", str(recipe), "--json"))
    assert checked["roles"] == ["a_to_b", "b_to_a", "critic_b", "critic_a"]
    assert checked["a_to_b"]["parameters"] == checked["b_to_a"]["parameters"] > 0

    # Interrupted at step 3 and resumed to 6 equals 6 steps in one go, with the four networks,
    # both Adam states, a pool per critic and an average per generator.
    invoke("run", str(recipe), "--until", "3")
    run = tmp_path / "runs" / "two_way"
    invoke("run", "--resume", str(run))
    invoke("run", str(recipe), "--set", "train.name=straight")
    resumed, _ = state.read(run / "checkpoints" / "step_00000006.safetensors")
    straight, _ = state.read(tmp_path / "runs" / "straight" / "checkpoints" / "step_00000006.safetensors")
    assert resumed.keys() == straight.keys()
    assert {key.split(".")[1] for key in resumed if key.startswith("networks.")} == {"a_to_b", "b_to_a",
                                                                                   "critic_a", "critic_b"}
    assert any(key.startswith("stabilizers.0.critic_a.pool") for key in resumed)
    assert any(key.startswith("stabilizers.1.b_to_a.") for key in resumed)
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/g_cycle" in row and "grad_norm/generators" in row for row in rows)
    assert any("eval/AtoB/ssim" in row and "eval/BtoA/ssim" in row for row in rows)  # both directions evaluated
    best = state.read(run / "checkpoints" / "best.safetensors")[1]["best"]
    assert best["metric"] == "eval/AtoB/ssim"  # train.best_metric, of the method's first direction
    assert "Held-out AtoB/ssim (higher is better)" in (run / "report" / "index.html").read_text()
    assert (run / "samples" / "step_00000006.png").is_file() and (run / "report" / "index.html").is_file()

    image = tmp_path / "label.png"
    write_image(image, torch.rand(3, 24, 40), 8)
    for direction in ("AtoB", "BtoA"):
        invoke("translate", str(run), str(image), "--out", str(tmp_path / direction), "--direction", direction)
        assert (tmp_path / direction / "label.png").is_file()
        evaluated = invoke("eval", str(run), "--no-fid", "--json", "--direction", direction)
        report = json.loads(evaluated.splitlines()[-1])  # after the progress lines on stderr
        assert report["direction"] == direction and report["ema"] and 0 < report["l1"] < 2


@pytest.mark.slow
def test_the_example_method_installs_with_pip_and_runs_through_the_cli(tmp_path: Path):
    from test_third_party_plugins import Env

    env = Env(tmp_path / "venv")
    source = tmp_path / "cgan-example-method"  # a copy: building writes into the source folder
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env.pip("install", "--no-deps", "--no-build-isolation", str(source))
    assert "two_way" in env.cgan("list", "methods", env={"CGAN_STRICT_PLUGINS": "1"}).stdout
    recipe = tmp_path / "two_way.toml"
    recipe.write_text(RECIPE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    one_thread = {"OMP_NUM_THREADS": "1"}
    env.cgan("run", str(recipe), "--until", "3", env=one_thread)
    run = tmp_path / "runs" / "two_way"
    env.cgan("run", "--resume", str(run), env=one_thread)
    image = tmp_path / "label.png"
    write_image(image, torch.rand(3, 32, 32), 8)
    env.cgan("translate", str(run), str(image), "--out", str(tmp_path / "out"), "--direction", "BtoA",
             env=one_thread)
    report = json.loads(env.cgan("eval", str(run), "--no-fid", "--json", "--direction", "BtoA",
                                 env=one_thread).stdout)
    assert report["step"] == 6 and report["direction"] == "BtoA"
