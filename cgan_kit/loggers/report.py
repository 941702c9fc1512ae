"""The ``report`` logger: rewrites the run's HTML report (``cgan_kit/outputs/report.py``) whenever
the run folder is up to date after samples or an evaluation. The page reads everything from the
run folder, so it needs nothing but the ``flush`` calls; a page that cannot be written costs a
warning, never the run (``cgan report RUN_DIR`` rebuilds it later)."""

from __future__ import annotations

from typing import Any

from cgan_kit import CganError, Logger, RunInfo, hookimpl
from cgan_kit.outputs import report as page


class ReportLogger(Logger):
    def start(self, run: RunInfo) -> None:
        self.folder, self.message = run.folder, run.message

    def flush(self, step: int, running: bool) -> None:
        try:
            page.write(self.folder, running)
        except CganError as error:
            self.message(f"warning: {error}")


def report() -> Logger:
    """The HTML report, report/index.html: curves, evaluations and sample grids, refreshed as the run goes."""
    return ReportLogger()


@hookimpl
def register_loggers(register: Any) -> None:
    register("report", report)
