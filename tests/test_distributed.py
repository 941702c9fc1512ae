"""Data-parallel training with torchrun on the CPU (gloo): the same update as one process, and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cgan_kit.runs import checkpoint
from conftest import TINY_RECIPE, cgan

# Instance norm and no dropout: nothing couples the images of a batch, so batch 1 on each of two
# processes must make exactly the update that one process makes with batch 2. The norm is affine
# so that no convolution keeps a bias the norm cancels: such a bias has a zero gradient up to
# rounding, and Adam would blow that rounding up to a full step of either sign.
NORM = '{ type = "instance", affine = true }'
PER_IMAGE = (TINY_RECIPE.replace("ngf = 4", f"ngf = 4\nnorm = {NORM}\ndropout = 0.0")
             .replace("ndf = 4", f"ndf = 4\nnorm = {NORM}"))


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "ddp.toml"
    path.write_text(PER_IMAGE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    return path


def weights(run):
    tensors, meta = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    return {k: v for k, v in tensors.items() if k.startswith(("networks.generator.", "networks.critic."))}, meta


def test_two_processes_with_batch_1_update_like_one_process_with_batch_2(recipe, tmp_path):
    common = ["--set", "train.steps=3", "--set", "train.checkpoint_every=3", "--set", "train.log_every=1"]
    cgan("run", str(recipe), "--set", "train.name=single", "--set", "train.batch_size=2", *common,
         check=True)
    result = cgan("run", str(recipe), "--nproc", "2", "--set", "train.name=ddp", "--set", "train.batch_size=1",
                  *common, check=True)
    assert "2 processes" in result.stderr
    single, single_meta = weights(tmp_path / "runs" / "single")
    ddp, ddp_meta = weights(tmp_path / "runs" / "ddp")
    assert single_meta["step"] == ddp_meta["step"] == 3 and single_meta["batches"] == ddp_meta["batches"] == 3
    assert single.keys() == ddp.keys() and len(single) > 10
    worst = max((single[k] - ddp[k]).abs().max().item() for k in single)
    assert worst < 1e-5, worst
    # ...and the networks did move: the comparison is not between two untouched initializations.
    start, _ = checkpoint.load(tmp_path / "runs" / "ddp" / "checkpoints" / "step_00000000.safetensors")
    assert max((start[k] - ddp[k]).abs().max().item() for k in ddp) > 3e-4  # three Adam steps of 2e-4


def test_distributed_run_resumes(recipe, tmp_path):
    run = tmp_path / "runs" / "ddp"
    cgan("run", str(recipe), "--nproc", "2", "--until", "2", check=True)
    assert checkpoint.saved_steps(run / "checkpoints")[-1][0] == 2
    resumed = cgan("run", "--resume", str(run), "--nproc", "2", "--set", "train.steps=4", check=True)
    assert "from step 2" in resumed.stderr
    _, meta = weights(run)
    assert meta["step"] == 4 and meta["batches"] == 4
    assert len(list((run / "checkpoints").glob("*.tmp*"))) == 0


def test_a_failing_distributed_run_is_one_clean_error(recipe):
    result = cgan("run", str(recipe), "--nproc", "2", "--set", "train.batch_size=40")  # 64 < 40 * 2 images
    assert result.returncode == 2
    # Both processes fail alike: their error is said once, and torchrun's own report is left out.
    errors = [line for line in result.stderr.splitlines() if "fewer than train.batch_size = 40 times 2" in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and result.stderr.strip().endswith(errors[0][7:])
    assert "Traceback" not in result.stderr and "exitcode" not in result.stderr


def test_a_distributed_run_refused_on_resume_is_one_line_and_debug_shows_everything(recipe, tmp_path):
    cgan("run", str(recipe), "--nproc", "2", "--set", "train.steps=2", check=True)
    run = tmp_path / "runs" / "ddp"
    result = cgan("run", "--resume", str(run), "--nproc", "2", "--set", "generator.ngf=8")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "has shape" in lines[0], result.stderr
    debug = cgan("--debug", "run", "--resume", str(run), "--nproc", "2", "--set", "generator.ngf=8")
    assert debug.returncode != 0 and debug.stderr.count("Traceback") >= 2  # each process's own


def test_ctrl_c_stops_every_process_after_its_step_and_rank_0_saves(recipe, tmp_path):
    run = tmp_path / "runs" / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
    process = subprocess.Popen([sys.executable, "-m", "cgan_kit", "run", str(recipe), "--nproc", "2",
                                "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000",
                                "--set", "train.log_every=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # its own process group, as a terminal's job
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or "loss/critic" not in (run / "metrics.jsonl").read_text():
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C; torchrun passes it on to the processes
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted: the 2 processes stopped")
    step, path = checkpoint.saved_steps(run / "checkpoints")[-1]
    assert step >= 1 and f"interrupted at step {step}; saved {path}" in stderr, stderr
    assert checkpoint.load(path)[1]["step"] == step
