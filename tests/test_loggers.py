"""Loggers (train.loggers, the register_loggers hook): what a logger receives, what its failures cost,
how a recipe names them, and the MLflow and W&B loggers for real (their extras installed: skipped
where they are not, a failure under CGAN_REQUIRE_TRACKERS=1, as in CI)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cgan_kit import Logger, hookimpl
from cgan_kit.cli.main import cli
from cgan_kit.plugin_api import plugins
from conftest import ROOT, TINY_RECIPE, cgan

EVENTS: list[tuple] = []  # what the in-process loggers below were told, in order


class Recorder(Logger):
    def __init__(self, label):
        self.label = label

    def start(self, run):
        EVENTS.append(("start", self.label, run))
        return {"sessions": run.saved.get("sessions", 0) + 1}

    def scalars(self, step, values, epoch):
        EVENTS.append(("scalars", step, dict(values), epoch))

    def image(self, tag, image, step):
        EVENTS.append(("image", tag, image.clone(), step))

    def flush(self, step, running):
        EVENTS.append(("flush", step, running))

    def close(self, outcome):
        EVENTS.append(("close", outcome))


class DownAtStep2(Logger):
    def scalars(self, step, values, epoch):
        if step == 2:
            raise ConnectionError("tracker unreachable")
        EVENTS.append(("flaky", step))

    def close(self, outcome):
        EVENTS.append(("flaky closed", outcome))


class WontStart(Logger):
    def start(self, run):
        raise RuntimeError("no such server")


def recorder(label: str = "plain") -> Logger:
    """Records every call, for the tests.

    Args:
        label: Any text: shows that [loggers.recorder] reaches the factory.
    """
    return Recorder(label)


class TestLoggers:
    @hookimpl
    def register_loggers(self, register):
        register("recorder", recorder)
        register("flaky", lambda: DownAtStep2())
        register("wont_start", lambda: WontStart())


def run_in_process(recipe: Path, *args: str, plugin=None):
    """`cgan run` through click in this process, with one compute thread."""
    with plugins.registered(plugin or TestLoggers(), "test-loggers"):
        return CliRunner().invoke(cli, ["run", *([str(recipe)] if recipe else []), *args, "--set", "train.threads=1"])


def error_line(result) -> str:
    """The one `error:` line of a failed in-process command (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


QUICK = ["--set", "train.steps=4", "--set", "train.log_every=1"]


def test_a_logger_receives_the_recipe_scalars_images_and_flushes_and_a_resume_hands_its_state_back(tiny_recipe):
    EVENTS.clear()
    chosen = ["--set", 'train.loggers=["jsonl", "recorder"]', "--set", 'loggers.recorder.label="hello"']
    result = run_in_process(tiny_recipe, *QUICK, *chosen, "--until", "2")
    assert result.exit_code == 0, result.output
    run = tiny_recipe.parent / "runs" / "tiny"
    (_, label, info), *calls = EVENTS
    assert label == "hello" and info.folder == run and info.name == "tiny"
    assert info.recipe["train"]["steps"] == 4 and info.recipe["train"]["loggers"] == ["jsonl", "recorder"]
    assert info.recipe["loggers"]["recorder"] == {"label": "hello"} and 'label = "hello"' in info.recipe_toml
    assert (info.start_step, info.total_steps, info.resumed, info.saved) == (0, 4, False, {})
    assert [c[1] for c in calls if c[0] == "scalars" and "loss/critic" in c[2]] == [1, 2]
    assert [c[1] for c in calls if c[0] == "scalars" and "eval/ssim" in c[2]] == [0, 2]
    images = [c for c in calls if c[0] == "image"]
    assert [(tag, step) for _, tag, _, step in images] == [("samples/grid", 0), ("samples/grid", 2)]
    grid = images[0][2]
    assert grid.dim() == 3 and grid.shape[0] == 3 and grid.dtype == torch.float32 and 0 <= grid.min() <= grid.max() <= 1
    assert [c[1:] for c in calls if c[0] == "flush"] == [(0, True), (2, False)]
    assert calls[-1] == ("close", "finished")
    assert json.loads((run / "loggers.json").read_text()) == {"recorder": {"sessions": 1}}
    # Only the chosen loggers wrote: no TensorBoard events, no report.
    assert not list((run / "tensorboard").glob("events.*")) and not (run / "report").exists()
    assert "index.html" not in result.stdout and "tensorboard --logdir" not in result.stdout

    EVENTS.clear()
    result = run_in_process(None, "--resume", str(run))
    assert result.exit_code == 0, result.output
    (_, _, info), *calls = EVENTS
    assert (info.start_step, info.resumed, info.saved) == (2, True, {"sessions": 1})
    assert [c[1] for c in calls if c[0] == "scalars" and "loss/critic" in c[2]] == [3, 4]
    assert calls[-1] == ("close", "finished")
    assert json.loads((run / "loggers.json").read_text()) == {"recorder": {"sessions": 2}}


def test_a_logger_failing_mid_run_costs_a_warning_and_one_failing_to_start_stops_the_run(tiny_recipe):
    EVENTS.clear()
    result = run_in_process(tiny_recipe, *QUICK, "--set", 'train.loggers=["jsonl", "flaky"]')
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ['warning: logger "flaky" failed in scalars (ConnectionError: tracker unreachable) and is '
                        "off for the rest of this run; metrics.jsonl keeps every scalar"]
    assert EVENTS == [("flaky", 0), ("flaky", 1), ("flaky closed", "failed")]
    rows = (tiny_recipe.parent / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows if "loss/critic" in row] == [1, 2, 3, 4]

    line = error_line(run_in_process(tiny_recipe, *QUICK, "--set", "train.name=other",
                                     "--set", 'train.loggers=["jsonl", "wont_start"]'))
    assert line == 'error: logger "wont_start" could not start: RuntimeError: no such server'
    assert not (tiny_recipe.parent / "runs" / "other").exists()  # a new run that never trained leaves nothing


@pytest.mark.parametrize("setting, expected", [
    ('train.loggers=["jsonl", "mlfow"]', 'train.loggers[1]: "mlfow" is not a logger; did you mean "mlflow"? '
                                         "(see `cgan list loggers`)"),
    ('train.loggers=["jsonl", "jsonl"]', 'train.loggers[1]: "jsonl" is listed twice'),
    ('train.loggers=["tensorboard"]', 'train.loggers: must include "jsonl": metrics.jsonl is the run\'s own record'),
    ('loggers.wandbb.project="x"', 'loggers.wandbb: "wandbb" is not a logger; did you mean "wandb"?'),
    ('loggers.mlflow.experimnt="x"', 'loggers.mlflow.experimnt: unknown key for logger "mlflow"; did you mean '
                                     '"experiment"?'),
    ('loggers.wandb.mode="on"', 'loggers.wandb.mode: expected "offline" | "online", found string "on"'),
    ("loggers.mlflow=3", 'loggers.mlflow: expected a table of logger "mlflow"\'s keys, found 3'),
])
def test_a_recipe_naming_loggers_wrongly_is_one_line_with_the_key(tiny_recipe, setting, expected):
    line = error_line(CliRunner().invoke(cli, ["check", str(tiny_recipe), "--set", setting]))
    assert line.startswith(f"error: {tiny_recipe}: {expected}"), line


def test_a_logger_whose_extra_is_missing_stops_the_run_before_training_naming_the_extra(tiny_recipe, monkeypatch):
    for module, extra in (("mlflow", "mlflow"), ("wandb", "wandb")):
        monkeypatch.setitem(sys.modules, module, None)  # import mlflow -> ImportError, as where it is not installed
        loggers = f'train.loggers=["jsonl", "{extra}"]'
        line = error_line(run_in_process(tiny_recipe, "--set", loggers))
        assert f'logger "{extra}" needs the {module} package' in line, line
        assert line.endswith(f"install it with `pip install 'cgan-kit[{extra}]'`"), line
        assert not (tiny_recipe.parent / "runs").exists() or not any((tiny_recipe.parent / "runs").iterdir())
        assert error_line(CliRunner().invoke(cli, ["check", str(tiny_recipe), "--set", loggers])) == line


def test_the_loggers_are_listed_and_described_without_their_extras():
    listing = json.loads(CliRunner().invoke(cli, ["list", "loggers", "--json"]).stdout)["loggers"]
    assert {entry["name"] for entry in listing} == {"jsonl", "tensorboard", "report", "mlflow", "wandb"}
    wandb = json.loads(CliRunner().invoke(cli, ["describe", "logger", "wandb", "--json"]).stdout)
    assert {p["name"]: p["default"] for p in wandb["parameters"]}["mode"] == "offline"
    train = json.loads(CliRunner().invoke(cli, ["describe", "train", "--json"]).stdout)
    assert {p["name"]: p["default"] for p in train["parameters"]}["loggers"] == ["jsonl", "tensorboard", "report"]


def test_the_logger_example_of_the_plugin_guide_works(tiny_recipe):
    guide = (ROOT / "docs" / "plugins.md").read_text()
    code = guide.split("A complete logger", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    module = types.ModuleType("csv_logger_example")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    result = run_in_process(tiny_recipe, *QUICK, "--set", 'train.loggers=["jsonl", "csv"]', plugin=module)
    assert result.exit_code == 0, result.output
    rows = (tiny_recipe.parent / "runs" / "tiny" / "scalars.csv").read_text().splitlines()
    assert "4,loss/critic," in "\n".join(rows) and rows[0].startswith("0,eval/")


# ---------------------------------------------------------------------------------------------
# MLflow and W&B, each installed as its extra: a real run, then a resume, read back with the trackers' own formats


def require_extra(module: str) -> None:
    """Skip where the tracker's package is not installed, unless CGAN_REQUIRE_TRACKERS=1 (CI)."""
    if importlib.util.find_spec(module) is None:
        reason = f"needs {module}: pip install -e '.[{module}]'"
        if os.environ.get("CGAN_REQUIRE_TRACKERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def mlflow_installed() -> None:
    require_extra("mlflow")  # before the tracked run is made for nothing


@pytest.fixture
def wandb_installed() -> None:
    require_extra("wandb")


def tracker_env(home: Path) -> dict[str, str | None]:
    """No network, no login, no prompt, and nothing written to the real home folder."""
    return {"HOME": str(home), "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": None,
            "WANDB_CACHE_DIR": str(home / "wandb-cache"), "WANDB_CONFIG_DIR": str(home / "wandb-config"),
            "WANDB_DATA_DIR": str(home / "wandb-data"), "MLFLOW_TRACKING_URI": None, "OMP_NUM_THREADS": "1"}


def same_as_the_metrics_file(logged: list[tuple[int, float]], rows: list[dict], key: str) -> None:
    """A tracker's (step, value) pairs of ``key`` are metrics.jsonl's, every step once."""
    wanted = [(row["step"], row[key]) for row in rows if key in row]
    assert [step for step, _ in logged] == [step for step, _ in wanted], key
    assert [value for _, value in logged] == pytest.approx([value for _, value in wanted]), key


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Path:
    """A tiny run logged to MLflow and W&B (those installed), stopped at step 2 and resumed to step 4."""
    folder = tmp_path_factory.mktemp("tracked")
    trackers = [name for name in ("mlflow", "wandb") if importlib.util.find_spec(name) is not None]
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY_RECIPE + f'out_dir = "{(folder / "runs").as_posix()}"\n'
                      f"loggers = {json.dumps(['jsonl', 'tensorboard', 'report', *trackers])}\n")
    home = folder / "home"
    home.mkdir()
    env = tracker_env(home)
    first = cgan("run", str(recipe), *QUICK, "--until", "2", env=env, check=True)
    second = cgan("run", "--resume", str(folder / "runs" / "tiny"), env=env, check=True)
    for result in (first, second):
        assert "Traceback" not in result.stderr and "wandb:" not in result.stderr, result.stderr
    return folder / "runs" / "tiny"


@pytest.mark.slow
def test_an_mlflow_store_holds_the_run_and_a_resume_continues_the_same_mlflow_run(mlflow_installed, tracked,
                                                                                   tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(tracked.parent / 'mlflow.db').as_posix()}")
    run_id = json.loads((tracked / "loggers.json").read_text())["mlflow"]["run_id"]
    experiment = client.get_experiment_by_name("cgan-kit")
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [run_id]  # one MLflow run for both sessions
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.params["train.steps"] == "4" and run.data.params["generator.type"] == "unet"
    assert run.data.params["losses.1.weight"] == "100.0" and run.data.tags["cgan_kit.resumed_at_step"] == "2"
    expected = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss/critic", "eval/ssim", "lr/generator"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        same_as_the_metrics_file(logged, expected, key)
    artifacts = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"recipe.toml", "images"} <= artifacts
    assert "[loggers]" in Path(client.download_artifacts(run_id, "recipe.toml", str(tmp_path))).read_text()
    # Artifacts beside the store in train.out_dir, nothing in the working directory or the home folder.
    assert (tracked.parent / "mlartifacts").is_dir()
    assert not list((tracked.parent.parent / "home").rglob("*mlflow*"))


WANDB_HEADER = b":W&B"
BLOCK = 32768


def wandb_records(path: Path):
    """The records of an offline run's ``.wandb`` file, as W&B's own protocol buffers. W&B ships no
    reader of its own (``wandb sync`` reads these files in its Go core): the file is a header and
    then LevelDB-log records (4-byte CRC, 2-byte length, 1-byte type; 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == WANDB_HEADER, data[:7]
    position, pending = 7, b""
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_processes(home: Path) -> list[int]:
    """Processes of W&B's service started for this test (its cache folder in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(home).encode() in (entry / "environ").read_bytes() \
                    and b"wandb" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_wandb_offline_folder_holds_the_run_and_a_resume_continues_the_same_wandb_run(wandb_installed, tracked):
    run_id = json.loads((tracked / "loggers.json").read_text())["wandb"]["id"]
    sessions = sorted((tracked / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(sessions) == 2  # one folder per session, the same run id: `wandb sync` makes them one run
    history: dict[int, dict] = {}
    for session in sessions:
        records = list(wandb_records(session / f"run-{run_id}.wandb"))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.run_id == run_id and run.project == "cgan-kit" and run.display_name == "tiny"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["train"]["steps"] == 4 and config["generator"]["type"] == "unet"
        assert next(r.exit for r in records if r.WhichOneof("record_type") == "exit").exit_code == 0
        for record in records:
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                history.setdefault(row["step"], {}).update(row)
    expected = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss/critic", "eval/ssim", "lr/generator"):
        same_as_the_metrics_file([(step, row[key]) for step, row in sorted(history.items()) if key in row], expected,
                                 key)
    assert history[2]["samples/grid/_type"] == "image-file" and history[3]["samples/grid/_type"] == "image-file"
    home = tracked.parent.parent / "home"
    deadline = time.monotonic() + 10
    while wandb_processes(home) and time.monotonic() < deadline:  # W&B's service ends with the run
        time.sleep(0.2)
    assert not wandb_processes(home)
    assert not [p for p in home.iterdir() if not re.match(r"wandb-(cache|config|data)$", p.name)]
