"""Nothing is lost: checkpoints survive kill -9 and full disks, and a bad one is one clear line.

Real runs of the `cgan` command, real files: truncated, pickled, foreign and too-new checkpoints fed
to `cgan run --resume`; a run killed with SIGKILL at random moments and resumed each time; and
checkpoint writes that hit a full tmpfs or a file size limit.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cgan_kit.runs import checkpoint
from cgan_kit.errors import CganError
from conftest import ROOT, TINY_RECIPE
from conftest import cgan_one_thread as cgan
from conftest import ONE_THREAD, one_error


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run trained to its end (checkpoints at steps 0, 3 and 6), never modified: copy it."""
    folder = tmp_path_factory.mktemp("finished")
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY_RECIPE + f'out_dir = "{(folder / "runs").as_posix()}"\n')
    cgan("run", str(recipe), check=True)
    return folder / "runs" / "tiny"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def newest(run: Path) -> Path:
    return checkpoint.latest(run / "checkpoints")


# --- 4. bad checkpoints ---------------------------------------------------------------------------------

def test_a_truncated_checkpoint_is_named_and_the_one_before_it_resumes(run_copy):
    path = newest(run_copy)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    one_error(cgan("run", "--resume", str(run_copy)), str(path), "is not a readable safetensors checkpoint",
              "truncated", f"move it out of {path.parent}")
    # Doing what the message says works: the previous checkpoint resumes.
    path.rename(run_copy / "damaged.safetensors")
    resumed = cgan("run", "--resume", str(run_copy), "--until", "4", check=True)
    assert "from step 3" in resumed.stderr
    assert checkpoint.load(newest(run_copy))[1]["step"] == 4


class MakesAFile:
    """A pickle that creates a file when unpickled: what a malicious .pth or .ckpt can do."""

    marker: Path

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_is_refused_without_running_it(run_copy, tmp_path):
    marker = tmp_path / "code-ran"
    MakesAFile.marker = marker
    path = newest(run_copy)
    torch.save({"generator": MakesAFile()}, path)  # a torch pickle under a checkpoint's name
    # Make sure the pickle does what it says when unpickled by something that runs pickles.
    with open(path, "rb") as handle:  # (torch.load hands a path ending in .safetensors to safetensors)
        torch.load(handle, weights_only=False)["generator"].close()
    assert marker.exists()
    marker.unlink()

    one_error(cgan("run", "--resume", str(run_copy)), str(path), "is a pickle", "not a safetensors checkpoint")
    with pytest.raises(CganError, match="is a pickle"):
        checkpoint.load(path)
    assert not marker.exists()


def test_a_checkpoint_of_another_recipe_names_the_tensor_whose_shape_differs(run_copy):
    recipe = run_copy / "recipe.toml"
    assert "\nngf = 4\n" in recipe.read_text()
    recipe.write_text(recipe.read_text().replace("\nngf = 4\n", "\nngf = 8\n", 1))
    error = one_error(cgan("run", "--resume", str(run_copy)), str(newest(run_copy)), "generator tensor",
                      "in the checkpoint but", "another recipe")
    assert "[4, " in error and "[8, " in error  # the channel counts of both, side by side


def test_a_newer_checkpoint_format_says_to_upgrade(finished_run, tmp_path):
    tensors, meta = checkpoint.load(newest(finished_run))
    path = checkpoint.step_path(tmp_path, meta["step"])
    checkpoint.save(path, tensors, {**meta, "format_version": checkpoint.FORMAT_VERSION + 1})
    with pytest.raises(CganError) as info:  # `cgan run --resume` shows it as the tests above show theirs
        checkpoint.load(path)
    assert str(info.value) == (f"{path} uses checkpoint format {checkpoint.FORMAT_VERSION + 1}, newer than this "
                               f"cgan-kit reads ({checkpoint.FORMAT_VERSION}); upgrade cgan-kit")


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc/self/maps (Linux)")
def test_loaded_tensors_do_not_keep_the_file_mapped(finished_run):
    path = newest(finished_run)
    tensors, _ = checkpoint.load(path)
    # A resumed run keeps Adam's moments from here for its whole life: on the file's pages, a pruned
    # checkpoint would go on holding its disk space, and a rewritten one would change them under it.
    assert str(path.resolve()) not in Path("/proc/self/maps").read_text()
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("metadata,message", [
    (None, "not a cgan-kit checkpoint"),
    ({"cgan_kit": "{not json"}, "metadata is not a JSON object"),
    ({"cgan_kit": "[1, 2]"}, "metadata is not a JSON object"),
    ({"cgan_kit": '{"step": 3}'}, "no valid format_version"),
    ({"cgan_kit": '{"format_version": "1"}'}, "no valid format_version"),
])
def test_foreign_and_damaged_safetensors_files_are_user_errors(tmp_path, metadata, message):
    path = tmp_path / "step_00000001.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata=metadata)
    with pytest.raises(CganError, match=message) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- 5. kill -9 -----------------------------------------------------------------------------------------

def test_kill_9_at_random_moments_loses_nothing_before_the_latest_checkpoint(tiny_recipe, tmp_path):
    run = tmp_path / "runs" / "tiny"
    seed = random.randrange(2**32)
    draw = random.Random(seed)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}, **ONE_THREAD}
    history = []  # (delay, newest step after the kill): printed if anything fails
    reached = -1
    for kill in range(3):
        args = (["run", str(tiny_recipe), "--set", "train.steps=100000", "--set", "train.checkpoint_every=2"]
                if kill == 0 else ["run", "--resume", str(run)])
        log = tmp_path / f"stderr-{kill}.txt"
        with open(log, "w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "cgan_kit", *args], stdout=subprocess.DEVNULL,
                                       stderr=stderr, env=env)
        try:
            deadline = time.monotonic() + 120
            # Wait until this process has saved a checkpoint of its own, then kill it at a random moment.
            while not checkpoint.saved_steps(run / "checkpoints") or \
                    checkpoint.saved_steps(run / "checkpoints")[-1][0] <= reached:
                assert process.poll() is None, (seed, history, log.read_text())
                assert time.monotonic() < deadline, (seed, history, log.read_text())
                time.sleep(0.05)
            delay = draw.uniform(0.5, 3.0)
            time.sleep(delay)
        finally:
            process.kill()
            process.wait()
        saved = checkpoint.saved_steps(run / "checkpoints")
        history.append((round(delay, 2), saved[-1][0]))
        for step, path in saved:  # every checkpoint on disk is complete, the newest above all
            tensors, meta = checkpoint.load(path)
            assert meta["step"] == step, (seed, history)
        assert any(key.startswith("optim.generator.") for key in tensors), (seed, history)
        assert saved[-1][0] > reached, (seed, history)
        reached = saved[-1][0]

    # What a kill in the middle of a save leaves behind is cleared by the next save.
    stale = run / "checkpoints" / f".step_{reached + 1:08d}.safetensors.tmp"
    stale.write_bytes(b"half a checkpoint")
    final = cgan("run", "--resume", str(run), "--until", str(reached + 3), check=True)
    assert f"from step {reached}" in final.stderr, (seed, history, final.stderr)
    step, path = checkpoint.saved_steps(run / "checkpoints")[-1]
    assert step == reached + 3 and checkpoint.load(path)[1]["step"] == reached + 3, (seed, history)
    assert temporary_files(run / "checkpoints") == [], (seed, history)


# --- 6. full disk ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` at ``folder``: a real file system that fills up (needs root, or skips the test)."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); "
                    "test_a_file_size_limit_keeps_the_previous_checkpoint covers it")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}); "
                    "test_a_file_size_limit_keeps_the_previous_checkpoint covers it")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def tiny_tmpfs(tmp_path) -> Path:
    with small_disk(tmp_path / "small-disk", "256k") as folder:
        yield folder


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tiny_tmpfs):
    path = checkpoint.step_path(tiny_tmpfs, 1)
    checkpoint.save(path, {"w": torch.arange(1000.0)}, {"step": 1})
    for target in (path, checkpoint.step_path(tiny_tmpfs, 2)):  # over the old one, and beside it
        with pytest.raises(CganError) as info:
            checkpoint.save(target, {"w": torch.ones(200_000)}, {"step": 2})  # 800 KB on a 256 KiB disk
        message = str(info.value)
        assert "\n" not in message and str(target) in message
        assert "No space left on device" in message and "the previous checkpoint is intact" in message
        assert os.listdir(tiny_tmpfs) == [path.name]
        tensors, meta = checkpoint.load(path)
        assert meta["step"] == 1 and torch.equal(tensors["w"], torch.arange(1000.0))


def test_a_run_that_fills_its_disk_stops_with_one_line_and_keeps_its_last_checkpoint(tiny_recipe, tmp_path):
    # The tiny run's checkpoints are about 1.25 MB (0.4 MB at step 0, before Adam has state). 3 MiB hold the
    # latest and the best besides the samples, logs and report, but not a third while the next is written.
    with small_disk(tmp_path / "small-disk", "3m") as disk:
        result = cgan("run", str(tiny_recipe), "--set", f"train.out_dir={disk}", "--set", "train.steps=1000",
                      "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=1")
        one_error(result, "cannot write checkpoint", "No space left on device", "the previous checkpoint is intact")
        folder = disk / "tiny" / "checkpoints"
        step, path = checkpoint.saved_steps(folder)[-1]
        assert step > 0 and checkpoint.load(path)[1]["step"] == step
        assert temporary_files(folder) == []


FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
import torch
from cgan_kit.runs import checkpoint
from cgan_kit.errors import CganError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    checkpoint.save(Path(sys.argv[1]), {"w": torch.ones(200_000)}, {"step": 2})
except CganError as error:
    print(error)
    sys.exit(2)
"""


def test_a_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    path = checkpoint.step_path(tmp_path, 1)
    checkpoint.save(path, {"w": torch.arange(1000.0)}, {"step": 1})
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stdout.strip().splitlines()) == 1, result.stdout
    assert f"cannot write checkpoint {path}: " in result.stdout and "File too large" in result.stdout
    assert os.listdir(tmp_path) == [path.name]
    tensors, meta = checkpoint.load(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.arange(1000.0))
