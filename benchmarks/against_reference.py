"""The #6 CPU yardstick: `cgan run` against the reference pix2pix code, side by side.

The reference (junyanz/pytorch-CycleGAN-and-pix2pix) is not part of cgan-kit: check it out
yourself, with a Python environment that runs it, and name both:

    .venv/bin/python benchmarks/against_reference.py --reference ~/pytorch-CycleGAN-and-pix2pix \
        --reference-python ~/refvenv/bin/python [--data ../shared/datasets/facades] [--epochs 2] \
        [--images 400] [--json OUT]

Both train the paper's facades setup (labels -> photo, load 286, crop 256, flip, batch 1) for
the same number of steps (``--images`` training pairs times ``--epochs``), one after the other:
the reference eagerly (``TORCHDYNAMO_DISABLE=1``; its 2025 code wraps the nets in torch.compile)
in fp32 with its other defaults, then `cgan run` in fp32 and with ``precision = "auto"``.
The reference's figures come from its per-iteration ``time:`` column (``--print_freq 1``) and its
per-epoch "Time Taken" lines; `cgan run`'s from the images/s it logs. Versions of the reference
that still have visdom need ``--reference-args "--display_id -1"``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pix2pix_facades.toml"
ITERATION = re.compile(r"\(epoch: *(\d+), iters: *(\d+), time: *([0-9.eE+-]+), data: *([0-9.eE+-]+)")
EPOCH_END = re.compile(r"End of epoch *(\d+) */ *\d+ .*Time Taken: *([0-9.]+) sec")


def run_reference(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    command = [args.reference_python, "train.py", "--dataroot", args.data, "--name", "bench",
               "--checkpoints_dir", str(folder), "--model", "pix2pix", "--direction", "BtoA",
               "--gpu_ids", "-1", "--no_html", "--batch_size", "1", "--print_freq", "1",
               "--max_dataset_size", str(args.images), "--n_epochs", str(args.epochs), "--n_epochs_decay", "0",
               *shlex.split(args.reference_args)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=args.reference, capture_output=True, text=True,
                            env={**os.environ, "TORCHDYNAMO_DISABLE": "1"})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the reference failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rows = [(int(e), int(i), float(t), float(d)) for e, i, t, d in
            ITERATION.findall((folder / "bench" / "loss_log.txt").read_text())]
    epochs = [float(seconds) for _, seconds in EPOCH_END.findall(result.stdout)]
    steady = [t for _, i, t, _ in rows if i > 10] or [t for *_, t, _ in rows]  # each epoch's first 10 dropped
    return {"steps": len(rows), "steady_s_per_step": statistics.median(steady),
            "overall_s_per_step": sum(epochs) / len(rows),  # "Time Taken" is printed in whole seconds
            "wall_s": wall, "data_s_median": statistics.median(d for *_, d in rows)}


def run_cgan(args: argparse.Namespace, folder: Path, precision: str, steps: int) -> dict[str, float]:
    log_every = max(1, steps // 8)
    sets = {"data.root": json.dumps(args.data), "train.out_dir": json.dumps(str(folder)),
            "train.name": json.dumps(precision), "train.precision": json.dumps(precision),
            "train.steps": steps, "train.log_every": log_every, "train.sample_every": 0,
            "train.eval_every": 0, "train.eval_images": 1,  # the reference evaluates nothing
            "train.checkpoint_every": 10**9}
    command = [sys.executable, "-m", "cgan_kit", "run", str(RECIPE)]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"cgan run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (folder / precision / "metrics.jsonl").read_text().splitlines()]
    timed = [(row["step"], row["speed/images_per_s"]) for row in rows if "speed/images_per_s" in row]
    seconds, per_step, previous = 0.0, [], 0
    for step, rate in timed:  # each logged rate (batch 1) covers the steps since the previous log line
        seconds += (step - previous) / rate
        per_step.append(1 / rate)
        previous = step
    return {"steps": previous, "steady_s_per_step": statistics.median(per_step[1:] or per_step),
            "overall_s_per_step": seconds / previous, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="A checkout of junyanz/pytorch-CycleGAN-and-pix2pix.")
    parser.add_argument("--reference-python", required=True, help="A Python that runs the reference.")
    parser.add_argument("--reference-args", default="", help="Extra flags for the reference's train.py.")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--images", type=int, default=400, help="Training pairs per reference epoch.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", dest="out", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    with tempfile.TemporaryDirectory() as folder:
        figures = {"reference": run_reference(args, Path(folder) / "reference")}
        steps = figures["reference"]["steps"]
        for precision in ("fp32", "auto"):
            figures[f"cgan {precision}"] = run_cgan(args, Path(folder) / "cgan", precision, steps)
    reference = figures["reference"]["overall_s_per_step"]
    print(f"{steps} steps at 256 px, batch 1\n")
    print("| | steady s/step | overall s/step | images/s | x reference | whole command s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in figures.items():
        row["speed_up"] = reference / row["overall_s_per_step"]
        print(f"| {name} | {row['steady_s_per_step']:.3f} | {row['overall_s_per_step']:.3f} | "
              f"{1 / row['overall_s_per_step']:.2f} | {row['speed_up']:.2f} | {row['wall_s']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
