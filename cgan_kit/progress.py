"""Progress of long work outside the training loop (evaluation, translation, downloads): a rich
bar on a terminal, a plain line every few seconds elsewhere, nothing at all when quiet."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

Unit = Literal["images", "bytes"]
PLAIN_EVERY_S = 5.0  # off a terminal (a log file, CI), a line this often at most


class Progress:
    """``with Progress("evaluating", total) as progress: ... progress.advance(n)``. ``total`` may
    be 0 where it is unknown; ``done`` is where a resumed piece of work starts."""

    def __init__(self, description: str, total: int, unit: Unit = "images", done: int = 0, quiet: bool = False):
        self.description, self.total, self.unit, self.done = description, total, unit, done
        self.quiet, self.bar, self.last = quiet, None, 0.0

    def __enter__(self) -> Progress:
        if self.quiet:
            return self
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            counts: list[Any] = [DownloadColumn(), TransferSpeedColumn()] if self.unit == "bytes" \
                else [MofNCompleteColumn(), TextColumn(self.unit)]
            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), *counts, TimeRemainingColumn(),
                           console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(self.description, total=self.total or None, completed=self.done)
            self.bar.start()
        else:
            print(f"{self.description}: {self._amount()}", file=sys.stderr, flush=True)
            self.last = time.monotonic()
        return self

    def _amount(self) -> str:
        if self.unit == "bytes":
            of = f" of {self.total >> 20} MiB" if self.total else ""
            return f"{self.done >> 20} MiB{of}"
        return f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif time.monotonic() - self.last >= PLAIN_EVERY_S:
            self.last = time.monotonic()
            print(f"  {self._amount()}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
