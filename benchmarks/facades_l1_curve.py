"""Train the paper's facades recipe at 128 px on the CPU for a few hundred steps and record the
held-out L1 / PSNR curve: evidence that the real pipeline learns real photos.

    .venv/bin/python benchmarks/facades_l1_curve.py [--steps 1000] [--data ../shared/datasets/facades]
        [--precision fp32|bf16] [--seed 0] [--out benchmarks/results/NAME.json]

`--precision bf16` with the same seed and length as an fp32 run is how bf16's quality is checked.

It runs the real CLI (`cgan run recipes/pix2pix_facades.toml` with --set overrides), then writes
benchmarks/results/facades_l1_curve.json and prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def constant_baselines(data: str) -> dict[str, float]:
    """Held-out L1 of the best constant predictions: a generator must beat these to have learned
    anything about the input (the per-pixel median of the training photos is L1's best constant)."""
    import torch

    from cgan_kit.plugin_api import plugins
    from cgan_kit.config.build import build_dataset
    from cgan_kit.config.recipe import load

    registry = plugins.registry()
    recipe = load(ROOT / "recipes" / "pix2pix_facades.toml",
                  [f"data.root={data}", "data.load_size=143", "data.crop_size=128"], registry)
    train = build_dataset(recipe, registry, "train", augment=False)
    test = build_dataset(recipe, registry, "test", augment=False)
    photos = torch.stack([train[i]["target"] for i in range(len(train))])
    targets = torch.stack([test[i]["target"] for i in range(len(test))])
    return {"median_training_photo": round((targets - photos.median(0).values).abs().mean().item(), 4),
            "mean_training_photo": round((targets - photos.mean(0)).abs().mean().item(), 4),
            "uniform_grey": round(targets.abs().mean().item(), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "facades_l1_curve.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as runs:
        overrides = {
            "data.root": args.data, "data.load_size": 143, "data.crop_size": 128,  # the paper's jitter, halved
            "generator.depth": 7,  # the reference unet_128
            "train.steps": args.steps, "train.eval_every": args.eval_every, "train.eval_images": 106,
            "train.sample_every": args.steps, "train.checkpoint_every": args.steps, "train.log_every": 100,
            "train.out_dir": runs, "train.name": "facades128", "train.device": "cpu",
            "train.precision": args.precision, "train.seed": args.seed,
        }
        command = [sys.executable, "-m", "cgan_kit", "run", str(ROOT / "recipes" / "pix2pix_facades.toml")]
        for key, value in overrides.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        elapsed = time.perf_counter() - started
        rows = [json.loads(line) for line in (Path(runs) / "facades128" / "metrics.jsonl").read_text().splitlines()]
        fid = {}
        for label, step in (("untrained", 0), ("trained", args.steps)):  # FID when the fid extra is installed
            path = Path(runs) / "facades128" / "checkpoints" / f"step_{step:08d}.safetensors"
            done = subprocess.run([sys.executable, "-m", "cgan_kit", "eval", str(path), "--json"],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode == 0:
                fid[label] = {k: v for k, v in json.loads(done.stdout).items()
                              if k in ("step", "l1", "psnr", "ssim", "fid", "kid")}
        # The final test samples (input | output | target), kept beside the numbers.
        samples = sorted((Path(runs) / "facades128" / "samples").glob("*.png"))
        if samples:
            shutil.copyfile(samples[-1], Path(args.out).with_suffix(".png"))
    curve = [{"step": r["step"], "l1": round(r["eval/l1"], 4), "psnr": round(r["eval/psnr"], 2)}
             for r in rows if "eval/l1" in r]
    result = {
        "benchmark": "facades_l1_curve", "recipe": "recipes/pix2pix_facades.toml", "overrides": overrides,
        "device": "cpu", "machine": f"{platform.processor() or platform.machine()}, "
                                    f"{__import__('os').cpu_count()} cores",
        "torch": __import__("torch").__version__, "seconds": round(elapsed, 1),
        "eval": "all 106 test images, resized to 128, L1 in [-1, 1] units, PSNR on [0, 1]", "curve": curve,
        "constant_baselines_l1": constant_baselines(args.data),
        "test_metrics_by_cgan_eval": fid,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| step | eval L1 | eval PSNR (dB) |\n|---:|---:|---:|")
    for point in curve:
        print(f"| {point['step']} | {point['l1']:.4f} | {point['psnr']:.2f} |")
    print(f"\nconstant baselines (L1): {result['constant_baselines_l1']}")
    print(f"cgan eval on the test split: {fid}")
    print(f"{args.steps} steps in {elapsed:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
