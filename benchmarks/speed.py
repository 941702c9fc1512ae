"""The speed table: `cgan bench` on the paper's facades networks across sizes, precisions and,
on a GPU, batch sizes, channels-last, torch.compile and CUDA graphs. One command prints the whole table:

    .venv/bin/python benchmarks/speed.py [--data ../shared/datasets/facades] [--steps 10] [--json OUT]

On the CPU it measures 128 and 256 px at batch 1 in fp32 (contiguous, channels-last, compiled),
and bf16 where the CPU has it in hardware (AVX512-BF16 or AMX). With CUDA: fp32 and bf16,
channels-last, compile ("max-autotune", "reduce-overhead"), the whole step captured
(`train.cuda_graphs`) with `train.data_cache = "device"`, with and without compile, and batch 32.
Each row is one `cgan bench --json` subprocess (a fresh process, so that one configuration's
compiled kernels and allocator state cannot help the next).

Every row gives the step's FLOPs as counted by torch.utils.flop_counter and the rate achieved,
as a share of this machine's measured dense matrix-multiply rate (bf16 on a GPU, fp32 on the
CPU); the GPU rows also give the paper's whole facades schedule (80,000 steps at batch 1) in minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from cgan_kit.device import cpu_native_bf16

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
            fast = {**base, "train.precision": "bf16", "train.channels_last": True}
            graphed = {**fast, "train.cuda_graphs": True, "train.data_cache": "device"}
            rows += [fast,
                     {**fast, "train.compile": "max-autotune"},
                     {**fast, "train.compile": "reduce-overhead"},
                     {**fast, "train.compile": "reduce-overhead", "train.data_cache": "device"},
                     graphed,
                     {**graphed, "train.compile": "max-autotune"},
                     {**base, "train.batch_size": 32, "train.precision": "fp32"},
                     {**fast, "train.batch_size": 32},
                     {**fast, "train.batch_size": 32, "train.compile": "max-autotune"}]
    return rows


def matmul_tflops(device: torch.device) -> tuple[float, str]:
    """This machine's dense matrix-multiply rate: bf16 on a GPU, fp32 on the CPU (the fastest of 6 rounds)."""
    dtype, n = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / 10)
    return 2 * n**3 / best / 1e12, str(dtype).replace("torch.", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", dest="out", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    peak, peak_dtype = matmul_tflops(torch.device("cuda" if cuda else "cpu"))
    print(f"measured {peak_dtype} matrix-multiply rate: {peak:.3g} TFLOP/s\n")
    print("| px | batch | precision | channels_last | compile | cuda_graphs | data_cache | bare ms/step "
          "| cgan ms/step | images/s | x fp32 eager | cgan/bare | GFLOP/step | TFLOP/s | of matmul rate "
          "| 80k steps (min) | peak MB |\n"
          "|---:|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    plain: dict[int, float] = {}  # per size: images/s of the bare fp32 eager loop at batch 1, the yardstick
    for config in configurations(cuda):
        command = [sys.executable, "-m", "cgan_kit", "bench", str(RECIPE), "--steps", str(args.steps), "--json",
                   "--set", f"data.root={json.dumps(args.data)}", "--set", "train.workers=\"auto\""]
        for key, value in config.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            print(f"failed: {config}: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            continue
        r = {"config": config, **json.loads(done.stdout), "matmul_tflop_per_s": round(peak, 2),
             "matmul_dtype": peak_dtype}
        r["share_of_matmul_rate"] = round(r["tflop_per_s"] / peak, 4)
        r["paper_schedule_minutes"] = round(80_000 * r["ms_per_step"] / r["batch_size"] / 60_000, 1)
        if (r["batch_size"], r["precision"], r["channels_last"], r["compile"], r["cuda_graphs"]) == \
                (1, "float32", False, False, False):  # each size's first row
            plain[r["image_size"]] = r["bare_images_per_s"]
        r["speedup_over_fp32_eager"] = round(r["images_per_s"] / plain[r["image_size"]], 2)
        results.append(r)
        print(f"| {r['image_size']} | {r['batch_size']} | {r['precision']} | {r['channels_last']} | {r['compile']} "
              f"| {r['cuda_graphs']} | {r['data_cache']} | {r['bare_ms_per_step']:.1f} | {r['ms_per_step']:.1f} "
              f"| {r['images_per_s']:.2f} | {r['speedup_over_fp32_eager']:.2f} | {r['bare_ratio']:.3f} "
              f"| {r['gflop_per_step']:.1f} | {r['tflop_per_s']:.2f} "
              f"| {100 * r['share_of_matmul_rate']:.1f} % | {r['paper_schedule_minutes']:.1f} "
              f"| {r['peak_memory_mb']:.0f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
