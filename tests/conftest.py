"""Shared helpers: the real CLI in a subprocess, and a tiny recipe that trains in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACADES = Path(os.environ.get("CGAN_FACADES", ROOT.parent / "shared" / "datasets" / "facades"))

TINY_RECIPE = """
[data]
type = "synthetic"
size = 32
length = 64

[generator]
type = "unet"
depth = 5
ngf = 4

[critic]
type = "patchgan"
n_layers = 2
ndf = 4

[[losses]]
type = "bce"

[[losses]]
type = "l1"
weight = 100.0

[train]
steps = 6
batch_size = 2
log_every = 2
sample_every = 3
checkpoint_every = 3
eval_every = 3
eval_images = 8
precision = "fp32"  # tests compare runs to 1e-5; "auto" is bf16 on CPUs with hardware bf16
eval_fid = "off"  # FID during training is tested in test_fid_training.py; elsewhere it only costs time
"""


def cgan(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str | None] | None = None,
         check: bool | None = None) -> subprocess.CompletedProcess:
    """Run the real `cgan` command line; check=True asserts exit 0, check=False asserts it failed.
    ``env`` adds variables to the environment, or removes those given as None."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    result = subprocess.run([sys.executable, "-m", "cgan_kit", *args], capture_output=True, text=True,
                            cwd=cwd, timeout=timeout, env=full_env)
    if check is True:
        assert result.returncode == 0, f"cgan {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    elif check is False:
        assert result.returncode != 0, f"cgan {' '.join(args)} should have failed:\n{result.stdout}"
    return result


# The models in tests are tiny: one thread computes them as fast as two, and OpenMP threads competing
# with other work for the same cores can make a step many times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _share_the_cores() -> int:
    """The CPU threads each pytest worker, and each `cgan` process it starts, may use: the cores
    divided among the workers (at least one), instead of every process taking all of them, which
    made busy-waiting OpenMP threads collapse (issue 18). Set before torch starts its threads."""
    import math

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, math.floor(cores / workers))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # inherited by every cgan subprocess
    return threads


SHARED_THREADS = _share_the_cores()


def cgan_one_thread(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The real `cgan` command line in a subprocess, with one compute thread."""
    return cgan(*args, env=ONE_THREAD, **kwargs)


def one_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The single `error:` line of a failed command: exit 2, no traceback, holding every fragment."""
    assert result.returncode == 2, f"exit {result.returncode}, expected 2:\n{result.stderr}"
    assert "Traceback" not in result.stderr and '  File "' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one error line:\n{result.stderr}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    return path


@pytest.fixture(scope="module")
def half_trained(tmp_path_factory) -> Path:
    """A tiny run stopped at step 3 of 6 by --until: checkpoints 0 and 3 (Adam state), samples, an
    evaluation and best.safetensors (by L1). Shared by a module's tests: change copies of it."""
    folder = tmp_path_factory.mktemp("half_trained")
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY_RECIPE + f'out_dir = "{(folder / "runs").as_posix()}"\nbest_metric = "l1"\n')
    cgan("run", str(recipe), "--until", "3", check=True, env=ONE_THREAD)
    return folder / "runs" / "tiny"


# ---------------------------------------------------------------------------------------------
# The fast tier: `pytest -m "not slow"` runs what needs no subprocess, venv, browser or real data.

SLOW_SIGNS = ("cgan(", "cgan_one_thread(", "subprocess", "Env(", "webdriver", "FACADES", "torchrun")


def _is_slow(item: pytest.Item) -> bool:
    """A test is slow if it, or a fixture it uses, starts `cgan` processes, a virtual environment
    or a browser, or reads the facades data (marked by what its source does, so it stays right)."""
    import inspect

    functions = [getattr(item, "function", None)]
    for definitions in getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values():
        functions.extend(definition.func for definition in definitions)
    for function in functions:
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        if any(sign in source for sign in SLOW_SIGNS):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" not in item.keywords and _is_slow(item):
            item.add_marker(pytest.mark.slow)
