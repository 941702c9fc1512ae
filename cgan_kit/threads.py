"""How many CPU threads a command computes with: "auto" picks them from the CPUs this process may
really use and the load the machine carries, and a ``ThreadTuner`` keeps checking during training.

torch's default, one busy-waiting OpenMP thread per core, collapses when other work shares the
cores: a thread waiting at a barrier for a peer whose core was taken spins instead of yielding.
On a 2-core machine with two other busy processes it made the quickstart up to 11x slower, one
thread only 1.9x (benchmarks/contention.py). A count the user gives always wins: a fixed
``threads = N``, or OMP_NUM_THREADS / MKL_NUM_THREADS / CGAN_THREADS in the environment.

A thread count can change float rounding in some CPU kernels, so a run with "auto" is not
guaranteed bit-identical to a rerun; fix ``threads`` for exact reruns.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

USER_VARIABLES = ("CGAN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class Choice:
    """A thread count and why: "auto" (then adapted during training), "fixed" or "environment"."""

    threads: int
    source: str
    reason: str
    usable: float = 0.0  # with "auto": the CPUs this process may keep busy (affinity, cgroup quota)

    def describe(self) -> str:
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} ({self.reason})"


def allowed_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> tuple[list[int], float]:
    """The CPUs this process may run on (its affinity) and how many of them it may keep busy at
    once (its cgroup's quota, where one is set)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    limit = float(len(cpus))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            limit = min(limit, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cpus, limit


def _cpu_times(cpus: list[int], stat: Path) -> tuple[float, float]:
    """(busy, total) jiffies of the given CPUs, from /proc/stat."""
    busy = total = 0.0
    wanted = {f"cpu{cpu}" for cpu in cpus}
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if name in wanted:
            values = [float(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            busy += sum(values) - idle
            total += sum(values)
    return busy, total


def busy_cpus(cpus: list[int], interval: float = 0.2, stat: Path = Path("/proc/stat")) -> float:
    """How many of ``cpus`` other work keeps busy, sampled over ``interval`` seconds (0 where the
    system does not say)."""
    clock = others_cpu_seconds(cpus, stat)
    if clock is None:
        return 0.0
    try:
        start, wall = clock(), time.perf_counter()
        time.sleep(interval)
        return max(0.0, (clock() - start) / (time.perf_counter() - wall))
    except (OSError, ValueError):
        return 0.0


def others_cpu_seconds(cpus: list[int], stat: Path = Path("/proc/stat")) -> Callable[[], float] | None:
    """A clock of the CPU seconds other work has spent on ``cpus``: their busy time less this
    process's own (all its threads, spinning included). Two readings apart, divided by the wall
    time between them, say how many CPUs others kept busy. None where the system does not say."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        _cpu_times(cpus, stat)
    except (OSError, ValueError, AttributeError):
        return None

    def read() -> float:
        busy, _ = _cpu_times(cpus, stat)
        return busy / tick - time.process_time()

    return read


def user_threads() -> tuple[int, str] | None:
    """A thread count the user set in the environment, and the variable that set it."""
    for name in USER_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), name
    return None


def choose(setting: str | int, processes: int = 1, busy: Callable[[list[int]], float] = busy_cpus) -> Choice:
    """The thread count for ``setting`` ("auto" or a number) when ``processes`` processes of this
    command share the machine (``--nproc``): the user's environment first, then a fixed number,
    else the free CPUs' share of each process, at least one."""
    given = user_threads()
    if given is not None:
        return Choice(given[0], "environment", f"{given[1]}={given[0]}")
    if setting != "auto":
        return Choice(int(setting), "fixed", f"threads = {setting}")
    cpus, limit = allowed_cpus()
    taken = busy(cpus)
    free = max(1.0, min(limit, len(cpus) - taken))
    threads = max(1, math.floor(free / max(1, processes) + 0.25))
    load = f", {taken:.1f} busy with other work" if taken >= 0.25 else ""
    shared = f", shared by {processes} processes" if processes > 1 else ""
    return Choice(threads, "auto", f"auto: {limit:g} CPUs usable{load}{shared}", limit)


def apply(choice: Choice) -> None:
    torch.set_num_threads(choice.threads)


class ThreadTuner:
    """Keeps an "auto" thread count fitting the machine's load during training, from step times
    alone (the CPU computes each step before the next starts, so timing it waits for nothing).

    Steps are timed in windows of at least ``window`` seconds; the first window is the warm-up
    (first calls, allocations) and only sets nothing. When two windows in a row move by more than
    ``jump`` from what this thread count was giving (other work started or ended, not a passing
    hiccup), the tuner tries the neighbouring count in the direction that can help, for a
    window, and keeps the faster: one thread fewer when steps got slower (more competition), one
    more when they got faster (less). A trial costs a window at a worse count, so it tries one.

    With ``others`` (a clock of other work's CPU seconds, ``others_cpu_seconds``) a trial also
    needs the load to explain the move: fewer threads only while other work keeps at least half a
    CPU busy, one more only while a CPU is free for it. A step time that moves on a quiet machine
    (another phase of training, a noisy neighbour VM) becomes the new baseline instead, so that
    "auto" costs nothing where nothing competes.
    """

    def __init__(self, threads: int, limit: float, announce: Callable[[str], None], window: float = 2.0,
                 jump: float = 0.3, set_threads: Callable[[int], None] = torch.set_num_threads,
                 others: Callable[[], float] | None = None):
        self.threads, self.limit, self.usable, self.announce = threads, max(1, int(limit)), max(1.0, limit), announce
        self.window, self.jump, self.set_threads, self.others = window, jump, set_threads, others
        self.others_at = others() if others is not None else 0.0  # the clock at the window's start
        self.baseline: float | None = None  # seconds per step of the current count, when settled
        self.warm = False  # the first window (warm-up) was seen
        self.moved = 0  # windows in a row away from the baseline
        self.results: dict[int, float] = {}
        self.started, self.steps = time.perf_counter(), 0

    def restart(self, now: float | None = None) -> None:
        """Drop the window so far: the loop did other work (samples, evaluation, a checkpoint)."""
        self.started, self.steps = time.perf_counter() if now is None else now, 0
        reading = self._read_others()
        if reading is not None:
            self.others_at = reading

    def _read_others(self) -> float | None:
        """The others clock now; None, and no clock from then on, where the system stopped saying."""
        if self.others is None:
            return None
        try:
            return self.others()
        except (OSError, ValueError):  # step times alone decide from now on
            self.others = None
            return None

    def step_done(self, now: float | None = None) -> None:
        """Count a finished step; at the end of a window, judge it."""
        self.steps += 1
        now = time.perf_counter() if now is None else now
        if now - self.started < self.window:
            return
        per_step, elapsed = (now - self.started) / self.steps, now - self.started
        self.started, self.steps = now, 0
        load, reading = None, self._read_others()
        if reading is not None:
            load, self.others_at = max(0.0, (reading - self.others_at) / elapsed), reading
        self.judge(per_step, load)

    def judge(self, per_step: float, others: float | None = None) -> None:
        """Take one window's seconds per step for the current count, and how many CPUs other work
        kept busy meanwhile (None where unknown)."""
        if self.results:  # a trial window: compare with the count before it and keep the faster
            self.results[self.threads] = per_step
            best = min(self.results, key=self.results.get)
            times = ", ".join(f"{n}: {t * 1000:.0f} ms" for n, t in sorted(self.results.items()))
            self.results = {}
            if best != self.threads:
                self._use(best)
            self.baseline = None  # measure the chosen count afresh
            self.announce(f"threads: {best} per step-time trial ({times} per step)")
            return
        if not self.warm:
            self.warm = True
            return
        if self.baseline is None:
            self.baseline = per_step
            return
        self.moved = self.moved + 1 if abs(per_step - self.baseline) > self.jump * self.baseline else 0
        if self.moved >= 2:
            self.moved = 0
            moved = "rose" if per_step > self.baseline else "fell"
            toward = self.threads - 1 if moved == "rose" else self.threads + 1
            if others is None:
                unexplained = False  # no load to read: step times alone decide
            elif moved == "rose":
                unexplained = others < 0.5  # no other work to make room for
            else:
                unexplained = self.usable - others < toward - 0.5  # no free CPU for another thread
            if unexplained or not 1 <= toward <= self.limit:
                self.baseline = per_step  # no count to try, or the load does not explain the move: the new normal
                return
            self.announce(f"threads: step time {moved} from {self.baseline * 1000:.0f} to {per_step * 1000:.0f} ms "
                          f"with {self.threads}; trying {toward}")
            self.results = {self.threads: per_step}
            self.baseline = None
            self._use(toward)

    def _use(self, threads: int) -> None:
        self.threads = threads
        self.set_threads(threads)
