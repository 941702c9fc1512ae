"""Run folders: the layout of ``runs/<name>/``, making a new one, and picking its checkpoints.

Every module that reads or writes a run folder (training, inference, the report, the reference
converter) goes through ``RunFolder`` for its paths: the layout is spelled here only.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cgan_kit.errors import CganError
from cgan_kit.runs import checkpoint
from cgan_kit.safe_output import replace

RECIPE_FILE = "recipe.toml"
CHECKPOINTS_DIR = "checkpoints"
SAMPLES_DIR = "samples"
COLUMNS_KEY = "cgan-kit columns"  # a sample grid PNG's text chunk: its column titles (JSON), for the report
REPORT_DIR = "report"
TENSORBOARD_DIR = "tensorboard"
METRICS_FILE = "metrics.jsonl"
LOGGERS_FILE = "loggers.json"  # what each logger keeps to resume its destination (a tracker's run id)


@dataclass(frozen=True)
class RunFolder:
    """A run folder and the paths inside it."""

    path: Path

    @property
    def recipe(self) -> Path:
        return self.path / RECIPE_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES_DIR

    @property
    def report(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def loggers(self) -> Path:
        return self.path / LOGGERS_FILE

    @property
    def best(self) -> Path:
        return self.checkpoints / checkpoint.BEST_NAME

    def sample(self, step: int) -> Path:
        return self.samples / f"step_{step:08d}.png"

    def checkpoint(self, step: int) -> Path:
        return checkpoint.step_path(self.checkpoints, step)

    def latest(self) -> Path | None:
        return checkpoint.latest(self.checkpoints)

    def saved_steps(self) -> list[tuple[int, Path]]:
        return checkpoint.saved_steps(self.checkpoints)

    def is_run(self) -> bool:
        try:
            return self.recipe.is_file()
        except OSError as error:  # a name too long, a component that is a file
            raise CganError(f"{self.path} cannot be read as a run folder: {error.strerror or error}") from None

    def make_parts(self) -> None:
        """Create the folders a run writes into (again, where a user deleted one to save space)."""
        try:
            for part in (self.checkpoints, self.samples, self.tensorboard):
                part.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CganError(f"cannot write the run folder {self.path}: {error.strerror or error}; choose a writable "
                            "train.out_dir") from None

    def make(self, recipe_text: str) -> None:
        """Create the folder's parts and write its resolved recipe (atomically)."""
        self.make_parts()
        try:
            # backslashreplace: a file name of bytes that are not UTF-8 only appears in the comment line
            replace(self.recipe, lambda tmp: tmp.write_text(recipe_text, encoding="utf-8", errors="backslashreplace"))
        except OSError as error:
            raise CganError(f"cannot write the run folder {self.path}: {error.strerror or error}; choose a writable "
                            "train.out_dir") from None


LOCK_FILE = ".lock"


class RunLock:
    """The lock a training process holds on its run folder for as long as it trains: a second
    ``cgan run`` never takes the folder, and ``--resume`` of a live run is refused, naming the
    process. An exclusive ``flock`` on ``.lock``, which the kernel releases when the process ends
    however it ends, so a lock left by a killed process is simply taken over. (Platforms without
    ``fcntl`` get no lock.)"""

    def __init__(self, run: RunFolder, handle: Any):
        self.run, self.handle = run, handle

    @classmethod
    def try_acquire(cls, run: RunFolder) -> RunLock | None:
        """The lock, or None while another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return cls(run, None)
        path = run.path / LOCK_FILE
        try:  # never through a link planted there: writing the holder's name would empty its target
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as error:
            raise CganError(f"{path}: cannot be opened as the run's lock file ({error.strerror or error}); remove it "
                            "if it is not a plain file") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CganError(f"{path}: the run's lock file is not a plain file; remove it")
        handle = open(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        try:  # who holds it, for the message another process shows; the lock works without it
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "command": " ".join(["cgan", *sys.argv[1:]])}))
            handle.flush()
        except OSError:
            pass
        return cls(run, handle)

    @classmethod
    def acquire(cls, run: RunFolder) -> RunLock:
        """The lock, or one line naming the process that holds it."""
        lock = cls.try_acquire(run)
        if lock is None:
            raise CganError(f"{run.path} is in use by {holder(run)}; wait for it to finish (or stop it) before "
                            "resuming this run")
        return lock

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the flock
            self.handle = None


def holder(run: RunFolder) -> str:
    """Who holds a run folder's lock, as its lock file tells."""
    try:
        found = json.loads((run.path / LOCK_FILE).read_text(encoding="utf-8"))
        return (f"process {int(found['pid'])} on {str(found['host'])[:64]} (started {str(found['started'])[:20]}: "
                f"{str(found['command'])[:120]})")
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "another process"


def claim_new(folder: Path, recipe_text: Callable[[RunFolder], str]) -> tuple[RunFolder, RunLock]:
    """A new run folder, locked: the folder itself, or ``name-2``, ``name-3``... where earlier or
    running runs hold it; ``recipe_text(run)`` is what its recipe file says. A new run never
    overwrites one (continuing one is ``--resume``), and two runs started at the same moment get
    two folders: each candidate is taken under its lock, so checking that it holds no run and
    writing the recipe happen as one step."""
    candidate, number = folder, 1
    while True:
        run = RunFolder(candidate)
        try:
            claimed = _claim(run, recipe_text)
        except OSError as error:  # a name too long, a parent that is a file, a read-only folder
            raise CganError(f"cannot write the run folder {run.path}: {error.strerror or error}; choose a writable "
                            "train.out_dir (and a shorter train.name)") from None
        if claimed is not None:
            return run, claimed
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")


def _claim(run: RunFolder, recipe_text: Callable[[RunFolder], str]) -> RunLock | None:
    """Take ``run`` for a new run if it is missing or empty (but for a lock file) and nobody holds
    its lock: its lock, or None. A folder with anything else in it belongs to someone."""
    if not _free(run):
        return None
    run.path.mkdir(parents=True, exist_ok=True)
    lock = RunLock.try_acquire(run)
    if lock is None:
        return None
    if not _free(run):  # under the lock: nobody else can be writing it now
        lock.release()
        return None
    try:
        run.make(recipe_text(run))
    except BaseException:
        lock.release()
        raise
    return lock


def _free(run: RunFolder) -> bool:
    if not run.path.exists():
        return True
    if not run.path.is_dir():
        return False
    entries = list(run.path.iterdir())
    return all(entry.name == LOCK_FILE and entry.is_file() and not entry.is_symlink() for entry in entries)


def resolve_checkpoint(target: str | Path, which: str = "latest") -> Path:
    """A checkpoint file, or one of a run folder's checkpoints: ``which`` is "latest", "best" (the
    best held-out evaluation, ``train.best_metric``) or a step number."""
    path = Path(target)
    if not path.exists():
        raise CganError(f"{path} does not exist; give a run folder (runs/NAME) or a .safetensors checkpoint")
    if path.is_file():
        if which != "latest":
            raise CganError(f"--checkpoint {which}: {path} is a checkpoint file already; --checkpoint picks one of a "
                            "run folder's checkpoints (give the run folder instead)")
        return path
    run = RunFolder(path)
    folder = run.checkpoints if run.checkpoints.is_dir() else path
    saved = checkpoint.saved_steps(folder)
    if which == "best":
        best = folder / checkpoint.BEST_NAME
        if best.is_file():
            return best
        raise CganError(f"--checkpoint best: {folder} has no {checkpoint.BEST_NAME}; a run keeps one once it has "
                        "evaluated on held-out data (train.eval_every, train.best_metric); use --checkpoint latest")
    if which != "latest":
        if not which.isdigit():
            raise CganError(f'--checkpoint {which}: expected "latest", "best" or a step number')
        for step, found in saved:
            if step == int(which):
                return found
        steps = ", ".join(str(step) for step, _ in saved) or "none"
        raise CganError(f"--checkpoint {which}: {folder} has no checkpoint of step {int(which)} (it has: {steps}; "
                        "train.keep_checkpoints says how many are kept)")
    if saved:
        return saved[-1][1]
    raise CganError(f"{path} holds no checkpoints (looked for {run.checkpoints}/step_*.safetensors); "
                    "give a run folder made by `cgan run` or a checkpoint file")
