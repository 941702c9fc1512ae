"""What feeding a step costs: the DataLoader (decode, resize, crop, flip per image on the CPU) against
`train.data_cache = "device"` (decoded once; each batch gathered and cropped where the model runs).

    .venv/bin/python benchmarks/data_path.py [--data ../shared/datasets/facades] [--batches 100]
        [--device cpu|cuda] [--out benchmarks/results/data_path_cpu.json]

The paper's facades recipe (load 286, crop 256, batch 1): ms per batch on each path, the cache's
build time and size. A training step must wait for neither: compare with its ms per step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(batches, count: int, device: torch.device) -> float:
    next(batches)  # the first batch pays for start-up
    started = time.perf_counter()
    for _ in range(count):
        batch = next(batches)
        batch["input"].to(device, non_blocking=True)
        batch["target"].to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from cgan_kit.plugin_api import plugins
    from cgan_kit.training.bench import _cpu_model
    from cgan_kit.config.build import build_dataset
    from cgan_kit.data import DeviceCache, EpochBatches, auto_workers, train_loader
    from cgan_kit.config.recipe import load

    registry = plugins.registry()
    recipe = load(ROOT / "recipes" / "pix2pix_facades.toml", [f"data.root={json.dumps(args.data)}"], registry)
    dataset = build_dataset(recipe, registry, "train", augment=True)
    device = torch.device(args.device)
    workers = auto_workers(device)
    loader_ms = timed(iter(train_loader(dataset, 1, 0, 0, workers, device)), args.batches, device)
    started = time.perf_counter()
    cache = DeviceCache(dataset, device)
    build_s = time.perf_counter() - started
    cache_ms = timed(cache.batches(EpochBatches(len(dataset), 1, 0)), args.batches, device)
    result = {"benchmark": "data_path", "device": str(device), "cpu": _cpu_model(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "loader_workers": workers, "batches": args.batches,
              "loader_ms_per_batch": round(loader_ms, 2), "cache_ms_per_batch": round(cache_ms, 3),
              "cache_build_s": round(build_s, 1), "cache_mb": round(cache.megabytes, 1)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
