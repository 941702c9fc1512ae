"""The ``mlflow`` logger (extra ``cgan-kit[mlflow]``): an MLflow run per cgan-kit run, in a local
SQLite store by default (no server): scalars as metrics, the resolved recipe as parameters and as
the artifact ``recipe.toml``, sample grids as images. A resumed run continues the same MLflow run
(its id is kept in the run folder's ``loggers.json``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

from cgan_kit import Logger, RunInfo, hookimpl
from cgan_kit.loggers import pixels, require

STORE = "mlflow.db"  # the default store, in train.out_dir: one for the runs there
ARTIFACTS = "mlartifacts"  # beside a local SQLite store
STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
MAX_PARAMS = 100  # per log_batch call (MLflow's limit)
MAX_VALUE = 6000  # characters of a parameter's value (MLflow's limit)


class MlflowLogger(Logger):
    def __init__(self, tracking_uri: str, experiment: str, images: bool):
        self.tracking_uri, self.experiment, self.images = tracking_uri, experiment, images

    def start(self, run: RunInfo) -> dict[str, Any]:
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(run.folder.parent / STORE)
        with quiet():  # a new store announces its tables at INFO
            self.client = client = MlflowClient(tracking_uri=uri)
            self.run_id, known = None, {}
            if run.saved.get("run_id"):
                try:
                    found = client.get_run(str(run.saved["run_id"]))
                    self.run_id, known = found.info.run_id, dict(found.data.params)
                    client.update_run(self.run_id, status="RUNNING")
                except MlflowException:
                    run.message(f'warning: MLflow run {run.saved["run_id"]} is not in {uri} (another tracking_uri?); '
                                "logging this session to a new MLflow run")
            if self.run_id is None:
                tags = {"cgan_kit.run_folder": str(run.folder.resolve())}
                self.run_id = client.create_run(self._experiment_id(uri), run_name=run.name, tags=tags).info.run_id
        # Parameters cannot change in MLflow: a resume logs only new ones; recipe.toml is the latest recipe.
        params = [Param(key, value) for key, value in flatten(run.recipe).items() if key not in known]
        for first in range(0, len(params), MAX_PARAMS):
            client.log_batch(self.run_id, params=params[first:first + MAX_PARAMS])
        if run.resumed:
            client.log_batch(self.run_id, tags=[RunTag("cgan_kit.resumed_at_step", str(run.start_step))])
        client.log_text(self.run_id, run.recipe_toml, "recipe.toml")
        return {"run_id": self.run_id}

    def _experiment_id(self, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        local = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        location = (local.parent.resolve() / ARTIFACTS).as_uri() if local is not None else None
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by another run
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(key), float(value), now, step)
                   for key, value in {**values, "epoch": epoch}.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def image(self, tag: str, image: Any, step: int) -> None:
        if self.images:
            self.client.log_image(self.run_id, pixels(image), key=metric_key(tag), step=step)

    def close(self, outcome: str) -> None:
        self.client.set_terminated(self.run_id, STATUS.get(outcome, "FINISHED"))


def sqlite_uri(path: Path) -> str:
    return "sqlite:///" + path.resolve().as_posix()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow's and Alembic's INFO lines (a new store's tables) kept off the run's output."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def metric_key(key: str) -> str:
    """A scalar's name as MLflow takes it (letters, digits and ``_-. :/``; others become ``_``)."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The recipe as MLflow parameters: ``train.steps = "6"``, ``losses.1.weight = "100.0"``."""
    flat: dict[str, str] = {}
    for key, value in table.items():
        name = metric_key(f"{prefix}{key}")
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}."))
        else:
            flat[name] = (value if isinstance(value, str) else json.dumps(value))[:MAX_VALUE]
    return flat


def mlflow_logger(tracking_uri: str = "", experiment: str = "cgan-kit", images: bool = True) -> Logger:
    """MLflow: scalars as metrics, the recipe as parameters and recipe.toml, sample grids as images.

    Needs `pip install 'cgan-kit[mlflow]'` (mlflow-skinny and SQLAlchemy: no server). See the runs
    with `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` (the UI is in the full mlflow package).
    A resumed run continues its MLflow run; steps after the last checkpoint of a killed run are logged
    twice there.

    Args:
        tracking_uri: Where runs are kept: a database ("sqlite:///path/mlflow.db") or a tracking server
            ("http://host:5000"). Empty: MLFLOW_TRACKING_URI from the environment, else mlflow.db (SQLite)
            in train.out_dir, shared by the runs there, with their artifacts in mlartifacts/ beside it.
        experiment: The MLflow experiment the run belongs to (created when missing).
        images: Log the sample grids too (MLflow images, one per sampled step).
    """
    require("mlflow", "mlflow", "mlflow")
    if not tracking_uri or tracking_uri.startswith("sqlite:"):  # MLflow's SQL store needs these
        require("mlflow", "mlflow", "sqlalchemy", "alembic")
    return MlflowLogger(tracking_uri, experiment, images)


@hookimpl
def register_loggers(register: Any) -> None:
    register("mlflow", mlflow_logger)
