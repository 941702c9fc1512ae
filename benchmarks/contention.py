"""Issue #18's table in one command: `cgan run` on a shared CPU, default threads against "auto".

Runs the quickstart (200 steps) and the paper's nets at 128 px on facades (30 steps), each on a
quiet machine and with two competing CPU-bound processes (pure-Python busy loops it starts and
stops itself), with torch's default thread count (one per usable core), with "auto" and with
one thread. Each figure is `cgan run`'s own training time (the "s this session" of its done
line, start-up and data loading excluded):

    .venv/bin/python benchmarks/contention.py [--tries 3] [--loads both|quiet|competitors]
        [--data ../shared/datasets/facades] [--json OUT]

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


def run(case: list[str], threads: str, data: str, folder: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CGAN_THREADS")}
    args = [sys.executable, "-m", "cgan_kit", "run", *case, *QUIET, "--set", f"train.threads={threads}",
            "--set", f"train.out_dir={folder.as_posix()}", "--set", f"train.name=r{time.monotonic_ns()}"]
    if "facades" in case[0]:
        args += ["--set", f"data.root={data}"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    found = DONE.search(result.stdout)
    if result.returncode != 0 or not found:
        sys.exit(f"cgan run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    if threads == "auto":
        chosen = CHOICE.search(result.stderr)
        changes = [line for line in result.stderr.splitlines() if line.startswith("threads:")]
        note = f"{case[0]}: {chosen.group(1) if chosen else '?'}"
        NOTES.append(note + (f"; {'; '.join(changes)}" if changes else ""))
        print(f"  {NOTES[-1]}", file=sys.stderr, flush=True)
    return float(found.group(1))


def competitors(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--competitors", type=int, default=2)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--loads", choices=("both", "quiet", "competitors"), default="both",
                        help="Run on the quiet machine, with the competitors, or both.")
    parser.add_argument("--json", dest="out", default=None)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"default": str(cores), "auto": "auto", "1 thread": "1"}
    results: dict[str, dict[str, list[float]]] = {}
    loads = [load for load in ("quiet", f"{args.competitors} competitors")
             if args.loads == "both" or (load == "quiet") == (args.loads == "quiet")]
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            results[name] = {}
            for load in loads:
                busy = competitors(args.competitors) if load != "quiet" else []
                try:
                    time.sleep(1 if busy else 0)
                    for _ in range(args.tries):  # the settings in turn, so that a drift of the machine hits each
                        for label, threads in settings.items():
                            key = f"{load}, {label}"
                            results[name].setdefault(key, []).append(run(case, threads, args.data, Path(tmp)))
                    for label in settings:
                        print(f"{name} | {load}, {label}: {results[name][f'{load}, {label}']}", file=sys.stderr,
                              flush=True)
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
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
