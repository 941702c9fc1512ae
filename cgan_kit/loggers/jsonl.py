"""The ``jsonl`` logger: ``metrics.jsonl``, one JSON object per logged step, the run's own record
(every ``train.loggers`` includes it). The report and ``cgan bench`` read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cgan_kit import Logger, RunInfo, hookimpl
from cgan_kit.outputs.log import read_metrics, writing
from cgan_kit.runs.folder import RunFolder
from cgan_kit.safe_output import replace


class JsonlLogger(Logger):
    def start(self, run: RunInfo) -> None:
        self.run = RunFolder(run.folder)
        with writing("the metrics file", self.run.metrics, self.run):
            self.file, dropped = reopen(self.run.metrics, run.start_step)
        if dropped:
            run.message(f"warning: {self.run.metrics}: dropped {dropped} damaged line{'s' if dropped > 1 else ''} "
                        "(cut short by a killed run, not UTF-8, or not a JSON object with a step)")

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        with writing("the metrics file", self.run.metrics, self.run):
            self.file.write(json.dumps({"step": step, "epoch": epoch, **values}) + "\n")
            self.file.flush()

    def close(self, outcome: str) -> None:
        with writing("the metrics file", self.run.metrics, self.run):
            self.file.close()


def reopen(path: Path, start_step: int) -> tuple[Any, int]:
    """Open the metrics file for appending, first dropping rows past ``start_step``: a run killed
    after its last checkpoint logged steps that the resumed run will log again. Lines that are not
    a JSON object with an integer step (cut short by a kill, not UTF-8, damaged) are dropped too;
    returns the open file and how many such lines there were."""
    rows, dropped = read_metrics(path)
    if path.exists():
        kept = [line for line, row in rows if row["step"] <= start_step]
        replace(path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8"))
    return open(path, "a", encoding="utf-8"), dropped


def jsonl() -> Logger:
    """metrics.jsonl in the run folder: every scalar, one JSON object per logged step (required)."""
    return JsonlLogger()


@hookimpl
def register_loggers(register: Any) -> None:
    register("jsonl", jsonl)
