"""What a run tells as it goes: a progress bar (or plain lines off a terminal), and its records handed
to the loggers the recipe chooses (``cgan_kit/loggers/``: metrics.jsonl, TensorBoard, the report,
MLflow, W&B, a plugin's). Sample grids are drawn by ``samples.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cgan_kit.errors import CganError, one_line
from cgan_kit.plugin_api.contracts import Logger, Outcome, RunInfo
from cgan_kit.runs.folder import RunFolder
from cgan_kit.safe_output import replace


@contextlib.contextmanager
def writing(what: str, path: Path, run: RunFolder) -> Iterator[None]:
    """Turn an OS error while writing part of a run (a full disk, a name too long, a folder made
    read-only) into one line naming the file and how to go on."""
    try:
        yield
    except OSError as error:
        raise CganError(f"cannot write {what} {path}: {error.strerror or error}; free some disk space (or fix the "
                        f"folder) and continue from the last checkpoint with `cgan run --resume {run.path}`") from None


class RunLog:
    """What a run tells as it goes: progress on the terminal (a bar, or plain lines off a terminal),
    and every scalar, sample grid and the resolved recipe handed to the run's loggers
    (``train.loggers``; see ``cgan_kit.Logger`` for what a logger's failure costs)."""

    def __init__(self, run: RunFolder, recipe: Any, start_step: int, batch_size: int, loggers: dict[str, Logger],
                 resumed: bool):
        self.run, self.total, self.batch_size = run, recipe.train.steps, batch_size
        self.loggers: dict[str, Logger] = {}
        self.closed = False
        for leftover in run.samples.glob(".*.tmp*"):  # a sample being written when a run was killed
            leftover.unlink(missing_ok=True)
        self.interactive = sys.stderr.isatty()
        self.progress = None
        self._start_loggers(loggers, RunInfo(run.path, run.path.name, recipe.to_dict(), recipe.to_toml(), start_step,
                                             self.total, resumed, message=self.message))
        self.started, self.start_step = time.perf_counter(), start_step
        self.last_time, self.last_step = self.started, start_step
        if self.interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(),
                                     TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                     transient=False)
            self.task = self.progress.add_task("train", total=self.total, completed=start_step, status="")
            self.progress.start()

    def _start_loggers(self, loggers: dict[str, Logger], info: RunInfo) -> None:
        """Start each logger with what it saved when the run last started; keep what each returns."""
        saved = read_saved(self.run, self.message) if info.resumed else {}
        kept = dict(saved)
        for name, logger in loggers.items():
            try:
                state = logger.start(dataclasses.replace(info, saved=dict(saved.get(name) or {})))
            except (CganError, KeyboardInterrupt):
                self.close("failed")
                raise
            except Exception as error:
                self.close("failed")
                raise CganError(f'logger "{name}" could not start: {one_line(error)}') from error
            self.loggers[name] = logger
            if state:
                kept[name] = state
        if kept != saved:
            try:
                with writing("the loggers' state", self.run.loggers, self.run):
                    replace(self.run.loggers, lambda tmp: tmp.write_text(json.dumps(kept, indent=1) + "\n",
                                                                          encoding="utf-8"))
            except CganError:
                self.close("failed")
                raise

    def _each(self, call: str, *args: Any) -> None:
        """Call every logger; one that fails (other than with a CganError, which stops the run) is
        named in a warning and left out from then on."""
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, call)(*(dict(arg) if isinstance(arg, dict) else arg for arg in args))  # a copy each
            except CganError:
                raise
            except Exception as error:  # noqa: BLE001 - a tracker's failure must not cost the run
                del self.loggers[name]
                self.message(f'warning: logger "{name}" failed in {call} ({one_line(error)}) and is off for the '
                             f"rest of this run; {self.run.metrics.name} keeps every scalar")
                with contextlib.suppress(Exception):
                    logger.close("failed")

    def images_per_s(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        return rate

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        """Record scalars; show the headline ones on the terminal."""
        self._each("scalars", step, values, epoch)
        evaluation = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("eval/")}
        if evaluation:  # a line of its own that stays on screen
            shown = " ".join(f"{k} {v:.4g}" for k, v in evaluation.items())
            self.message(f"step {step}/{self.total} evaluation: {shown}")
            return
        status = " ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in values.items()
                          if k.startswith("loss/") or k in ("speed/images_per_s",))
        if self.progress is not None:
            self.progress.update(self.task, completed=step, status=f"epoch {epoch} {status}")
        else:
            elapsed = time.perf_counter() - self.started
            rate = (step - self.start_step) / max(elapsed, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(f"step {step}/{self.total} epoch {epoch} {status} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def evaluation_progress(self, step: int) -> Callable[[int, int], None]:
        """What an evaluation at ``step`` reports its progress to, (done, total) images: the bar's
        status on a terminal, a line as it starts elsewhere (a held-out split can take minutes)."""
        def show(done: int, total: int) -> None:
            if self.progress is not None:  # the status is cleared when it is done: no stale line
                self.progress.update(self.task, status="" if done >= total else
                                     f"evaluating: {done}/{total} held-out images")
            elif done == 0:
                print(f"step {step}/{self.total}: evaluating {total} held-out images", file=sys.stderr, flush=True)
        return show

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self._each("image", tag, grid, step)

    def flush(self, step: int, running: bool) -> None:
        """The run folder is up to date at ``step`` (samples, evaluation, checkpoint written)."""
        self._each("flush", step, running)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self, outcome: Outcome = "finished") -> None:
        """Stop the progress display and close every logger (once, however the run ended). After a
        failure nothing a logger raises hides the run's own error: it is a warning."""
        if self.closed:
            return
        self.closed = True
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        first: CganError | None = None
        for name, logger in self.loggers.items():
            try:
                logger.close(outcome)
            except CganError as error:
                if outcome == "failed":
                    self.message(f"warning: {error}")
                first = first or error
            except Exception as error:  # noqa: BLE001
                self.message(f'warning: logger "{name}" failed to close: {one_line(error)}')
        self.loggers = {}
        if first is not None and outcome != "failed":
            raise first


def read_saved(run: RunFolder, message: Any) -> dict[str, Any]:
    """``loggers.json``: what each logger returned from ``start`` when the run last started. A file
    that cannot be read as a JSON object costs a warning: the trackers then start new runs."""
    try:
        saved = json.loads(run.loggers.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        saved = error
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        message(f"warning: {run.loggers}: not a JSON object of the loggers' states ({str(saved)[:80]}); trackers "
                "that resume their run from it start a new one")
        return {}
    return saved


def read_metrics(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The rows of ``metrics.jsonl`` with their lines, and how many lines are not rows (see
    ``metrics_row``); none for a file that does not exist."""
    rows, skipped = [], 0
    if path.is_file():
        for raw in path.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            row = metrics_row(raw)
            if row is None:
                skipped += 1
            else:
                rows.append((raw.decode("utf-8").strip(), row))
    return rows, skipped


def metrics_row(line: bytes | str) -> dict[str, Any] | None:
    """One line of ``metrics.jsonl`` as its row, or None where it is not one: not UTF-8, not JSON
    (a line cut short by a killed run), not an object, or without a whole-number ``step``."""
    try:
        row = json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also ints of over 4300 digits
        return None
    step = row.get("step") if isinstance(row, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2 ** 63:
        return None
    return row


class SilentLog:
    """What the processes other than rank 0 log in distributed training: nothing."""

    def images_per_s(self, step: int) -> float:
        return 0.0

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        pass

    def advance(self, step: int) -> None:
        pass

    def evaluation_progress(self, step: int) -> Callable[[int, int], None]:
        return lambda done, total: None

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        pass

    def flush(self, step: int, running: bool) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self, outcome: Outcome = "finished") -> None:
        pass
