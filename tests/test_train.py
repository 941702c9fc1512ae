"""`cgan run` end to end on real data: run folders, exact resume, interruption, NaN guard, facades."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from cgan_kit.runs import checkpoint
from cgan_kit.training.schedule import lr_factor
from cgan_kit.device import cpu_native_bf16
from conftest import FACADES, ROOT, cgan

# Every stabilizer whose state must survive a resume: the pool, the average, the RNG they draw from.
STABILIZED = """
[[stabilizers]]
type = "history_buffer"
size = 4

[[stabilizers]]
type = "label_flipping"
probability = 0.2

[[stabilizers]]
type = "instance_noise"
sigma = 0.1

[[stabilizers]]
type = "ema"
decay = 0.9

[[stabilizers]]
type = "diffaugment"
"""


def final_state(run: Path) -> dict[str, torch.Tensor]:
    tensors, meta = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    return tensors, meta


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_folder_holds_recipe_checkpoints_samples_tensorboard_and_metrics(tiny_recipe, tmp_path):
    result = cgan("run", str(tiny_recipe), check=True)
    run = tmp_path / "runs" / "tiny"
    assert "done" in result.stdout
    assert (run / "recipe.toml").is_file()
    assert [step for step, _ in checkpoint.saved_steps(run / "checkpoints")] == [0, 3, 6]
    assert (run / "checkpoints" / checkpoint.BEST_NAME).is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [f"step_{s:08d}.png" for s in (0, 3, 6)]
    assert (run / "report" / "index.html").is_file() and "report/index.html" in result.stdout
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = metrics(run)
    assert [r["step"] for r in rows if "eval/l1" in r] == [0, 3, 6]
    logged = next(r for r in rows if "loss/critic" in r)
    for key in ("loss/generator", "loss/g_bce", "loss/g_l1", "critic/real_score", "critic/fake_score",
                "lr/generator", "lr/critic", "grad_norm/critic", "grad_norm/generator", "speed/images_per_s"):
        assert key in logged
    # Not a terminal: plain progress lines for CI logs, with losses, speed and ETA.
    assert "step 2/6" in result.stderr and "images_per_s" in result.stderr and "eta" in result.stderr
    # ... and each evaluation says it has begun, so that minutes of held-out images are not silence.
    for step in (0, 3, 6):
        assert re.search(rf"^step {step}/6: evaluating \d+ held-out images$", result.stderr, re.M), result.stderr
    # The saved recipe repeats the run: every default resolved, loadable as a recipe itself.
    again = cgan("check", str(run / "recipe.toml"), "--json", check=True)
    assert json.loads(again.stdout)["generator"]["type"] == "unet"
    # A second `cgan run` of the same recipe never overwrites the first: it gets a folder of its own.
    cgan("run", str(tiny_recipe), "--until", "1", check=True)
    assert (tmp_path / "runs" / "tiny-2" / "checkpoints" / "step_00000001.safetensors").is_file()
    assert [step for step, _ in checkpoint.saved_steps(run / "checkpoints")] == [0, 3, 6]


def test_resume_is_exact_n_plus_n_equals_2n(tiny_recipe, tmp_path):
    recipe = tiny_recipe.read_text() + STABILIZED
    tiny_recipe.write_text(recipe)
    cgan("run", str(tiny_recipe), "--set", "train.name=whole", check=True)
    # --until stops at step 3 of a 6-step run: the decaying noise and schedules still span 6 steps.
    cgan("run", str(tiny_recipe), "--set", "train.name=halves", "--until", "3", check=True)
    resumed = cgan("run", "--resume", str(tmp_path / "runs" / "halves"), check=True)
    assert "resuming" in resumed.stderr and "from step 3" in resumed.stderr

    whole, whole_meta = final_state(tmp_path / "runs" / "whole")
    halves, halves_meta = final_state(tmp_path / "runs" / "halves")
    assert whole_meta["step"] == halves_meta["step"] == 6
    assert whole.keys() == halves.keys()
    assert any(k.startswith("stabilizers.0.critic.pool") for k in whole)  # the history pool is saved
    assert any(k.startswith("optim.generator.") for k in whole)  # and Adam's moments
    different = [k for k in whole if not torch.equal(whole[k], halves[k])]
    assert different == []
    # The evaluation after resuming matches too: the held-out L1 at step 6 is the same number.
    assert metrics(tmp_path / "runs" / "whole")[-1] == {**metrics(tmp_path / "runs" / "halves")[-1]}


def test_ctrl_c_finishes_the_step_saves_and_resumes(tiny_recipe, tmp_path):
    run = tmp_path / "runs" / "tiny"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
    process = subprocess.Popen([sys.executable, "-m", "cgan_kit", "run", str(tiny_recipe),
                                "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000"],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() or "loss/critic" not in (run / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    step, path = checkpoint.saved_steps(run / "checkpoints")[-1]
    assert step >= 2 and f"interrupted at step {step}" in stderr
    resumed = cgan("run", "--resume", str(run), "--set", f"train.steps={step + 2}", check=True)
    assert f"from step {step}" in resumed.stderr
    assert checkpoint.saved_steps(run / "checkpoints")[-1][0] == step + 2


def test_a_nan_loss_stops_before_the_update_and_keeps_the_last_checkpoint(tiny_recipe, tmp_path):
    # A learning rate this large blows the networks up within a few steps, as a bad recipe would.
    result = cgan("run", str(tiny_recipe), "--set", "optim.lr=1e12", "--set", "train.steps=200",
                  "--set", "train.checkpoint_every=1000")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "loss is nan" in error or "loss is inf" in error
    assert "step_00000000.safetensors" in error and "optim.lr" in error
    tensors, meta = checkpoint.load(tmp_path / "runs" / "tiny" / "checkpoints" / "step_00000000.safetensors")
    assert meta["step"] == 0 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_skip_keeps_training_and_logs_the_skipped_updates(tiny_recipe, tmp_path):
    result = cgan("run", str(tiny_recipe), "--set", "optim.lr=1e12", "--set", "train.steps=12",
                  "--set", "train.on_nonfinite=skip", "--set", "train.log_every=4", check=True)
    skipped = [row["train/skipped_updates"] for row in metrics(tmp_path / "runs" / "tiny")
               if "train/skipped_updates" in row]
    assert skipped and skipped == sorted(skipped) and skipped[-1] > 0, result.stderr


@pytest.mark.parametrize("device_skips", [True, False], ids=["fused", "host-checked"])
def test_an_update_with_a_non_finite_loss_changes_nothing(device_skips):
    # The real update path on real torch: weights and Adam's moments stay as they were, and the
    # tally says so; a finite loss afterwards updates as usual.
    from cgan_kit.training import distributed
    from cgan_kit.training.updates import NonFiniteLosses, update

    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1, fused=device_skips)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    nonfinite = NonFiniteLosses(torch.device("cpu"), distributed.Context())
    inputs = torch.ones(4, 3)
    update(optimizer, scaler, net(inputs).sum(), net, "critic", 1, distributed.Context(), nonfinite, None)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moments = [optimizer.state[p]["exp_avg"].clone() for p in net.parameters()]
    update(optimizer, scaler, net(inputs).sum() * float("nan"), net, "generator", 2, distributed.Context(),
           nonfinite, None)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(m, optimizer.state[p]["exp_avg"]) for m, p in zip(moments, net.parameters()))
    assert int(nonfinite.count) == 1 and int(nonfinite.first_step) == 2 and int(nonfinite.first_what) == 1
    update(optimizer, scaler, net(inputs).sum(), net, "critic", 3, distributed.Context(), nonfinite, None)
    assert not torch.equal(before["weight"], net.weight.detach()) and int(nonfinite.count) == 1


def test_schedules_have_the_documented_values():
    assert [lr_factor("constant", s, 100) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert [lr_factor("linear_decay", s, 100, 0.5) for s in (0, 49, 50, 75, 100)] == [1, 1, 1, 0.5, 0]
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0)


def test_the_logged_learning_rate_follows_the_schedule(tiny_recipe, tmp_path):
    cgan("run", str(tiny_recipe), "--set", "optim.schedule=linear_decay", "--set", "optim.decay_start=0.5",
         "--set", "optim.critic_lr_factor=2.0", "--set", "train.log_every=1", check=True)
    rows = {r["step"]: r for r in metrics(tmp_path / "runs" / "tiny") if "lr/generator" in r}
    # Step s (1-based) is the update made at 0-based step s - 1: 3 steps at 2e-4, then 3/3, 2/3, 1/3.
    assert [round(rows[s]["lr/generator"] / 2e-4, 6) for s in range(1, 7)] == [1, 1, 1, 1, round(2 / 3, 6),
                                                                               round(1 / 3, 6)]
    assert rows[1]["lr/critic"] == pytest.approx(4e-4)


def test_missing_release_folder_names_the_download_command(tmp_path):
    result = cgan("run", str(ROOT / "recipes" / "pix2pix_facades.toml"),
                  "--set", f"data.root={tmp_path / 'data' / 'facades'}", "--set", f"train.out_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cgan data download facades --dir {tmp_path / 'data'}" in result.stderr


@pytest.mark.skipif(not FACADES.is_dir(), reason=f"the facades set is not at {FACADES} (set CGAN_FACADES)")
def test_the_papers_facades_setup_runs_on_real_data_and_resumes(tmp_path):
    recipe = str(ROOT / "recipes" / "pix2pix_facades.toml")
    common = ["--set", f"train.out_dir={tmp_path}", "--set", "train.eval_images=2"]
    cgan("run", recipe, "--set", f"data.root={FACADES}", "--set", "train.steps=2", *common, check=True,
         timeout=600)
    run = tmp_path / "pix2pix_facades"
    assert checkpoint.saved_steps(run / "checkpoints")[-1][0] == 2
    resumed = cgan("run", "--resume", str(run), "--set", "train.steps=3", *common, check=True, timeout=600)
    assert "from step 2" in resumed.stderr
    tensors, meta = final_state(run)
    assert meta["step"] == 3 and meta["batches"] == 3
    assert sum(v.numel() for k, v in tensors.items() if k.startswith("networks.generator.") and "running" not in k
               and "num_batches" not in k) == 54_413_955


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(tiny_recipe):
    result = cgan("run", str(tiny_recipe), "--set", "train.precision=auto", "--until", "1", check=True)
    expected = "bf16" if cpu_native_bf16() else "fp32"  # this machine's CPU decides; the log says
    assert f"(pix2pix, cpu, {expected}, 64 training examples; " in result.stderr, result.stderr


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train_and_resume(tiny_recipe, tmp_path, precision):
    overrides = ["--set", f"train.precision={precision}", "--set", "train.channels_last=true"]
    first = cgan("run", str(tiny_recipe), *overrides, "--until", "3", check=True)
    run = tmp_path / "runs" / "tiny"
    _, meta = final_state(run)
    # bf16 on a CPU that only emulates it is many times slower than fp32: the user is told.
    emulated = precision == "bf16" and not cpu_native_bf16()
    assert ("without hardware bf16" in first.stderr) == emulated, first.stderr
    if precision == "fp16":  # the loss scale is part of the state a resume needs
        assert meta["grad_scalers"]["generator"]["scale"] > 0
    else:
        assert meta["grad_scalers"] == {}
    cgan("run", "--resume", str(run), check=True)
    tensors, meta = final_state(run)
    assert meta["step"] == 6
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert metrics(run)[-1]["eval/l1"] < 2


def test_a_compiled_run_trains_like_the_eager_one_and_resumes(tiny_recipe, tmp_path):
    """train.compile on the CPU (Inductor's C++ kernels): the same training as eager up to kernel
    rounding, checkpoints of the plain modules (no _orig_mod. keys), and a compiled resume."""
    eager = tmp_path / "runs" / "tiny"
    cgan("run", str(tiny_recipe), "--until", "3", check=True)
    compiled = tmp_path / "runs" / "tiny-2"
    cgan("run", str(tiny_recipe), "--set", "train.compile=default", "--until", "3", check=True, timeout=600)
    expected, _ = final_state(eager)
    tensors, meta = final_state(compiled)
    assert meta["step"] == 3 and tensors.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(tensors[name], value, rtol=1e-3, atol=1e-5, msg=name)
    cgan("run", "--resume", str(compiled), check=True, timeout=600)
    tensors, meta = final_state(compiled)
    assert meta["step"] == 6 and tomllib.loads(meta["recipe"])["train"]["compile"] == "default"
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
