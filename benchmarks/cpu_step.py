"""Where a CPU training step of the paper's nets goes: plain Adam as the reference code runs it,
fused Adam, and fused Adam with freed memory kept in the heap (what `cgan run` does on a CPU).

    .venv/bin/python benchmarks/cpu_step.py [--sizes 128 256] [--rounds 3] [--steps 5]
        [--out benchmarks/results/cpu_step.json]

Each variant runs in a fresh process (the heap setting is process-wide and cannot be undone
cleanly), the variants alternate for --rounds rounds, and each keeps its fastest and median
round. Random inputs, batch 1, fp32: the data path is measured by data_path.py. The step is the
paper's: critic on real and fake pairs, then the generator through the critic, BCE + 100 L1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (fused Adam, keep freed memory)
    "plain Adam, default heap (the reference)": (False, False),
    "fused Adam, default heap": (True, False),
    "fused Adam, kept heap (cgan run)": (True, True),
}


def child(size: int, fused: bool, keep: bool, steps: int) -> float:
    """ms per step of one variant, in this (fresh) process."""
    from cgan_kit.training import allocator
    from cgan_kit.plugin_api import plugins
    from cgan_kit.config.build import build_models
    from cgan_kit.config.recipe import load

    if keep:
        assert allocator.keep_freed_memory()
    overrides = [] if size == 256 else [f"data.load_size={size * 286 // 256}", f"data.crop_size={size}",
                                        f"generator.depth={size.bit_length() - 1}"]
    registry = plugins.registry()
    recipe = load(str(ROOT / "recipes" / "pix2pix_facades.toml"), overrides, registry)
    torch.manual_seed(0)
    models = build_models(recipe, registry)
    generator, critic = models.networks["generator"], models.networks["critic"]
    opt_g = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    opt_c = torch.optim.Adam(critic.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    inputs, targets = torch.randn(1, 3, size, size), torch.randn(1, 3, size, size)
    bce = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        fake = generator(inputs)
        real = critic(torch.cat([inputs, targets], 1))
        fake_scores = critic(torch.cat([inputs, fake.detach()], 1))
        loss_c = bce(real, torch.ones_like(real)) + bce(fake_scores, torch.zeros_like(fake_scores))
        opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        opt_c.step()
        critic.requires_grad_(False)
        scores = critic(torch.cat([inputs, fake], 1))
        loss_g = bce(scores, torch.ones_like(scores)) + 100 * (fake - targets).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        critic.requires_grad_(True)

    for _ in range(3):  # warm-up
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=3, type=int, metavar=("SIZE", "FUSED", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, fused, keep = args.child
        print(child(size, bool(fused), bool(keep), args.steps))
        return

    from cgan_kit.training.bench import _cpu_model

    rows = []
    for size in args.sizes:
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, (fused, keep) in VARIANTS.items():
                out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", str(size),
                                      str(int(fused)), str(int(keep))], capture_output=True, text=True, check=True)
                times[name].append(float(out.stdout.split()[-1]))
        reference = min(times[next(iter(VARIANTS))])
        for name, found in times.items():
            rows.append({"px": size, "variant": name, "ms_per_step_fastest": round(min(found), 1),
                         "ms_per_step_median": round(statistics.median(found), 1),
                         "rounds": [round(t, 1) for t in found],
                         "speedup_vs_reference_fastest": round(reference / min(found), 3)})
            print(f"{size:4d} px  {name:42s} fastest {min(found):7.1f} ms  median {statistics.median(found):7.1f} ms"
                  f"  x{reference / min(found):.2f}", flush=True)
    result = {"cpu": _cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "steps": args.steps, "rounds": args.rounds, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
