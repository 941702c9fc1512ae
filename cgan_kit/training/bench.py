"""``cgan bench``: the training loop's speed against a bare PyTorch loop on the same nets and data.

Both run in this process, alternating for a few rounds, each with warm-up steps first. The real loop is
``cgan run`` itself (into a temporary folder); the bare loop is the smallest loop that makes the
same updates: the generator, the critic on real and fake pairs, the recipe's losses, Adam. The
ratio of their step times is the framework's overhead.
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from cgan_kit import __version__
from cgan_kit.training import allocator
from cgan_kit.training import cuda_graph
from cgan_kit.plugin_api import plugins
from cgan_kit.config.build import build_dataset, build_models
from cgan_kit.data import DeviceCache, EpochBatches, auto_workers, train_loader
from cgan_kit.errors import CganError
from cgan_kit.config.recipe import load
from cgan_kit.training.updates import build_optimizers
from cgan_kit.device import cpu_native_bf16, pick_device, resolve_precision
from cgan_kit.threads import apply, choose
from cgan_kit.training.loop import train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux: the whole process


def _cpu_model() -> str:
    """The CPU's model name as Linux reports it (bf16 speed depends on it), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_gflop(recipe: Any, registry: Any) -> float:
    """GFLOP of one bare-loop step (the critic's update on a real and a fake pair, then the
    generator's), matrix products and convolutions forward and backward, counted by
    ``torch.utils.flop_counter`` on the meta device: shapes only, nothing computed."""
    example = build_dataset(recipe, registry, "train", augment=True)[0]
    batch = recipe.train.batch_size
    with torch.device("meta"):
        models = build_models(recipe, registry)
        inputs = torch.empty(batch, *example["input"].shape)
        targets = torch.empty(batch, *example["target"].shape)
    generator, critic = pix2pix_networks(recipe, models)
    with FlopCounterMode(display=False) as counter:
        fake = generator(inputs)
        (critic(torch.cat([inputs, targets], 1)).sum() + critic(torch.cat([inputs, fake.detach()], 1)).sum()).backward()
        critic.requires_grad_(False)
        (critic(torch.cat([inputs, fake], 1)).sum() + (fake - targets).abs().sum()).backward()
    return counter.get_total_flops() / 1e9


def pix2pix_networks(recipe: Any, models: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The generator and critic the bare loop trains: it is a plain pix2pix loop, the yardstick for
    the engine's overhead, so it measures pix2pix recipes only."""
    if recipe.method.type != "pix2pix":
        raise CganError(f'cgan bench: method "{recipe.method.type}": the bare loop bench compares against is '
                        'plain pix2pix; bench a recipe with [method] type = "pix2pix"')
    return models.networks["generator"], models.networks["critic"]


def bare_loop(recipe_path: str, overrides: list[str], steps: int) -> float:
    """Seconds per step of a plain PyTorch GAN loop on the recipe's networks, data and losses."""
    registry = plugins.registry()
    recipe = load(recipe_path, overrides, registry)
    cfg, opt = recipe.train, recipe.optim
    device = pick_device(cfg.device)
    apply(choose(cfg.threads))  # the count bench chose for both loops
    torch.manual_seed(cfg.seed)
    models = build_models(recipe, registry)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    generator, critic = pix2pix_networks(recipe, models)
    generator.to(device, memory_format=layout)
    critic.to(device, memory_format=layout)
    optimizers = build_optimizers(models, opt, device)
    opt_g, opt_c = optimizers["generator"], optimizers["critic"]
    dtype = resolve_precision(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                              cache_enabled=not cuda_graph.captures(cfg.cuda_graphs, device))
    train_set = build_dataset(recipe, registry, "train", augment=True)
    if cfg.data_cache == "device":  # fed as the real loop feeds itself
        feed = DeviceCache(train_set, device).batches(EpochBatches(len(train_set), cfg.batch_size, cfg.seed))
    else:
        feed = iter(train_loader(train_set, cfg.batch_size, cfg.seed, 0,
                                 auto_workers(device) if cfg.workers == "auto" else cfg.workers, device))

    # The same networks as the real loop runs: compiled when the recipe says so, captured likewise.
    mode = cuda_graph.compile_mode(cfg.compile, device) if cfg.cuda_graphs else cfg.compile
    run_generator = torch.compile(generator, mode=mode) if cfg.compile else generator
    run_critic = torch.compile(critic, mode=mode) if cfg.compile else critic

    def update(batches: list[dict[str, torch.Tensor]], number: Any = None) -> None:
        inputs, targets = batches[0]["input"], batches[0]["target"]
        with autocast:
            fake = run_generator(inputs)
            real_scores = run_critic(torch.cat([inputs, targets], 1)).float()
            fake_scores = run_critic(torch.cat([inputs, fake.detach()], 1)).float()
        ones, zeros = torch.ones_like(real_scores), torch.zeros_like(fake_scores)
        loss_c = sum(i.weight * i.loss.critic_loss(real_scores, fake_scores, ones, zeros) for i in models.adversarial)
        opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        opt_c.step()
        critic.requires_grad_(False)
        with autocast:
            scores = run_critic(torch.cat([inputs, fake], 1)).float()
        loss_g = (sum(i.weight * i.loss.generator_loss(scores) for i in models.adversarial)
                  + sum(i.weight * i.loss(fake.float(), targets) for i in models.reconstruction))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        critic.requires_grad_(True)

    captured = cuda_graph.CapturedStep(update, optimizers, device) if cfg.cuda_graphs else None

    def step() -> None:
        batch = next(feed)
        batches = [{"input": batch["input"].to(device, memory_format=layout),
                    "target": batch["target"].to(device, memory_format=layout)}]
        if captured is not None:
            captured(batches, 0)
        else:
            update(batches)

    for _ in range(steps):  # warm-up: allocator, kernels' first calls, autotuning
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - started) / steps


def real_loop(recipe_path: str, overrides: list[str], steps: int) -> float:
    """Seconds per step of `cgan run` itself, timed between its log lines after ``steps`` warm-up steps."""
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON
        train(recipe_path, [*overrides, f"train.out_dir={json.dumps(folder)}", 'train.name="bench"',
                            f"train.steps={2 * steps}", f"train.log_every={steps}", "train.sample_every=0",
                            "train.eval_every=0", "train.eval_images=1", "train.checkpoint_every=1000000000"],
              None)
        rows = [json.loads(line) for line in (Path(folder) / "bench" / "metrics.jsonl").read_text().splitlines()]
    batch = load(recipe_path, overrides).train.batch_size
    timed = [r for r in rows if r.get("step") == 2 * steps and "speed/images_per_s" in r]
    return batch / timed[0]["speed/images_per_s"]


def bench(recipe_path: str, overrides: list[str], steps: int, rounds: int = 2) -> dict[str, Any]:
    """Time the bare loop and `cgan run` on a recipe, alternating for ``rounds`` rounds; returns the
    figures ``cgan bench --json`` prints. Each loop's figure is its fastest round: a round slowed by
    other work on the machine says nothing about the loop, and alternating keeps either loop from
    always running on a warmer (or hotter) machine than the other."""
    recipe = load(recipe_path, overrides)
    device = pick_device(recipe.train.device)
    if cuda_graph.captures(recipe.train.cuda_graphs, device) and steps <= cuda_graph.WARMUP_STEPS:
        raise CganError(f"--steps {steps} with train.cuda_graphs = true: use at least {cuda_graph.WARMUP_STEPS + 1}, "
                        "so that the step is captured during the warm-up steps, not timed with them")
    kept_heap = device.type == "cpu" and allocator.keep_freed_memory()  # as `cgan run` does, process-wide
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # One thread count for both loops, chosen once: an "auto" count adapting inside the timed steps
    # would measure the tuner, not the loop.
    threads = choose(recipe.train.threads)
    overrides = [*overrides, f"train.threads={threads.threads}"]
    bare_rounds, real_rounds = [], []
    for _ in range(rounds):
        bare_rounds.append(bare_loop(recipe_path, overrides, steps))
        real_rounds.append(real_loop(recipe_path, overrides, steps))
    bare, real = min(bare_rounds), min(real_rounds)
    gflop = step_gflop(recipe, plugins.registry())
    batch = recipe.train.batch_size
    dtype = resolve_precision(recipe.train.precision, device)
    size = next((recipe.data.args[k] for k in ("crop_size", "size") if k in recipe.data.args), None)
    return {
        "recipe": recipe_path, "overrides": overrides, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu": _cpu_model(), "cpu_native_bf16": cpu_native_bf16(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cgan_kit": __version__,
        "precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "compile": recipe.train.compile, "channels_last": recipe.train.channels_last,
        "cuda_graphs": recipe.train.cuda_graphs, "data_cache": recipe.train.data_cache, "kept_heap": kept_heap,
        "batch_size": batch, "image_size": size, "timed_steps": steps, "rounds": rounds,
        "ms_per_step": round(real * 1000, 2), "images_per_s": round(batch / real, 2),
        "bare_ms_per_step": round(bare * 1000, 2), "bare_images_per_s": round(batch / bare, 2),
        "bare_ratio": round(real / bare, 4), "peak_memory_mb": round(_peak_memory_mb(device), 1),
        "gflop_per_step": round(gflop, 2), "tflop_per_s": float(f"{gflop / (real * 1000):.4g}"),
        "ms_per_step_rounds": [round(t * 1000, 2) for t in real_rounds],
        "bare_ms_per_step_rounds": [round(t * 1000, 2) for t in bare_rounds],
    }
