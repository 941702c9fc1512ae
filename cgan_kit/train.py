"""``cgan run``: the adversarial training loop.

Each iteration updates the critic on real and generated pairs, then the generator against the
critic plus the reconstruction losses (``step.AdversarialStep``, replayed as a CUDA graph under
``train.cuda_graphs``). This file runs the iterations and everything around them: data, learning
rates, logs, samples, evaluation, checkpoints, resume and interruption. Everything else (networks,
losses, stabilizers) comes from the recipe through the registries; it knows no architecture.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cgan_kit import __version__, allocator, checkpoint, cuda_graph, distributed, metrics, plugins, report
from cgan_kit.build import Models, build_dataset, build_models
from cgan_kit.data import DeviceCache, EpochBatches, auto_workers, check_batch_fits, eval_loader, train_loader
from cgan_kit.errors import CganError
from cgan_kit.feedback import RunLog, SilentLog, render_samples, save_png
from cgan_kit.recipe import Recipe, load
from cgan_kit.schedule import lr_factor
from cgan_kit.step import AdversarialStep, NonFiniteLosses, build_optimizers, grad_norms, set_learning_rate

RECIPE_FILE = "recipe.toml"
SAMPLE_COUNT = 4


@dataclass
class Run:
    """Where a run lives and what it resumes from."""

    recipe: Recipe
    folder: Path
    resume_from: Path | None

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"


def open_run(recipe_path: str | None, overrides: list[str], resume: str | None,
             context: distributed.Context = distributed.Context()) -> Run:
    """Create a new run folder, or reopen one to resume; the resolved recipe is saved in it.
    In distributed training rank 0 creates the folder and the others learn its name."""
    if resume is not None:
        if recipe_path is not None:
            raise CganError("give either a RECIPE or --resume RUN_DIR, not both (a run resumes with its own "
                            f"recipe, {Path(resume) / RECIPE_FILE}; change values with --set)")
        folder = Path(resume)
        saved = folder / RECIPE_FILE
        if not saved.is_file():
            raise CganError(f"--resume {folder}: no {RECIPE_FILE} there; is this a run folder made by `cgan run`?")
        recipe = load(saved, overrides)
        return Run(recipe, folder, checkpoint.latest(folder / "checkpoints"))
    recipe = load(recipe_path, overrides)
    folder = None
    if context.main:
        folder = first_free(Path(recipe.train.out_dir) / recipe.run_name)
        try:
            for sub in ("checkpoints", "samples", "tensorboard"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{RECIPE_FILE}.tmp"
            tmp.write_text(f"# Resolved by cgan-kit {__version__} from {recipe_path}; repeat with "
                           f"`cgan run {folder / RECIPE_FILE}`.\n{recipe.to_toml()}", encoding="utf-8")
            tmp.replace(folder / RECIPE_FILE)
        except OSError as error:
            raise CganError(f"cannot write the run folder {folder}: {error.strerror or error}; choose a writable "
                            "train.out_dir") from None
    return Run(recipe, distributed.share(folder, context), None)


def first_free(folder: Path) -> Path:
    """The run folder itself, or ``name-2``, ``name-3``... when earlier runs hold it: a new run
    never overwrites one (continuing one is ``--resume``)."""
    candidate, number = folder, 1
    while (candidate / RECIPE_FILE).exists():
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate


def pick_device(name: str, key: str = "train.device") -> torch.device:
    """The torch device ``name`` asks for ("auto": CUDA when present, else the CPU); ``key`` is the
    setting or option it came from, for the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CganError(f'{key}: "{name}" is not a device; use "auto", "cpu" or "cuda"') from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CganError(f'{key}: "{name}" asked for, but torch sees no CUDA GPU; use "auto" or "cpu"')
    return device


def versions() -> dict[str, str]:
    found = {"cgan-kit": __version__, "torch": torch.__version__}
    for info in plugins.load().loaded:
        found[info.distribution] = info.version
    return found


# ---------------------------------------------------------------------------------------------
# Checkpoints: every tensor of the run, and the step counters, RNG states and recipe beside them


def save_checkpoint(run: Run, models: Models, optimizers: dict[str, torch.optim.Optimizer],
                    scalers: dict[str, torch.amp.GradScaler], step: int, batches: int,
                    best: dict[str, Any] | None = None) -> Path:
    """Save the run's whole state as ``step_<step>.safetensors`` (pruning old ones), or with ``best``
    (the evaluation that earned it) as ``best.safetensors``."""
    tensors = {**checkpoint.prefixed("generator", models.generator.state_dict()),
               **checkpoint.prefixed("critic", models.critic.state_dict()),
               "rng.cpu": torch.get_rng_state()}
    groups = {}
    for name, optimizer in optimizers.items():
        flat, groups[name] = checkpoint.optimizer_tensors(optimizer.state_dict())
        tensors.update(checkpoint.prefixed(f"optim.{name}", flat))
    for i, stabilizer in enumerate(models.stabilizers):
        tensors.update(checkpoint.prefixed(f"stabilizers.{i}", stabilizer.state_dict()))
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    meta = {"step": step, "batches": batches, "optimizer_groups": groups,
            "grad_scalers": {name: scaler.state_dict() for name, scaler in scalers.items() if scaler.is_enabled()},
            "stabilizers": [s.extra_state() for s in models.stabilizers],
            "recipe": run.recipe.to_toml(), "versions": versions()}
    if best is not None:
        path = run.checkpoints / checkpoint.BEST_NAME
        checkpoint.save(path, tensors, {**meta, "best": best})
        return path
    path = checkpoint.step_path(run.checkpoints, step)
    checkpoint.save(path, tensors, meta)
    checkpoint.prune(run.checkpoints, run.recipe.train.keep_checkpoints)
    return path


def saved_best(run: Run) -> dict[str, Any] | None:
    """The evaluation that earned the run's best checkpoint ({"metric", "value"}), if it was judged
    by the metric the recipe names now."""
    meta = checkpoint.read_meta(run.checkpoints / checkpoint.BEST_NAME)
    best = (meta or {}).get("best")
    wanted = f"eval/{run.recipe.train.best_metric}"
    if isinstance(best, dict) and best.get("metric") == wanted and isinstance(best.get("value"), (int, float)):
        return best
    return None


def improves(results: dict[str, float], best: dict[str, Any] | None, metric: str) -> bool:
    """Whether an evaluation beats the best so far on ``metric`` (L1: lower; PSNR, SSIM: higher)."""
    value = results.get(f"eval/{metric}")
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best["value"] if metric in report.LOWER_IS_BETTER else value > best["value"]


def restore(path: Path, models: Models, optimizers: dict[str, torch.optim.Optimizer],
            scalers: dict[str, torch.amp.GradScaler]) -> tuple[int, int]:
    """Load a checkpoint into the built run; returns (step, batches consumed)."""
    tensors, meta = checkpoint.load(path)
    checkpoint.load_weights(models.generator, checkpoint.split(tensors, "generator"), "generator", path)
    checkpoint.load_weights(models.critic, checkpoint.split(tensors, "critic"), "critic", path)
    # A checkpoint without optimizer state (weights converted from elsewhere) fine-tunes from fresh Adam.
    for name, optimizer in optimizers.items():
        if name in meta["optimizer_groups"]:
            optimizer.load_state_dict(checkpoint.optimizer_state(checkpoint.split(tensors, f"optim.{name}"),
                                                                 meta["optimizer_groups"][name]))
    for name, state in meta.get("grad_scalers", {}).items():
        if scalers[name].is_enabled():  # fp16 then: the loss scale it had reached
            scalers[name].load_state_dict(state)
    if len(meta["stabilizers"]) != len(models.stabilizers):
        raise CganError(f"{path}: saved with {len(meta['stabilizers'])} stabilizers, the recipe has "
                        f"{len(models.stabilizers)}; resume with the run's own recipe")
    for i, (stabilizer, extra) in enumerate(zip(models.stabilizers, meta["stabilizers"])):
        stabilizer.load_state_dict(checkpoint.split(tensors, f"stabilizers.{i}"))
        stabilizer.load_extra_state(extra)
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return int(meta["step"]), int(meta["batches"])


# ---------------------------------------------------------------------------------------------
# Evaluation and samples: never touch the training RNG, so they cannot change the run


def eval_generator(models: Models) -> torch.nn.Module:
    """The generator to judge: a stabilizer's (the EMA copy) if one offers it."""
    for stabilizer in models.stabilizers:
        candidate = stabilizer.eval_generator()
        if candidate is not None:
            return candidate
    return models.generator


@torch.no_grad()
def evaluate(generator: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
    """L1 (in the [-1, 1] units of the data), PSNR and SSIM (on [0, 1]) over the held-out images,
    eval mode; SSIM only for images of at least 11x11 pixels."""
    was_training = generator.training
    generator.eval()
    sums: dict[str, float] = {}
    count = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in loader:
            inputs, targets = batch["input"].to(device), batch["target"].to(device)
            for name, values in metrics.image_measures(generator(inputs), targets).items():
                sums[f"eval/{name}"] = sums.get(f"eval/{name}", 0.0) + values.sum().item()
            count += inputs.shape[0]
    generator.train(was_training)
    return {key: value / count for key, value in sums.items()}


def fixed_samples(recipe: Recipe, registry: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """The held-out examples every sample grid of a run shows (training examples if there is no
    held-out split): the same ones at every step, and again when ``cgan report`` redraws them."""
    try:
        source = build_dataset(recipe, registry, recipe.train.eval_split, augment=False)
    except CganError:
        source = build_dataset(recipe, registry, "train", augment=False)
    return next(iter(eval_loader(source, SAMPLE_COUNT, SAMPLE_COUNT, 0, device)))


def write_samples(models: Models, fixed: dict[str, torch.Tensor], device: torch.device,
                  folder: Path, step: int, log: RunLog | None = None) -> None:
    """Draw the sample grid of ``step`` into ``folder/samples`` (and TensorBoard)."""
    realness = models.adversarial[0].loss.realness
    grid = render_samples(eval_generator(models), models.critic, realness, fixed, device)
    save_png(grid, folder / "samples" / f"step_{step:08d}.png")
    if log is not None:
        log.image("samples/input_output_target_critic", grid, step)


def refresh_report(run: Run, log: RunLog, running: bool) -> None:
    """Rewrite the HTML report; a report that cannot be written costs a warning, never the run."""
    try:
        report.write(run.folder, running)
    except CganError as error:
        log.message(f"warning: {error}")


# ---------------------------------------------------------------------------------------------
# The loop


class Interrupted(CganError):
    """The user stopped the run; it was saved first."""

    exit_code = 130


class StopRequests:
    """Turns the first Ctrl-C (or SIGTERM) into a request to stop after the current step; a second
    Ctrl-C interrupts at once."""

    def __enter__(self) -> StopRequests:
        self.requested = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (None: full fp32). "auto" is bf16 where the
    hardware computes it: CUDA GPUs that support it, and CPUs with AVX512-BF16 or AMX, where it
    made the paper's step 27-35 % faster with no loss of quality (benchmarks/RESULTS.md)."""
    if name == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = device.type == "cpu" and cpu_native_bf16()
        name = "bf16" if native else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere torch emulates
    bf16 convolutions: measured 9.3 s per step against 0.33 s with hardware bf16 (pix2pix, 128 px)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def precision_warning(amp_dtype: torch.dtype | None, device: torch.device) -> str | None:
    """A warning for a precision that will be slow on this device, or None."""
    if device.type == "cpu" and amp_dtype == torch.bfloat16 and not cpu_native_bf16():
        return ('warning: train.precision = "bf16" on a CPU without hardware bf16 (no AVX512-BF16 or AMX): '
                'torch emulates it, many times slower than fp32; use "fp32" (or "auto")')
    return None


def train(recipe_path: str | None, overrides: list[str], resume: str | None, until: int | None = None) -> None:
    """Train a recipe (or resume a run) to ``train.steps``, or only to step ``until``."""
    registry = plugins.registry()
    context, device = distributed.start()  # a single process outside torchrun
    try:
        _train(registry, context, device, recipe_path, overrides, resume, until)
    finally:
        distributed.stop(context)


def _train(registry: Any, context: distributed.Context, device: torch.device | None, recipe_path: str | None,
           overrides: list[str], resume: str | None, until: int | None) -> None:
    run = open_run(recipe_path, overrides, resume, context)
    try:
        _train_run(registry, context, device, run, until)
    except BaseException:
        if run.resume_from is None and context.main and not checkpoint.saved_steps(run.checkpoints):
            # Failed before its first checkpoint (data, models, device): the folder holds nothing
            # worth keeping, and leaving it would push the corrected rerun to name-2.
            shutil.rmtree(run.folder, ignore_errors=True)
        raise


def _train_run(registry: Any, context: distributed.Context, device: torch.device | None, run: Run,
               until: int | None) -> None:
    recipe, cfg = run.recipe, run.recipe.train
    device = device or pick_device(cfg.device)
    if device.type == "cpu":
        allocator.keep_freed_memory()  # no page faults on each step's large gradients (allocator.py)
    torch.manual_seed(cfg.seed)  # the same on every process: identical initial weights
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    # Data first: a missing folder should fail before minutes of model building.
    train_set = build_dataset(recipe, registry, "train", augment=True)
    try:
        held_out = build_dataset(recipe, registry, cfg.eval_split, augment=False)
    except CganError as error:
        if context.main:
            print(f"warning: no evaluation: {error}", file=sys.stderr)
        held_out = None

    models = build_models(recipe, registry)
    generator, critic = models.generator.to(device), models.critic.to(device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    generator.to(memory_format=layout)
    critic.to(memory_format=layout)
    for stabilizer in models.stabilizers:  # before the optimizers: spectral norm adds parameters
        stabilizer.setup(generator, critic, cfg.steps)
    distributed.same_start(generator, context)
    distributed.same_start(critic, context)
    opt = recipe.optim
    optimizers = build_optimizers(generator, critic, opt, device)
    base_lr = {name: o.param_groups[0]["lr"] for name, o in optimizers.items()}
    amp_dtype = resolve_precision(cfg.precision, device)
    if cfg.cuda_graphs:
        cuda_graph.check_capturable(recipe, models, amp_dtype, device, context)
    # fp16 needs its losses scaled so that small gradients survive; bf16 has fp32's range and does not.
    scalers = {name: torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16) for name in optimizers}

    step, batches_seen = 0, 0
    if run.resume_from is not None:
        step, batches_seen = restore(run.resume_from, models, optimizers, scalers)
        if context.main:
            print(f"resuming {run.folder} from step {step} ({run.resume_from.name})", file=sys.stderr)
    if context.rank > 0:  # each process draws its own noise, flips and dropout masks
        torch.manual_seed(cfg.seed + 7919 * context.rank + step)
    stop_at = min(cfg.steps, until or cfg.steps)
    if step >= stop_at:
        if context.main:
            print(f"{run.folder} is already at step {step} of {stop_at}; raise train.steps with --set to go on",
                  file=sys.stderr)
        return

    # The loop calls compiled forwards; checkpoints, EMA and evaluation use the plain modules.
    if cfg.compile:
        mode = cuda_graph.compile_mode(cfg.compile, device) if cfg.cuda_graphs else cfg.compile
        run_generator, run_critic = torch.compile(generator, mode=mode), torch.compile(critic, mode=mode)
    else:
        run_generator, run_critic = generator, critic
    # A captured step must recompute its weight casts at every replay, not cache them across it.
    autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None,
                              cache_enabled=not cuda_graph.captures(cfg.cuda_graphs, device))

    if cfg.data_cache == "device":  # decoded once, augmented where the model runs
        check_batch_fits(train_set, cfg.batch_size, context.world)
        cache = DeviceCache(train_set, device)
        feed = cache.batches(EpochBatches(len(train_set), cfg.batch_size, cfg.seed, batches_seen, context.rank,
                                          context.world))
    else:
        workers = auto_workers(device) if cfg.workers == "auto" else cfg.workers
        feed = iter(train_loader(train_set, cfg.batch_size, cfg.seed, batches_seen, workers, device,
                                 context.rank, context.world))
    per_epoch = len(train_set) // (cfg.batch_size * context.world)
    fixed = fixed_samples(recipe, registry, device)
    evaluation = eval_loader(held_out, cfg.batch_size, cfg.eval_images, 0, device) if held_out else None

    nonfinite, skipped = NonFiniteLosses(device, context), 0
    main = context.main  # only rank 0 logs, evaluates, samples and saves
    log = RunLog(run.folder, cfg.steps, step, cfg.batch_size * context.world) if main else SilentLog()
    processes = f", {context.world} processes" if context.active else ""
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
    log.message(f"run folder {run.folder} ({device}{processes}, {precision}, {len(train_set)} training examples)")
    if cfg.data_cache == "device":
        log.message(f"the training split is cached on {device}: {cache.megabytes:.0f} MB")
    warning = precision_warning(amp_dtype, device)
    if warning:
        log.message(warning)
    train_step = AdversarialStep(models, run_generator, run_critic, optimizers, scalers, nonfinite, autocast,
                                 cfg.generator_steps, context)
    if cfg.cuda_graphs:
        captured = cuda_graph.CapturedStep(train_step, optimizers, device, log.message)
        if device.type != "cuda":
            log.message(f"note: train.cuda_graphs on {device}: nothing to capture; the step runs uncaptured")
    best = saved_best(run) if main else None

    def evaluate_and_keep_best(step: int, epoch: int) -> None:
        nonlocal best
        results = evaluate(eval_generator(models), evaluation, device)
        log.scalars(step, results, epoch)
        # Step 0 only sets the baseline in the log: the untrained generator is nobody's best.
        if step > 0 and improves(results, best, cfg.best_metric):
            key = f"eval/{cfg.best_metric}"
            best = {"metric": key, "value": results[key]}
            save_checkpoint(run, models, optimizers, scalers, step, batches_seen, best)

    if step == 0 and main:
        if run.resume_from is None:  # a resumable state exists from the start
            save_checkpoint(run, models, optimizers, scalers, 0, 0)
        if evaluation is not None:
            evaluate_and_keep_best(0, 0)
        write_samples(models, fixed, device, run.folder, 0, log)
        refresh_report(run, log, running=True)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal batches_seen
        batch = next(feed)
        batches_seen += 1
        return (batch["input"].to(device, non_blocking=True, memory_format=layout),
                batch["target"].to(device, non_blocking=True, memory_format=layout))

    started = time.perf_counter()
    with StopRequests() as stop:
        while step < stop_at and not distributed.anywhere(stop.requested, context):
            # The learning rate is a function of the step alone: nothing to save, nothing to drift.
            rates = {name: base_lr[name] * lr_factor(opt.schedule, step, cfg.steps, opt.decay_start)
                     for name in optimizers}
            for name, optimizer in optimizers.items():
                set_learning_rate(optimizer, rates[name])
            step += 1
            last = step == stop_at
            logging = main and (step % cfg.log_every == 0 or last)
            scalars: dict[str, float] = {}
            # One batch per critic update; the generator learns on the last one.
            batches = [next_batch() for _ in range(cfg.critic_steps)]
            if cfg.cuda_graphs:  # replayed: this step's gradients are still in place for their norms
                result = captured(batches, step)
                if logging:
                    scalars.update(grad_norms(models))
            else:
                result = train_step(batches, step, scalars if logging else None)

            # --- feedback, evaluation, checkpoints (rank 0) -------------------------------------
            epoch = batches_seen // per_epoch
            sampling = (cfg.sample_every and step % cfg.sample_every == 0) or last
            evaluating = evaluation is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last)
            if step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or sampling or evaluating or last:
                # Every process alike, before anything is drawn or saved.
                skipped = nonfinite.check(step, cfg.on_nonfinite, lambda: checkpoint.latest(run.checkpoints))
            if logging:
                scalars.update({
                    "loss/critic": result.critic_loss.item(),
                    "loss/generator": result.generator_loss.item(),
                    **{key: value.item() for key, value in result.terms.items()},
                    "critic/real_score": result.real_scores.mean().item(),
                    "critic/fake_score": result.fake_scores.mean().item(),
                    "lr/generator": rates["generator"],
                    "lr/critic": rates["critic"],
                    "speed/images_per_s": log.images_per_s(step),
                    **({"train/skipped_updates": skipped} if skipped else {}),
                })
                log.scalars(step, scalars, epoch)
            else:
                log.advance(step)
            if not main:
                continue
            if sampling:
                write_samples(models, fixed, device, run.folder, step, log)
            if evaluating:
                evaluate_and_keep_best(step, epoch)
            if step % cfg.checkpoint_every == 0 or last:
                save_checkpoint(run, models, optimizers, scalers, step, batches_seen)
            if sampling or evaluating:
                refresh_report(run, log, running=not last)
    log.close()
    interrupted = step < stop_at
    if interrupted:
        nonfinite.check(step, cfg.on_nonfinite, lambda: checkpoint.latest(run.checkpoints))
    path = None
    if interrupted and main:
        # Ctrl-C or SIGTERM: the step in progress was finished, so this checkpoint is exact.
        path = save_checkpoint(run, models, optimizers, scalers, step, batches_seen)
        refresh_report(run, log, running=False)
    distributed.wait_for_all(context)  # all processes leave together, once rank 0 has written
    if interrupted:
        saved = f"saved {path}" if main else f"rank 0 saved step {step}"
        raise Interrupted(f"interrupted at step {step}; {saved}; continue with "
                          f"`cgan run --resume {run.folder}`")
    if main:
        elapsed = time.perf_counter() - started
        print(f"done: {run.folder} at step {step}, {elapsed:.1f} s this session; latest checkpoint "
              f"{checkpoint.latest(run.checkpoints)}; report {run.folder / report.REPORT_DIR / 'index.html'}")
