"""CPU threads: "auto" takes the CPUs free of other work, the user's count wins, and the tuner
keeps the fastest count when the load changes."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from cgan_kit.threads import ThreadTuner, _cpu_times, allowed_cpus, choose, others_cpu_seconds

from conftest import cgan


@pytest.fixture
def no_user_threads(monkeypatch):
    for name in ("CGAN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


def test_auto_takes_the_free_cpus_and_shares_them_between_processes(no_user_threads):
    cpus, limit = allowed_cpus()
    quiet = choose("auto", busy=lambda cpus: 0.0)
    assert quiet.threads == max(1, int(limit)) and quiet.source == "auto"
    crowded = choose("auto", busy=lambda cpus: len(cpus) - 0.1)  # others keep nearly every CPU busy
    assert crowded.threads == 1 and "busy with other work" in crowded.reason
    assert choose("auto", processes=len(cpus) * 2, busy=lambda cpus: 0.0).threads == 1


def test_a_count_the_user_gives_wins(monkeypatch, no_user_threads):
    assert choose(3).threads == 3 and choose(3).source == "fixed"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    chosen = choose("auto")
    assert (chosen.threads, chosen.source, chosen.reason) == (5, "environment", "OMP_NUM_THREADS=5")
    monkeypatch.setenv("CGAN_THREADS", "2")
    assert choose(7).threads == 2  # CGAN_THREADS first


def test_a_cgroup_quota_limits_the_cpus(tmp_path: Path):
    quota = tmp_path / "cpu.max"
    quota.write_text("50000 100000\n")  # half a CPU
    assert allowed_cpus(quota)[1] == 0.5
    quota.write_text("max 100000\n")
    cpus, limit = allowed_cpus(quota)
    assert limit == len(cpus)


def test_cpu_times_read_proc_stat_lines(tmp_path: Path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 4 0 6 30 0 0 0 0 0 0\ncpu1 6 0 4 40 10 0 0 0 0 0\n")
    assert _cpu_times([0], stat) == (10.0, 40.0)
    assert _cpu_times([0, 1], stat) == (20.0, 100.0)


def test_the_tuner_tries_a_neighbour_when_the_step_time_moves_for_good_and_keeps_the_faster():
    used, said = [], []
    tuner = ThreadTuner(2, 4, said.append, set_threads=used.append)
    tuner.judge(3.0)  # the warm-up window: ignored
    tuner.judge(1.0)  # the baseline of 2 threads
    tuner.judge(1.1)  # within 30 %: nothing to do
    tuner.judge(2.0)  # one slow window: a hiccup, perhaps
    tuner.judge(1.0)
    assert used == [] and said == []
    tuner.judge(2.0)
    tuner.judge(2.0)  # twice in a row: other work started; try one thread fewer
    assert used == [1] and "rose" in said[-1]
    tuner.judge(1.2)  # 1 thread is faster: kept
    assert used == [1] and tuner.threads == 1 and "threads: 1" in said[-1]
    tuner.judge(1.2)  # the new baseline
    tuner.judge(0.6)
    tuner.judge(0.6)  # the other work ended: step time fell; try one more
    assert used[-1] == 2
    tuner.judge(0.7)  # 2 threads are slower here: back to 1
    assert tuner.threads == 1 and used[-1] == 1


def test_the_tuner_tries_nothing_when_the_load_does_not_explain_the_move():
    used, said = [], []
    tuner = ThreadTuner(2, 2, said.append, set_threads=used.append)
    for per_step in (3.0, 1.0, 1.5, 1.5):  # warm-up, baseline, then slower twice on a quiet machine
        tuner.judge(per_step, others=0.1)
    assert used == [] and said == [] and tuner.baseline == 1.5  # the new normal, no trial
    tuner.judge(3.0, others=1.2)
    tuner.judge(3.0, others=1.3)  # slower again, and other work now keeps a CPU busy: try 1 thread
    assert used == [1] and "rose" in said[-1]
    tuner.judge(2.0, others=1.3)
    tuner.judge(2.0, others=1.3)  # 1 thread kept; the new baseline
    assert tuner.threads == 1 and tuner.baseline == 2.0
    tuner.judge(1.2, others=1.3)
    tuner.judge(1.2, others=1.3)  # faster, but no CPU is free for a second thread
    assert used == [1] and tuner.baseline == 1.2
    tuner.judge(0.6, others=0.0)
    tuner.judge(0.6, others=0.0)  # faster and the other work ended: try 2
    assert used == [1, 2] and said[-1].endswith("trying 2")
    tuner.judge(0.5, others=0.0)  # 2 threads faster: kept
    assert tuner.threads == 2 and "threads: 2 per step-time trial" in said[-1]
    tuner.judge(0.5, others=0.0)  # the new baseline
    before = list(said)
    tuner.judge(0.2, others=0.0)
    tuner.judge(0.2, others=0.0)  # faster still, but 2 is every usable CPU: nothing to try, nothing said
    assert used == [1, 2] and tuner.baseline == 0.2 and said == before


def test_a_clock_that_stops_answering_leaves_the_step_times_to_decide():
    calls = []

    def failing() -> float:  # answers once, when the tuner starts, then fails as a vanished /proc/stat would
        calls.append(1)
        if len(calls) > 1:
            raise OSError("/proc/stat is gone")
        return 0.0

    tuner = ThreadTuner(2, 2, lambda message: None, window=1.0, set_threads=lambda n: None, others=failing)
    tuner.restart(now=0.0)  # the clock fails here: dropped
    tuner.step_done(1.5)
    assert tuner.others is None and tuner.warm


def test_the_others_clock_counts_other_processes():
    clock = others_cpu_seconds(allowed_cpus()[0])
    if clock is None:
        pytest.skip("this system does not report CPU times in /proc/stat")
    start, children = clock(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 1.0\n"
                    "while time.process_time() < end: pass"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    assert child >= 1.0 and clock() - start >= child - 0.1  # the busy child's CPU seconds, at least


def test_the_tuner_times_windows_of_steps():
    tuner = ThreadTuner(1, 1, lambda message: None, window=1.0, set_threads=lambda n: None)
    tuner.restart(now=0.0)
    tuner.step_done(1.5)  # the warm-up window
    for now in (1.75, 2.0, 2.25):
        tuner.step_done(now)
    assert tuner.baseline is None
    tuner.step_done(2.5)  # a window of 4 steps in 1 s
    assert tuner.baseline == 0.25


def test_a_run_names_its_thread_choice(tiny_recipe: Path):
    env = {"OMP_NUM_THREADS": None}  # as a user who set nothing
    auto = cgan("run", str(tiny_recipe), "--set", "train.threads=auto", "--until", "1", env=env, check=True)
    assert "(auto: " in auto.stderr.splitlines()[0]
    fixed = cgan("run", str(tiny_recipe), "--set", "train.threads=1", "--set", "train.name=fixed", "--until", "1",
                 env=env, check=True)
    assert "; 1 thread (threads = 1))" in fixed.stderr.splitlines()[0]


def test_translate_and_eval_take_threads(tmp_path: Path):
    import torch
    from click.testing import CliRunner

    from cgan_kit.cli.main import cli
    from cgan_kit.images import write_image

    golden = Path(__file__).parent / "data" / "pix2pix_golden_v1_step8.safetensors"
    image = tmp_path / "in.png"
    write_image(image, torch.rand(3, 32, 32), 8)
    runner = CliRunner()
    done = runner.invoke(cli, ["translate", str(golden), str(image), "--out", str(tmp_path / "out"), "--threads", "1"])
    assert done.exit_code == 0 and (tmp_path / "out" / "in.png").is_file(), done.output
    bad = runner.invoke(cli, ["eval", str(golden), "--no-fid", "--threads", "many"])
    assert bad.exit_code == 2 and '--threads many: expected "auto" or a positive number' in bad.output
