"""What a run tells its user as it goes: a progress bar (or plain lines off a terminal), TensorBoard
and the metrics file. Sample grids are drawn by ``samples.py``."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from cgan_kit.errors import CganError
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


def _quiet_writer_thread(previous: Any) -> Any:
    """A threading.excepthook that leaves TensorBoard's writer thread's OS errors to the main
    thread, which reports them as one line when it next writes (instead of a thread traceback)."""
    def hook(args: Any) -> None:
        if issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)
    return hook


class RunLog:
    """Progress on the terminal, scalars and images in TensorBoard, and ``metrics.jsonl``."""

    def __init__(self, run: RunFolder, total_steps: int, start_step: int, batch_size: int):
        from torch.utils.tensorboard import SummaryWriter

        self.run, self.total, self.batch_size = run, total_steps, batch_size
        self.previous_hook, threading.excepthook = threading.excepthook, _quiet_writer_thread(threading.excepthook)
        with writing("the metrics file", run.metrics, run):
            self.metrics, dropped = _reopen_metrics(run.metrics, start_step)
        with writing("TensorBoard's log in", run.tensorboard, run):
            self.writer = SummaryWriter(str(run.tensorboard), purge_step=start_step + 1)
        for leftover in run.samples.glob(".*.tmp*"):  # a sample being written when a run was killed
            leftover.unlink(missing_ok=True)
        self.interactive = sys.stderr.isatty()
        self.started, self.start_step = time.perf_counter(), start_step
        self.last_time, self.last_step = self.started, start_step
        self.progress = None
        if self.interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(),
                                     TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                     transient=False)
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, status="")
            self.progress.start()
        if dropped:  # said once the terminal is set up, through the run's own message path
            self.message(f"warning: {run.metrics}: dropped {dropped} damaged line{'s' if dropped > 1 else ''} "
                         "(cut short by a killed run, not UTF-8, or not a JSON object with a step)")

    def images_per_s(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        return rate

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        """Record scalars; show the headline ones on the terminal."""
        with writing("TensorBoard's log in", self.run.tensorboard, self.run):
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        with writing("the metrics file", self.run.metrics, self.run):
            self.metrics.write(json.dumps({"step": step, "epoch": epoch, **values}) + "\n")
            self.metrics.flush()
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

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        with writing("TensorBoard's log in", self.run.tensorboard, self.run):
            self.writer.add_image(tag, grid, step)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        try:
            with writing("TensorBoard's log in", self.run.tensorboard, self.run):
                self.writer.close()
            with writing("the metrics file", self.run.metrics, self.run):
                self.metrics.close()
        finally:
            threading.excepthook = self.previous_hook


def _reopen_metrics(path: Path, start_step: int) -> tuple[Any, int]:
    """Open the metrics file for appending, first dropping rows past ``start_step``: a run killed
    after its last checkpoint logged steps that the resumed run will log again. Lines that are not
    a JSON object with an integer step (cut short by a kill, not UTF-8, damaged) are dropped too;
    returns the open file and how many such lines there were."""
    rows, dropped = read_metrics(path)
    if path.exists():
        kept = [line for line, row in rows if row["step"] <= start_step]
        replace(path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8"))
    return open(path, "a", encoding="utf-8"), dropped


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

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
