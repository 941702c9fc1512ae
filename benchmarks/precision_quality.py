"""Does bf16 autocast train as well as fp32? The same recipe, seeds and run length in both precisions,
compared on the held-out evaluation training records (L1, PSNR, SSIM) at every evaluation.

    .venv/bin/python benchmarks/precision_quality.py [--recipe recipes/quickstart.toml] [--seeds 0 1 2]
        [--set KEY=VALUE ...] [--out benchmarks/results/precision_quality_quickstart.json]

It runs the real CLI once per (precision, seed) and writes the per-run curves, the final
figures and their mean and spread per precision. Seeds give the yardstick: a precision
difference smaller than the spread between fp32 seeds is no difference. On a CPU without
hardware bf16 (see "cpu_native_bf16") torch emulates it: the numbers are still bf16's, only slow.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("eval/l1", "eval/psnr", "eval/ssim")


def train(recipe: str, overrides: list[str], precision: str, seed: int, folder: str) -> dict:
    name = f"{precision}-seed{seed}"
    command = [sys.executable, "-m", "cgan_kit", "run", recipe, "--set", f'train.precision="{precision}"',
               "--set", f"train.seed={seed}", "--set", f'train.out_dir="{folder}"', "--set", f'train.name="{name}"',
               "--set", "train.device=\"cpu\""]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (Path(folder) / name / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": r["step"], **{k.split("/")[1]: round(r[k], 4) for k in MEASURES if k in r}}
             for r in rows if "eval/l1" in r]
    return {"precision": precision, "seed": seed, "seconds": round(seconds, 1), "curve": curve, "final": curve[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "quickstart.toml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision_quality_quickstart.json"))
    args = parser.parse_args()

    import torch

    from cgan_kit.training.bench import _cpu_model
    from cgan_kit.device import cpu_native_bf16

    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                runs.append(train(args.recipe, args.overrides, precision, seed, folder))
                print(json.dumps({k: runs[-1][k] for k in ("precision", "seed", "seconds", "final")}), flush=True)
    summary = {}
    for precision in ("fp32", "bf16"):
        finals = [r["final"] for r in runs if r["precision"] == precision]
        summary[precision] = {m: {"mean": round(statistics.mean(f[m] for f in finals), 4),
                                  "stdev": round(statistics.stdev(f[m] for f in finals), 4) if len(finals) > 1 else 0}
                              for m in ("l1", "psnr", "ssim") if all(m in f for f in finals)}
    result = {"benchmark": "precision_quality", "recipe": args.recipe, "overrides": args.overrides,
              "seeds": args.seeds, "cpu": _cpu_model(), "cpu_native_bf16": cpu_native_bf16(),
              "torch": torch.__version__, "summary": summary, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| precision | " + " | ".join(f"final {m} (mean +- sd over {len(args.seeds)} seeds)"
                                       for m in ("l1", "psnr", "ssim")) + " |")
    print("|---|---:|---:|---:|")
    for precision, figures in summary.items():
        print(f"| {precision} | " + " | ".join(f"{v['mean']:.4f} +- {v['stdev']:.4f}" for v in figures.values()) + " |")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
