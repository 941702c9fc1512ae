"""Data-parallel training with torchrun on the CPU (gloo): the same update as one process, and resume."""

from __future__ import annotations

import pytest

from cgan_kit import checkpoint
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
    return {k: v for k, v in tensors.items() if k.startswith(("generator.", "critic."))}, meta


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
    assert single.keys() == ddp.keys()
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
    assert "fewer than train.batch_size = 40 times 2 processes" in result.stderr
    assert "distributed training with 2 processes failed" in result.stderr.strip().splitlines()[-1]
