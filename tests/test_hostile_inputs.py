"""Hostile inputs, racing processes and full disks (issue 15): checkpoints validated whole before
use, absurd recipes refused with an estimate, run folders claimed and locked, outputs that never
destroy inputs, OS errors and signals as one line, and plugins that break their contract named.
Images are covered in test_images.py, metrics.jsonl and the report in test_hostile_outputs.py,
and a fuzz test of checkpoint files in test_checkpoint_fuzz.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, safe_open, save_file

from cgan_kit.cli.main import cli
from cgan_kit.errors import CganError
from cgan_kit.plugin_api import plugins
from cgan_kit.runs.folder import RunFolder, RunLock, claim_new
from conftest import ROOT, TINY_RECIPE, cgan, one_error
from test_checkpoint import small_disk


def copy_run(half_trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "tiny"
    shutil.copytree(half_trained, run)
    return run


def rewrite(path: Path, tensors: dict | None = None, meta: dict | None = None) -> None:
    """Write a checkpoint again with some tensors or metadata fields replaced (None: deleted)."""
    with safe_open(str(path), "pt") as handle:
        old_meta = json.loads(handle.metadata()["cgan_kit"])
    old = load_file(str(path))
    for key, value in (tensors or {}).items():
        old.pop(key, None) if value is None else old.__setitem__(key, value)
    for key, value in (meta or {}).items():
        old_meta.pop(key, None) if value is None else old_meta.__setitem__(key, value)
    save_file(old, str(path), metadata={"cgan_kit": json.dumps(old_meta)})


# --- 1. a checkpoint is validated whole before anything from it is used --------------------------------


def test_optimizer_moments_of_the_wrong_shape_are_refused_not_a_segfault(half_trained, tmp_path):
    """Before: the fused Adam step wrote past its buffers and the resume died of SIGSEGV."""
    run = copy_run(half_trained, tmp_path)
    latest = run / "checkpoints" / "step_00000003.safetensors"
    rewrite(latest, {"optim.critic.0.exp_avg": torch.zeros(3)})
    result = cgan("run", "--resume", str(run), "--set", "train.steps=8")
    one_error(result, str(latest), "tensor optim.critic.0.exp_avg is torch.float32 [3]", "[4, 6, 4, 4]")
    assert (run / "checkpoints" / "step_00000003.safetensors").is_file()  # nothing lost or replaced
    assert not (run / "checkpoints" / "step_00000006.safetensors").exists()


@pytest.mark.parametrize("tensors, meta, fragment", [
    ({"networks.generator.down.0.0.weight": None}, None, "missing down.0.0.weight"),
    ({"networks.generator.down.0.0.weight": torch.zeros(4, 3, 4, 4, dtype=torch.float64)}, None,
     "is torch.float64, the generator holds torch.float32"),
    ({"rng.cpu": torch.zeros(7, dtype=torch.uint8)}, None, "tensor rng.cpu is torch.uint8 [7]"),
    ({"optim.generator.0.step": torch.tensor(3)}, None, "is torch.int64 [], expected a floating-point scalar"),
    ({"optim.generator.0.exp_avg_sq": None}, None, "tensors optim.generator.0.* hold ['exp_avg', 'step']"),
    ({"optim.generator.999.exp_avg": torch.zeros(1)}, None, "names no parameter of optimizer generator"),
    ({"elsewhere.x": torch.zeros(1)}, None, "tensor elsewhere.x belongs to nothing"),
    (None, {"step": "3"}, "metadata field step is '3'"),
    (None, {"batches": -1}, "metadata field batches is -1"),
    (None, {"optimizer_groups": [1]}, "metadata field optimizer_groups is [1]"),
    (None, {"best": {"metric": "eval/l1"}}, "metadata field best"),
    (None, {"grad_scalers": {"generator": {"scale": "big"}}}, "grad_scalers.generator"),
    (None, {"recipe": None}, "metadata field recipe is None, not the recipe's text"),
    ({"optim.generator.0.exp_avg_sq": torch.full((4, 3, 4, 4), -1.0)}, None, "are negative"),
    ({"optim.generator.0.step": torch.tensor(-5.0)}, None, "is -5.0, not a step count"),
])
def test_every_entry_of_a_checkpoint_is_checked_before_a_resume_loads_it(half_trained, tmp_path, tensors, meta,
                                                                          fragment):
    from cgan_kit.config.build import build_models
    from cgan_kit.config.recipe import load
    from cgan_kit.runs import state
    from cgan_kit.training.updates import build_optimizers

    run = copy_run(half_trained, tmp_path)
    path = run / "checkpoints" / "step_00000003.safetensors"
    rewrite(path, tensors, meta)
    recipe = load(run / "recipe.toml")
    torch.manual_seed(0)
    models = build_models(recipe, plugins.registry())
    models.setup_stabilizers(recipe.train.steps)
    optimizers = build_optimizers(models, recipe.optim, torch.device("cpu"))
    scalers = {name: torch.amp.GradScaler("cpu", enabled=False) for name in optimizers}
    before = {key: value.clone() for key, value in models.networks["generator"].state_dict().items()}
    with pytest.raises(CganError) as info:
        state.restore(path, models, optimizers, scalers)
    assert fragment in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    after = models.networks["generator"].state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)  # nothing was half-loaded
    assert all(not optimizer.state for optimizer in optimizers.values())


@pytest.mark.parametrize("key, value, fragment", [
    ("maximize", None, "maximize is None, expected a value like False"),  # before: a TypeError in the fused step
    ("betas", [0.5, 7.0], "Adam needs betas in [0, 1) and eps > 0"),  # before: NaN weights after one step
    ("eps", 0, "Adam needs betas in [0, 1) and eps > 0"),
    ("lr", None, "lr is None"),
])
def test_an_optimizer_group_that_would_break_the_step_is_refused(half_trained, tmp_path, key, value, fragment):
    run = copy_run(half_trained, tmp_path)
    path = run / "checkpoints" / "step_00000003.safetensors"
    with safe_open(str(path), "pt") as handle:
        groups = json.loads(handle.metadata()["cgan_kit"])["optimizer_groups"]
    groups["generator"][0][key] = value
    rewrite(path, meta={"optimizer_groups": groups})
    one_error(cgan("run", "--resume", str(run), "--set", "train.steps=8"), str(path), fragment)


def test_an_integer_of_5000_digits_is_one_line_wherever_it_comes_from(half_trained, tmp_path):
    huge = "9" * 5000
    recipe, plain = tmp_path / "huge.toml", tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE + f"seed = {huge}\n")
    plain.write_text(TINY_RECIPE)
    for result in (CliRunner().invoke(cli, ["check", str(recipe)]),
                   CliRunner().invoke(cli, ["check", str(plain), "--set", f"train.seed={huge}"])):
        assert result.exit_code == 2 and "4300" in result.output and "Traceback" not in result.output, result.output
    run = copy_run(half_trained, tmp_path)
    path = run / "checkpoints" / "step_00000003.safetensors"
    with safe_open(str(path), "pt") as handle:
        text = json.loads(handle.metadata()["cgan_kit"])["recipe"]
    rewrite(path, meta={"recipe": text.replace("seed = 0", f"seed = {huge}", 1)})
    one_error(cgan("export", str(path), "--format", "pt2", "--out", str(tmp_path / "g.pt2")), str(path))


def test_the_recipe_inside_a_checkpoint_meets_the_same_bounds_as_a_recipe_file(half_trained, tmp_path):
    run = copy_run(half_trained, tmp_path)
    path = run / "checkpoints" / "step_00000003.safetensors"
    with safe_open(str(path), "pt") as handle:
        text = json.loads(handle.metadata()["cgan_kit"])["recipe"]
    rewrite(path, meta={"recipe": text.replace("depth = 5", "depth = 5000")})
    image = tmp_path / "in.png"
    from PIL import Image
    Image.new("RGB", (32, 32), "red").save(image)
    result = cgan("translate", str(path), str(image), "--out", str(tmp_path / "out"))
    one_error(result, "generator.depth: must be <= 16, found integer 5000")
    huge = text.replace("ngf = 4\n", "ngf = 4096\n").replace("max_channels = 512", "max_channels = 16384")
    rewrite(path, meta={"recipe": huge.replace("depth = 5", "depth = 10")})
    one_error(cgan("translate", str(path), str(image), "--out", str(tmp_path / "out")),
              "the networks have", "GiB, more than the", "make [generator] smaller")
    assert not (tmp_path / "out").exists()


# --- 2. resource bounds on recipes ----------------------------------------------------------------------


@pytest.mark.parametrize("override, fragment", [
    ("data.size=100000", "data.size: must be <= 4,096, found integer 100000"),
    ("data.length=1000000000000", "data.length: must be <= 100,000,000"),
    ("generator.depth=5000", "generator.depth: must be <= 16"),
    ("train.seed=18446744073709551616", "train.seed: must be <= 9,223,372,036,854,775,807"),
    ("data.size=" + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("data.size=" + "[" * 40 + "]" * 40, "data.size[0][0]"),
])
def test_absurd_sizes_are_refused_before_anything_is_built(tmp_path, override, fragment):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    result = CliRunner().invoke(cli, ["check", str(recipe), "--set", override])
    assert result.exit_code == 2 and fragment in result.output, result.output


def test_networks_too_large_for_the_machine_are_refused_with_the_estimate(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    result = CliRunner().invoke(cli, ["check", str(recipe), "--set", "generator.depth=10", "--set",
                                      "generator.ngf=4096", "--set", "generator.max_channels=16384"])
    assert result.exit_code == 2, result.output
    assert "the networks have 9.4e+10 parameters (generator 9.4e+10" in result.output
    assert "their weights alone need" in result.output and "make [generator] smaller" in result.output


def test_a_recipe_file_nested_too_deeply_is_one_line(tmp_path):
    recipe = tmp_path / "deep.toml"
    recipe.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = CliRunner().invoke(cli, ["check", str(recipe)])
    assert result.exit_code == 2 and "values nested too deeply to read" in result.output, result.output


# --- 3. run folders are claimed atomically and locked ----------------------------------------------------


def test_racing_claims_of_one_run_folder_all_get_their_own(tmp_path):
    """flock locks belong to each open file, so threads of one process race exactly as processes do."""
    claimed, locks, barrier = [], [], threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        run, lock = claim_new(tmp_path / "runs" / "tiny", lambda run: f"# {run.path.name}\n")
        claimed.append(run.path.name)
        locks.append(lock)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(["tiny"] + [f"tiny-{n}" for n in range(2, 9)])
    for name in claimed:
        assert (tmp_path / "runs" / name / "recipe.toml").read_text() == f"# {name}\n"
    for lock in locks:
        lock.release()


def test_two_runs_started_together_train_in_two_folders(tiny_recipe, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
    started = [subprocess.Popen([sys.executable, "-m", "cgan_kit", "run", str(tiny_recipe)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in started:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    runs = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert runs == ["tiny", "tiny-2"]
    for name in runs:
        rows = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in rows if "loss/generator" in row] == [2, 4, 6]  # one run's rows each


def test_a_live_run_cannot_be_resumed_and_a_dead_ones_lock_is_taken_over(tiny_recipe, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
    run = tmp_path / "runs" / "tiny"
    live = subprocess.Popen([sys.executable, "-m", "cgan_kit", "run", str(tiny_recipe), "--set",
                             "train.steps=100000", "--set", "train.checkpoint_every=100000"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (run / "checkpoints" / "step_00000000.safetensors").exists():
            assert live.poll() is None, "the run ended early"
            time.sleep(0.2)
        one_error(cgan("run", "--resume", str(run)), f"{run} is in use by process {live.pid} on ",
                  "cgan run", "wait for it to finish (or stop it)")
    finally:
        live.kill()  # SIGKILL: no cleanup, the lock file stays behind
        live.wait()
    assert (run / ".lock").is_file()
    result = cgan("run", "--resume", str(run), "--set", "train.steps=2", check=True)
    assert "done:" in result.stdout


def test_a_new_run_never_takes_a_folder_that_holds_anything(half_trained, tiny_recipe, tmp_path):
    """A folder of the run's name with someone's files, or a run whose recipe.toml was lost."""
    mine = tmp_path / "runs" / "tiny"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "a.txt").write_text("precious")
    lost = tmp_path / "runs" / "tiny-2"
    shutil.copytree(half_trained, lost)
    (lost / "recipe.toml").unlink()
    before = digest(lost / "checkpoints" / "step_00000003.safetensors")
    cgan("run", str(tiny_recipe), "--set", "train.steps=2", check=True)
    assert (tmp_path / "runs" / "tiny-3" / "checkpoints" / "step_00000002.safetensors").is_file()
    assert (mine / "photos" / "a.txt").read_text() == "precious" and sorted(os.listdir(mine)) == ["photos"]
    assert digest(lost / "checkpoints" / "step_00000003.safetensors") == before


def test_a_resume_that_fails_leaves_the_run_folder_as_it_was(half_trained, tmp_path):
    """Before: a resumed run without checkpoints that failed in setup was deleted whole."""
    run = copy_run(half_trained, tmp_path)
    shutil.rmtree(run / "checkpoints")
    (run / "NOTES.md").write_text("my notes")
    one_error(cgan("run", "--resume", str(run), "--set", "train.device=mps"), "train.device")
    assert (run / "NOTES.md").read_text() == "my notes" and (run / "recipe.toml").is_file()


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(half_trained, tmp_path):
    run = copy_run(half_trained, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("important")
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(victim)
    one_error(cgan("run", "--resume", str(run), "--set", "train.steps=8"), f"{run / '.lock'}: cannot be opened as "
              "the run's lock file")
    assert victim.read_text() == "important"


def test_a_lock_names_its_holder_in_process(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.make("# recipe\n")
    first = RunLock.acquire(run)
    try:
        with pytest.raises(CganError, match=rf"in use by process {os.getpid()} on "):
            RunLock.acquire(run)
    finally:
        first.release()
    RunLock.acquire(run).release()  # free again once released


# --- 5. outputs never destroy inputs --------------------------------------------------------------------


def _image(path: Path, colour: str = "red") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_translate_refuses_to_write_into_its_inputs_folder_or_its_run(half_trained, tmp_path):
    photo = _image(tmp_path / "photos" / "a.png")
    before = digest(photo)
    one_error(cgan("translate", str(half_trained), str(photo), "--out", str(tmp_path / "photos")),
              f"--out {tmp_path / 'photos'}: the inputs come from this folder")
    assert digest(photo) == before
    for part in ("", "checkpoints", "samples"):
        one_error(cgan("translate", str(half_trained), str(photo), "--out", str(half_trained / part)),
                  "which this command reads")


def test_translate_refuses_a_special_file_as_output_and_replaces_files_atomically(half_trained, tmp_path):
    photo = _image(tmp_path / "photos" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "a.png")  # writing into it would block forever
    one_error(cgan("translate", str(half_trained), str(photo), "--out", str(out)), "it is a special file")
    (out / "a.png").unlink()
    (out / "a.png").write_text("an older output")
    cgan("translate", str(half_trained), str(photo), "--out", str(out), check=True)
    assert (out / "a.png").read_bytes().startswith(b"\x89PNG") and sorted(os.listdir(out)) == ["a.png"]


def test_export_refuses_to_write_over_the_checkpoint_or_the_run_it_reads(half_trained, tmp_path):
    latest = half_trained / "checkpoints" / "step_00000003.safetensors"
    before = digest(latest), digest(half_trained / "recipe.toml")
    for target in (latest, half_trained / "recipe.toml", half_trained / "metrics.jsonl"):
        one_error(cgan("export", str(half_trained), "--format", "pt2", "--out", str(target)),
                  f"--out {target}: that is an input of this command")
    assert (digest(latest), digest(half_trained / "recipe.toml")) == before


def test_report_refuses_special_files_where_it_writes(half_trained, tmp_path):
    run = copy_run(half_trained, tmp_path)
    (run / "report" / "index.html").unlink()
    os.mkfifo(run / "report" / "index.html")
    one_error(cgan("report", str(run), "--no-samples"), "the report", "it is a special file")


# --- 7. every OS error is one line ----------------------------------------------------------------------


@pytest.mark.parametrize("part", ["samples", "tensorboard", "report", "metrics"])
def test_a_full_disk_under_any_part_of_a_run_is_one_line(half_trained, tmp_path, part):
    """Each part in turn on a full file system (a tmpfs filled to the last byte)."""
    run = copy_run(half_trained, tmp_path)
    with small_disk(tmp_path / "full", "8m") as disk:
        if part == "metrics":  # the whole run on the full disk: rewriting metrics.jsonl on resume is the first write
            shutil.rmtree(run)
            run = disk / "tiny"
            shutil.copytree(half_trained, run)
        else:
            shutil.rmtree(run / part, ignore_errors=True)
            (disk / part).mkdir()
            (run / part).symlink_to(disk / part)
        with open(disk / "filler", "wb", buffering=0) as filler:  # unbuffered: closing it has nothing to flush
            try:
                while True:
                    filler.write(b"\0" * 65536)
            except OSError:
                pass
        result = cgan("run", "--resume", str(run), "--set", "train.steps=6")
        if part == "report":  # the report is a by-product: a warning, and the run goes on
            assert result.returncode == 0, result.stderr
            assert "warning: cannot write the report" in result.stderr and "No space left" in result.stderr
            assert "Traceback" not in result.stderr
        else:
            one_error(result, "No space left on device", f"cgan run --resume {run}")


@pytest.mark.parametrize("device", ["mps", "meta", "cuda:7", "tpu"])
def test_a_device_that_does_not_exist_is_one_line_and_leaves_no_run_folder(tiny_recipe, tmp_path, device):
    one_error(cgan("run", str(tiny_recipe), "--set", f"train.device={device}"), "train.device")
    assert not (tmp_path / "runs" / "tiny").exists()
    one_error(cgan("translate", str(tiny_recipe), str(tiny_recipe), "--out", str(tmp_path / "o"), "--device",
                   device), "--device")


def test_a_name_too_long_is_one_line(tiny_recipe, tmp_path):
    (tmp_path / "runs").mkdir()  # (where it is missing, the missing folder is what the OS names)
    one_error(cgan("run", str(tiny_recipe), "--set", f"train.name={'n' * 300}"), "cannot write the run folder",
              "File name too long")
    long = str(tmp_path / "runs" / ("n" * 300))
    for command in (["run", "--resume", long], ["report", long], ["eval", long], ["translate", long, long, "--out",
                                                                                 str(tmp_path / "out")]):
        one_error(cgan(*command), "File name too long")


def test_bytes_that_are_not_utf8_in_names_and_values(tiny_recipe, tmp_path):
    """From a command line or a file name, as os.fsdecode hands them over (surrogates)."""
    one_error(cgan("run", str(tiny_recipe), "--set", "train.name=" + os.fsdecode(b"a\xffb")),
              "train.name: 'a\\udcffb' holds bytes that are not UTF-8 text")
    odd = tmp_path / os.fsdecode(b"odd\xff.toml")
    shutil.copy(tiny_recipe, odd)
    result = cgan("run", str(odd), "--set", "train.steps=2", check=True)
    assert "Traceback" not in result.stderr
    assert (tmp_path / "runs" / "odd\ufffd" / "checkpoints" / "step_00000002.safetensors").is_file()
    photos = tmp_path / "photos"
    _image(photos / os.fsdecode(b"\xfe.png"))
    cgan("translate", str(tmp_path / "runs" / "odd\ufffd"), str(photos), "--out", str(tmp_path / "out"), check=True)
    assert os.listdir(os.fsencode(tmp_path / "out")) == [b"\xfe.png"]


def test_sigterm_while_the_models_are_built_ends_as_ctrl_c_does_and_leaves_no_folder(tiny_recipe, tmp_path):
    """The signal arrives inside setup: a plugin dataset sleeps while it is built."""
    slow_plugin = tmp_path / "slow_plugin.py"
    slow_plugin.write_text(
        "import time\n"
        "from cgan_pix2pix.datasets import synthetic\n"
        "from cgan_kit import hookimpl\n\n"
        "def slow(split, augment, size: int = 32, length: int = 64, in_channels: int = 3, out_channels: int = 3):\n"
        "    '''A synthetic set that takes its time to build.'''\n"
        "    time.sleep(30)\n"
        "    return synthetic(split, augment, size=size, length=length)\n\n"
        "@hookimpl\n"
        "def register_datasets(register):\n"
        "    register('slow', slow)\n")
    script = tmp_path / "launch.py"
    script.write_text(
        "import sys\n"
        "from cgan_kit.plugin_api import plugins\n"
        "from cgan_kit.cli.main import main\n"
        "import slow_plugin\n"
        "with plugins.registered(slow_plugin, 'slow-plugin'):\n"
        "    sys.argv = ['cgan', 'run', sys.argv[1], '--set', 'data.type=slow']\n"
        "    main()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    process = subprocess.Popen([sys.executable, str(script), str(tiny_recipe)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "runs" / "tiny"
    while not (run / "recipe.toml").exists():
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error: ")] == \
        [f"error: interrupted before the first checkpoint; {run} was removed"]
    assert not run.exists()


def test_a_resumed_run_recreates_the_parts_a_user_deleted(half_trained, tmp_path):
    run = copy_run(half_trained, tmp_path)
    for part in ("samples", "report", "tensorboard"):
        shutil.rmtree(run / part)
    cgan("run", "--resume", str(run), check=True)
    assert sorted(p.name for p in (run / "samples").iterdir())[-1] == "step_00000006.png"
    assert (run / "report" / "index.html").is_file() and any((run / "tensorboard").iterdir())


# --- 8. plugin contract violations name the plugin ------------------------------------------------------


class BrokenPlugin:
    """Components that break their contracts, each in its own way."""

    from cgan_kit import hookimpl

    @hookimpl
    def register_generators(self, register):
        def not_a_module(in_channels: int, out_channels: int, depth: int = 5, ngf: int = 4):
            """Returns a string."""
            return "not a module"

        register("not_a_module", not_a_module)

    @hookimpl
    def register_losses(self, register):
        from cgan_kit.plugin_api.contracts import ReconstructionLoss

        class PerPixel(ReconstructionLoss):
            def __call__(self, output, target):
                return (output - target).abs()  # not reduced to a scalar

        def per_pixel():
            """An L1 that forgets to take the mean."""
            return PerPixel()

        register("per_pixel", per_pixel)

    @hookimpl
    def register_commands(self, cli):
        raise RuntimeError("commands exploded")


@pytest.mark.parametrize("override, fragment", [
    ("generator.type=not_a_module", 'generator: generator "not_a_module" built a str, not a torch.nn.Module; '
                                    "its plugin broken-plugin"),
    ("losses[1].type=per_pixel", 'losses[1]: loss "per_pixel" returned a tensor of shape [2, 3, 32, 32] from its '
                                 "call, not a scalar tensor; its plugin broken-plugin"),
])
def test_a_component_that_breaks_its_contract_names_its_plugin(tmp_path, override, fragment):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    with plugins.registered(BrokenPlugin(), "broken-plugin"):
        result = CliRunner().invoke(cli, ["check", str(recipe), "--set", override])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "CGAN_DISABLE_PLUGINS=broken-plugin" in result.output


def test_a_register_commands_hook_that_raises_costs_its_plugin_its_commands_not_the_cli():
    with plugins.registered(BrokenPlugin(), "broken-plugin"):
        runner = CliRunner()
        listing = runner.invoke(cli, ["plugins"])
        assert listing.exit_code == 0, listing.output
        assert "warning: plugin broken-plugin failed in register_commands" in listing.output
        assert "RuntimeError: commands exploded" in listing.output
        unknown = runner.invoke(cli, ["hello"])  # looked up among the plugins' commands: a usage error, no traceback
        assert unknown.exit_code == 2 and "No such command" in unknown.output and "Traceback" not in unknown.output
        assert runner.invoke(cli, ["data", "--help"]).exit_code == 0  # a package's command still works
