"""Issue #18's table in one command: `cgan run` on a shared CPU, default threads against "auto".

Runs the quickstart (200 steps) and the paper's nets at 128 px on facades (30 steps), each on a
quiet machine and with two competing CPU-bound processes (pure-Python busy loops it starts and
stops itself), with torch's default thread count (one per usable core), with "auto" and with
one thread; with `--loads arrival` also with the competitors starting during training, the case
"auto"'s tuner is for. Each figure is `cgan run`'s own training time (the "s this session" of its done
line, start-up and data loading excluded):

    .venv/bin/python benchmarks/contention.py [--tries 3] [--loads quiet,competitors,arrival]
        [--arrival 12] [--cases quickstart,paper] [--data ../shared/datasets/facades] [--json OUT]

Each try runs every thread setting once, in turn, so that a drift of the machine's speed during
the benchmark falls on all settings alike.

Say what else ran on the machine when you record figures: the competitors are the only load
this script adds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"at step \d+, ([0-9.]+) s this session")
CASES = {
    "quickstart, 200 steps": ["recipes/quickstart.toml", "--set", "train.steps=200"],
    "paper nets at 128 px, 30 steps": ["recipes/pix2pix_facades.toml", "--set", "train.steps=30",
                                       "--set", "data.load_size=143", "--set", "data.crop_size=128",
                                       "--set", "generator.depth=7"],
}
# Training alone: the evaluations at step 0 and at the end shrink to one image without FID (with the
# FID extra installed, the paper nets' final evaluation took longer than their 30 steps).
QUIET = ["--set", "train.eval_every=0", "--set", "train.eval_images=1", "--set", "train.eval_fid=off",
         "--set", "train.sample_every=0", "--set", "train.checkpoint_every=100000", "--set", "train.log_every=10"]


CHOICE = re.compile(r"; (\d+ threads? \([^)]*\))\)$", re.M)
NOTES: list[str] = []  # what "auto" chose and changed, per run


def run(case: list[str], threads: str, data: str, folder: Path, arrival: tuple[int, float] | None = None) -> float:
    """`cgan run`'s training seconds; with ``arrival`` = (count, seconds), that many competitors
    start that long after the command (other work arriving during training)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CGAN_THREADS")}
    args = [sys.executable, "-m", "cgan_kit", "run", *case, *QUIET, "--set", f"train.threads={threads}",
            "--set", f"train.out_dir={folder.as_posix()}", "--set", f"train.name=r{time.monotonic_ns()}"]
    if "facades" in case[0]:
        args += ["--set", f"data.root={data}"]
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    busy: list[subprocess.Popen] = []
    try:
        try:
            stdout, stderr = process.communicate(timeout=arrival[1] if arrival else None)
        except subprocess.TimeoutExpired:
            busy = competitors(arrival[0])
            stdout, stderr = process.communicate()
    finally:
        stop(busy)
    found = DONE.search(stdout)
    if process.returncode != 0 or not found:
        sys.exit(f"cgan run failed ({process.returncode}):\n{stderr[-2000:]}")
    if threads == "auto":
        chosen = CHOICE.search(stderr)
        changes = [line for line in stderr.splitlines() if line.startswith("threads:")]
        note = f"{case[0]}: {chosen.group(1) if chosen else '?'}"
        NOTES.append(note + (f"; {'; '.join(changes)}" if changes else ""))
        print(f"  {NOTES[-1]}", file=sys.stderr, flush=True)
    return float(found.group(1))


def competitors(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--competitors", type=int, default=2)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--loads", default="quiet,competitors",
                        help="Comma-separated, of: quiet, competitors (running from the start), arrival "
                             "(starting --arrival seconds after the command).")
    parser.add_argument("--cases", default="quickstart,paper", help="Comma-separated: quickstart, paper.")
    parser.add_argument("--arrival", type=float, default=12.0,
                        help="Seconds after `cgan run` starts that the arriving competitors start.")
    parser.add_argument("--json", dest="out", default=None)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"default": str(cores), "auto": "auto", "1 thread": "1"}
    results: dict[str, dict[str, list[float]]] = {}
    names = {"quiet": "quiet", "competitors": f"{args.competitors} competitors",
             "arrival": f"{args.competitors} competitors from {args.arrival:g} s"}
    unknown = set(args.loads.split(",")) - set(names)
    if unknown:
        parser.error(f"--loads: unknown {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    loads = {names[key]: key for key in args.loads.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            if not name.startswith(tuple(args.cases.split(","))):
                continue
            results[name] = {}
            for load, key in loads.items():
                busy = competitors(args.competitors) if key == "competitors" else []
                arrival = (args.competitors, args.arrival) if key == "arrival" else None
                try:
                    time.sleep(1 if busy else 0)
                    for _ in range(args.tries):  # the settings in turn, so that a drift of the machine hits each
                        for label, threads in settings.items():
                            results[name].setdefault(f"{load}, {label}", []).append(
                                run(case, threads, args.data, Path(tmp), arrival))
                    for label in settings:
                        print(f"{name} | {load}, {label}: {results[name][f'{load}, {label}']}", file=sys.stderr,
                              flush=True)
                finally:
                    stop(busy)
    report = {"cores": cores, "competitors": args.competitors, "tries": args.tries, "seconds": results,
              "auto": NOTES}
    print(f"| run | {' | '.join(next(iter(results.values())))} |")
    for name, row in results.items():
        quiet = min(row.get("quiet, default") or row[next(iter(row))])
        cells = [f"{min(v):.1f}-{max(v):.1f} s ({min(v) / quiet:.2f}x)" if len(v) > 1 else f"{v[0]:.1f} s "
                 f"({v[0] / quiet:.2f}x)" for v in row.values()]
        print(f"| {name} | {' | '.join(cells)} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
