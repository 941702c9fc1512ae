"""The ``tensorboard`` logger: scalars and sample grids in ``<run>/tensorboard/`` for
``tensorboard --logdir runs``."""

from __future__ import annotations

import threading
from typing import Any

from cgan_kit import Logger, RunInfo, hookimpl
from cgan_kit.outputs.log import writing
from cgan_kit.runs.folder import RunFolder


def _quiet_writer_thread(previous: Any) -> Any:
    """A threading.excepthook that leaves TensorBoard's writer thread's OS errors to the main
    thread, which reports them as one line when it next writes (instead of a thread traceback)."""
    def hook(args: Any) -> None:
        if issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)
    return hook


class TensorBoardLogger(Logger):
    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = RunFolder(run.folder)
        # Before the writer: its thread writes (and may fail) from the moment it exists. A writer that
        # cannot be made puts the hook back.
        self.previous_hook, threading.excepthook = threading.excepthook, _quiet_writer_thread(threading.excepthook)
        try:
            # purge_step: events past the checkpoint a resumed run starts from are dropped (TensorBoard's own way).
            with writing("TensorBoard's log in", self.run.tensorboard, self.run):
                self.writer = SummaryWriter(str(self.run.tensorboard), purge_step=run.start_step + 1)
        except BaseException:
            threading.excepthook = self.previous_hook
            raise

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        with writing("TensorBoard's log in", self.run.tensorboard, self.run):
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        with writing("TensorBoard's log in", self.run.tensorboard, self.run):
            self.writer.add_image(tag, image, step)

    def flush(self, step: int, running: bool) -> None:
        with writing("TensorBoard's log in", self.run.tensorboard, self.run):
            self.writer.flush()

    def close(self, outcome: str) -> None:
        try:
            with writing("TensorBoard's log in", self.run.tensorboard, self.run):
                self.writer.close()
        finally:
            threading.excepthook = self.previous_hook


def tensorboard() -> Logger:
    """TensorBoard event files in the run's tensorboard/ folder: scalars and sample grids."""
    return TensorBoardLogger()


@hookimpl
def register_loggers(register: Any) -> None:
    register("tensorboard", tensorboard)
