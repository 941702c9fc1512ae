"""The speed table: `cgan bench` on the paper's facades networks across sizes, precisions and,
on a GPU, batch sizes, channels-last and torch.compile. One command prints the whole table:

    .venv/bin/python benchmarks/speed.py [--data ../shared/datasets/facades] [--steps 10] [--json OUT]

On the CPU it measures 128 and 256 px at batch 1 in fp32 (contiguous, channels-last, compiled),
and bf16 where the CPU has it in hardware (AVX512-BF16 or AMX). With CUDA: fp32 and bf16,
channels-last, compile ("max-autotune", "reduce-overhead" = CUDA graphs), the same with
`train.data_cache = "device"`, and batch 32. Each row is one `cgan bench --json` subprocess (a fresh process, so
that one configuration's compiled kernels and allocator state cannot help the next).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from cgan_kit.train import cpu_native_bf16

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pix2pix_facades.toml"


def configurations(cuda: bool) -> list[dict[str, object]]:
    rows = []
    for size, depth in ((128, 7), (256, 8)):
        base = {"data.load_size": size + size // 8, "data.crop_size": size, "generator.depth": depth,
                "train.batch_size": 1}
        rows.append({**base, "train.precision": "fp32"})
        if cuda or cpu_native_bf16():  # emulated bf16 runs many times slower than fp32: nothing to learn
            rows.append({**base, "train.precision": "bf16"})
        if not cuda:  # the CPU's candidates for a faster default
            rows += [{**base, "train.precision": "fp32", "train.channels_last": True},
                     {**base, "train.precision": "fp32", "train.compile": "default"}]
        if cuda:
            rows += [{**base, "train.precision": "bf16", "train.channels_last": True},
                     {**base, "train.precision": "bf16", "train.channels_last": True, "train.compile": "max-autotune"},
                     {**base, "train.precision": "bf16", "train.channels_last": True,
                      "train.compile": "reduce-overhead"},
                     {**base, "train.precision": "bf16", "train.channels_last": True,
                      "train.compile": "reduce-overhead", "train.data_cache": "device"},
                     {**base, "train.batch_size": 32, "train.precision": "fp32"},
                     {**base, "train.batch_size": 32, "train.precision": "bf16", "train.channels_last": True}]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", dest="out", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args()
    results = []
    for config in configurations(torch.cuda.is_available()):
        command = [sys.executable, "-m", "cgan_kit", "bench", str(RECIPE), "--steps", str(args.steps), "--json",
                   "--set", f"data.root={json.dumps(args.data)}", "--set", "train.workers=\"auto\""]
        for key, value in config.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            print(f"failed: {config}: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            continue
        results.append({"config": config, **json.loads(done.stdout)})
        r = results[-1]
        print(f"| {r['image_size']} | {r['batch_size']} | {r['precision']} | {r['channels_last']} | {r['compile']} "
              f"| {r['bare_ms_per_step']:.1f} | {r['ms_per_step']:.1f} | {r['images_per_s']:.2f} "
              f"| {r['bare_ratio']:.3f} | {r['peak_memory_mb']:.0f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    print("| px | batch | precision | channels_last | compile | bare ms/step | cgan ms/step | images/s "
          "| cgan/bare | peak MB |\n|---:|---:|---|---|---|---:|---:|---:|---:|---:|")
    main()
