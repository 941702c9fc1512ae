"""The built wheel on its own (issue 16): installed (not editable) into a fresh environment, it runs
the quickstart by name from an empty folder, lists every command in `cgan --help`, exports a model
that translates through the README's Python example without its run folder, and logs to the
trackers whose extras are present.

Nothing is downloaded: the wheel is built without build isolation, and the fresh environment sees
the test environment's dependencies (torch, numpy, ...) through a path file that leaves out every
trace of cgan-kit's own checkout, so that only the wheel provides it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from test_loggers import same_as_the_metrics_file, tracker_env, wandb_records

pytestmark = pytest.mark.slow

OURS = re.compile(r"^(cgan_kit|cgan_pix2pix|cgan_cyclegan|__editable__.*cgan.*|cgan_kit-.*\.dist-info"
                  r"|cgan_kit-.*\.egg-info|.*\.pth)$")
ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis")
AT_THE_TOP = {".git", ".venv", "runs", "data", "build", "dist"}  # cgan_kit/runs/ is a package: only the top


def source_ignored(folder: str, names: list[str]) -> set[str]:
    top = Path(folder).resolve() == ROOT.resolve()
    return set(ANYWHERE(folder, names)) | ({name for name in names if name in AT_THE_TOP} if top else set())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the source (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=source_ignored, symlinks=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "-w", str(tmp / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = (tmp / "dist").glob("cgan_kit-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> dict[str, Path]:
    """A new virtual environment holding the wheel; the test environment's other packages are
    reachable through a folder of links to them that leaves cgan-kit's own out."""
    tmp = tmp_path_factory.mktemp("fresh")
    env = tmp / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = Path(__import__("torch").__file__).parent.parent  # the test environment's site-packages
    deps = tmp / "deps"
    deps.mkdir()
    for entry in ours.iterdir():
        if not OURS.match(entry.name):
            (deps / entry.name).symlink_to(entry)
    (site / "test-environment-dependencies.pth").write_text(f"{deps}\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-index", "--disable-pip-version-check", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp / "work"
    work.mkdir()
    return {"python": python, "cgan": env / "bin" / "cgan", "work": work, "site": site}


def run(fresh: dict[str, Path], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CGAN_", "PYTHON", "WANDB_", "MLFLOW_"))}
    home = fresh["work"].parent / "home"
    home.mkdir(exist_ok=True)
    environment.update({k: v for k, v in tracker_env(home).items() if v is not None})
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=fresh["work"], env=environment,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_holds_the_package_the_plugins_and_their_recipes_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {"cgan_kit", "cgan_pix2pix", "cgan_cyclegan"} <= tops
    packages = {str(path.parent.relative_to(ROOT)) for top in ("cgan_kit", "plugins/cgan_pix2pix",
                                                               "plugins/cgan_cyclegan")
                for path in (ROOT / top).rglob("__init__.py")}
    assert {p.removeprefix("plugins/") for p in packages} <= {str(Path(name).parent) for name in names}
    assert not {"tests", "benchmarks", "examples", "recipes", "docs", "scripts"} & tops
    recipes = {Path(name).stem for name in names if name.endswith(".toml") and "/recipes/" in name}
    assert recipes == {path.stem for path in (ROOT / "recipes").glob("*.toml")}
    assert "cgan_kit/py.typed" in names
    metadata = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "[cgan_kit]" in entry_points and "[cgan_kit.commands]" in entry_points
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE")
               for name in names)


def test_a_fresh_environment_with_only_the_wheel_trains_exports_and_translates(fresh):
    python = str(fresh["python"])
    # cgan-kit comes from the wheel, not from the checkout.
    where = run(fresh, python, "-c", "import cgan_kit, cgan_pix2pix; print(cgan_kit.__file__, cgan_pix2pix.__file__)")
    assert str(ROOT) not in where.stdout and str(fresh["site"]) in where.stdout

    helped = run(fresh, str(fresh["cgan"]), "--help").stdout
    for command in ("run", "check", "list", "describe", "init", "translate", "eval", "export", "report", "env",
                    "data", "convert-reference"):
        assert re.search(rf"^  {re.escape(command)}\b", helped, re.MULTILINE), command

    assert "quickstart" in run(fresh, str(fresh["cgan"]), "list", "recipes").stdout
    trackers = [name for name in ("mlflow", "wandb") if importlib.util.find_spec(name) is not None]
    if os.environ.get("CGAN_REQUIRE_TRACKERS") == "1":
        assert trackers == ["mlflow", "wandb"], "CI installs both trackers' extras"
    loggers = json.dumps(["jsonl", "tensorboard", "report", *trackers])
    trained = run(fresh, str(fresh["cgan"]), "run", "quickstart", "--set", "train.steps=6", "--set",
                  "train.eval_images=4", "--set", "train.threads=1", "--set", "train.log_every=2",
                  "--set", f"train.loggers={loggers}")
    folder = fresh["work"] / "runs" / "quickstart"
    assert (folder / "checkpoints" / "step_00000006.safetensors").is_file(), trained.stderr
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    if "mlflow" in trackers:  # the store holds the run's scalars, read with MLflow's own client
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{(folder.parent / 'mlflow.db').as_posix()}")
        run_id = json.loads((folder / "loggers.json").read_text())["mlflow"]["run_id"]
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss/critic"))
        same_as_the_metrics_file(logged, rows, "loss/critic")
    if "wandb" in trackers:  # the offline folder holds them too
        run_id = json.loads((folder / "loggers.json").read_text())["wandb"]["id"]
        (session,) = (folder / "wandb").glob(f"offline-run-*-{run_id}")
        history = {}
        for record in wandb_records(session / f"run-{run_id}.wandb"):
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                history.setdefault(row["step"], {}).update(row)
        same_as_the_metrics_file([(step, row["loss/critic"]) for step, row in sorted(history.items())
                                  if "loss/critic" in row], rows, "loss/critic")

    run(fresh, str(fresh["cgan"]), "export", str(folder), "--format", "safetensors", "--out", "model")
    assert {p.name for p in (fresh["work"] / "model").iterdir()} >= {"model.safetensors", "config.json"}
    shutil.rmtree(folder)  # the exported model stands on its own

    # The README's three lines, as written there, on an image of the model's size.
    snippet = _readme_python_example()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        fresh["work"] / "label.png")
    run(fresh, python, "-c", snippet)
    translated = Image.open(fresh["work"] / "translated.png")
    assert translated.size == (32, 32) and translated.mode == "RGB"


def _readme_python_example() -> str:
    """The README's first Python example (the one that loads an exported model)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("## Python API"):], re.DOTALL)
    assert blocks, "the README's Python API section has no example"
    return blocks[0]
