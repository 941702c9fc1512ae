"""``cgan run``: the training loop around a method's step.

The method (``[method]`` in the recipe, pix2pix by default) owns the training iteration: which
networks learn, from which losses, in what order (``Method.train_step``, replayed as a CUDA graph
under ``train.cuda_graphs``). This file runs the iterations and everything around them: data,
learning rates, logs, samples, evaluation, checkpoints, resume and interruption. It knows no
architecture and no training algorithm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cgan_kit import __version__
from cgan_kit.config.build import Models, build_dataset, build_loggers, build_models, check_memory, idle_stabilizers
from cgan_kit.config.recipe import Recipe, load
from cgan_kit.device import pick_device, precision_warning, resolve_precision
from cgan_kit.errors import CganError
from cgan_kit.outputs.evaluation import evaluate, improves, measure_key, resolve_evaluation
from cgan_kit.outputs.metrics import Inception
from cgan_kit.outputs.real_features import RealFeatures
from cgan_kit.outputs.log import RunLog, SilentLog
from cgan_kit.outputs.samples import fixed_samples, write_samples
from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.contracts import Networks
from cgan_kit.runs import checkpoint, state
from cgan_kit.runs.folder import RunFolder, RunLock, claim_new
from cgan_kit.safe_output import replace
from cgan_kit.training import allocator, cuda_graph, distributed
from cgan_kit.data import DeviceCache, EpochBatches, auto_workers, check_batch_fits, eval_loader, train_loader
from cgan_kit.training.kit import Kit
from cgan_kit.training.schedule import lr_factor
from cgan_kit.training.updates import NonFiniteLosses, build_optimizers, grad_norms, set_learning_rate
from cgan_kit.threads import Choice, ThreadTuner, allowed_cpus, apply, choose, others_cpu_seconds


def train(recipe_path: str | None, overrides: list[str], resume: str | None, until: int | None = None) -> Path:
    """Train a recipe (or resume a run) to ``train.steps``, or only to step ``until``; returns the
    run folder."""
    registry = plugins.registry()
    context, device = distributed.start()  # a single process outside torchrun
    lock, run, resume_from = None, None, None
    previous = _terminate_as_interrupt()  # until the loop's StopRequests take over: SIGTERM acts as Ctrl-C
    try:
        run, recipe, resume_from, lock = open_run(recipe_path, overrides, resume, context)
        session = setup(registry, context, device, run, recipe, resume_from, until)
        if session is not None:
            with closed_on_failure(session.log):  # a no-op where finish closed it
                loop(session)
        return run.path
    except BaseException as error:
        kept = run is not None and bool(run.saved_steps())
        if run is not None and resume is None and context.main and not kept:
            # A new run failed before its first checkpoint (data, models, device, Ctrl-C): the folder,
            # claimed empty, holds nothing worth keeping, and leaving it would push the corrected
            # rerun to name-2. (A resumed run's folder is never removed, checkpoints or not.)
            shutil.rmtree(run.path, ignore_errors=True)
        if isinstance(error, KeyboardInterrupt):
            if run is None:
                raise Interrupted("interrupted before training started; nothing was written") from None
            if not kept and resume is None:
                raise Interrupted(f"interrupted before the first checkpoint; {run.path} was removed") from None
            if not kept:
                raise Interrupted(f"interrupted before the first checkpoint of {run.path}; nothing was changed") \
                    from None
            raise Interrupted(f"interrupted; {run.path} keeps its checkpoints up to step {run.saved_steps()[-1][0]}: "
                              f"continue with `cgan run --resume {run.path}`") from None
        raise
    finally:
        _restore_signals(previous)
        if lock is not None:
            lock.release()
        distributed.stop(context)


def _terminate_as_interrupt() -> dict[int, Any]:
    """Make SIGTERM raise KeyboardInterrupt as Ctrl-C does (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signal.SIGTERM: signal.signal(signal.SIGTERM, signal.default_int_handler)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def open_run(recipe_path: str | None, overrides: list[str], resume: str | None,
             context: distributed.Context = distributed.Context()
             ) -> tuple[RunFolder, Recipe, Path | None, RunLock | None]:
    """Claim a new run folder, or reopen one to resume: (folder, recipe, checkpoint to resume from,
    the folder's lock, held by the main process while it trains). The resolved recipe is saved in
    a new folder; in distributed training rank 0 creates it and the others learn its name."""
    if resume is not None:
        run = RunFolder(Path(resume))
        if recipe_path is not None:
            raise CganError("give either a RECIPE or --resume RUN_DIR, not both (a run resumes with its own "
                            f"recipe, {run.recipe}; change values with --set)")
        if not run.is_run():
            raise CganError(f"--resume {run.path}: no {run.recipe.name} there; is this a run folder made by "
                            "`cgan run`?")
        recipe = load(run.recipe, overrides)
        lock = RunLock.acquire(run) if context.main else None
        return run, recipe, run.latest(), lock
    recipe = load(recipe_path, overrides)
    run, lock = None, None
    if context.main:
        run, lock = claim_new(Path(recipe.train.out_dir) / recipe.run_name,
                              lambda claimed: f"# Resolved by cgan-kit {__version__} from {recipe_path}; repeat "
                                              f"with `cgan run {claimed.recipe}`.\n{recipe.to_toml()}")
    return distributed.share(run, context), recipe, None, lock


# ---------------------------------------------------------------------------------------------
# Setup: everything the loop needs, in the order that makes runs reproducible


@dataclass
class Session:
    """A run ready to train: what setup built and the loop uses."""

    run: RunFolder
    recipe: Recipe
    models: Models
    optimizers: dict[str, torch.optim.Optimizer]
    scalers: dict[str, torch.amp.GradScaler]
    train_step: Callable[[list[dict[str, torch.Tensor]], int], dict[str, torch.Tensor]]
    kit: Kit
    captured: bool  # the step runs from static buffers (train.cuda_graphs); gradient norms read after it
    feed: Any  # an iterator of training batches
    layout: torch.memory_format
    base_lr: dict[str, float]  # each optimizer's rate before the schedule
    per_epoch: int
    fixed: dict[str, Any]  # the sample grid's examples
    evaluation: Any  # a held-out loader, or None
    best_key: str  # the log key of train.best_metric
    best: dict[str, Any] | None
    real_features: RealFeatures | None  # FID and KID at evaluations (train.eval_fid)
    nonfinite: NonFiniteLosses
    log: Any
    tuner: ThreadTuner | None  # adapts an "auto" thread count on the CPU
    context: distributed.Context
    device: torch.device
    step: int
    stop_at: int
    batches_seen: int = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next training batch's tensors on the device."""
        batch = next(self.feed)
        self.batches_seen += 1
        return {key: value.to(self.device, non_blocking=True, memory_format=self.layout)
                for key, value in batch.items() if isinstance(value, torch.Tensor)}

    def save(self, best: dict[str, Any] | None = None) -> Path:
        return state.save(self.run, self.recipe.to_toml(), self.models, self.optimizers, self.scalers, self.step,
                          self.batches_seen, self.recipe.train.keep_checkpoints, best)


def setup(registry: Any, context: distributed.Context, device: torch.device | None, run: RunFolder, recipe: Recipe,
          resume_from: Path | None, until: int | None) -> Session | None:
    """Build the run: data, models, optimizers, the method's step and what logs around it; restore
    a checkpoint when resuming. None when there is nothing left to train. The order matters: it
    fixes which random numbers initialize what, so that runs and resumes are reproducible."""
    cfg = recipe.train
    loggers = build_loggers(recipe, registry) if context.main else {}  # a logger's missing extra fails first
    device = prepare_process(cfg, device)
    threads = choose(cfg.threads, context.world if device.type == "cpu" else 1)
    apply(threads)
    train_set, held_out = datasets(recipe, registry, context)
    recipe = resolved_evaluation(recipe, held_out, run if context.main and resume_from is None else None)
    cfg = recipe.train

    check_memory(recipe, registry, device, training=True)
    models = build_models(recipe, registry)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for network in models.networks.values():
        network.to(device).to(memory_format=layout)
    models.setup_stabilizers(cfg.steps)  # before the optimizers: spectral norm adds parameters
    for network in models.networks.values():
        distributed.same_start(network, context)
    optimizers = build_optimizers(models, recipe.optim, device)
    base_lr = {name: optimizer.param_groups[0]["lr"] for name, optimizer in optimizers.items()}
    amp_dtype = resolve_precision(cfg.precision, device)
    if cfg.cuda_graphs:
        cuda_graph.check_capturable(recipe, models, amp_dtype, device, context)
    # fp16 needs its losses scaled so that small gradients survive; bf16 has fp32's range and does not.
    scalers = {name: torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16) for name in optimizers}

    step, batches_seen = 0, 0
    if resume_from is not None:
        step, batches_seen = state.restore(resume_from, models, optimizers, scalers)
        if context.main:
            run.make_parts()  # samples/ or tensorboard/ may have been deleted to save space
            print(f"resuming {run.path} from step {step} ({resume_from.name})", file=sys.stderr)
    if context.rank > 0:  # each process draws its own noise, flips and dropout masks
        torch.manual_seed(cfg.seed + 7919 * context.rank + step)
    stop_at = min(cfg.steps, until or cfg.steps)
    if step >= stop_at:
        if context.main:
            print(f"{run.path} is already at step {step} of {stop_at}; raise train.steps with --set to go on",
                  file=sys.stderr)
        return None

    nonfinite = NonFiniteLosses(device, context, tuple(optimizers))
    kit = method_kit(recipe, models, optimizers, scalers, nonfinite, amp_dtype, device, context)
    feed, cache_note = training_feed(recipe, train_set, batches_seen, device, context)
    fixed = fixed_samples(recipe, registry, device)
    evaluation = eval_loader(held_out, cfg.batch_size, cfg.eval_images, 0, device) if held_out else None

    main = context.main  # only rank 0 logs, evaluates, samples and saves
    log = RunLog(run, recipe, step, cfg.batch_size * context.world, loggers, resume_from is not None) if main \
        else SilentLog()
    with closed_on_failure(log):  # the loggers end their runs as failed if the rest of setup fails
        processes = f", {context.world} processes" if context.active else ""
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
        log.message(f"run folder {run.path} ({recipe.method.type}, {device}{processes}, {precision}, "
                    f"{len(train_set)} training examples; {threads.describe()})")
        for note in (cache_note, precision_warning(amp_dtype, device)):
            if note:
                log.message(note)
        for idle in idle_stabilizers(recipe, models):
            log.message(f"warning: {idle}")
        train_step = models.method.train_step
        if cfg.cuda_graphs:
            train_step = cuda_graph.CapturedStep(train_step, optimizers, device, log.message)
            if device.type != "cuda":
                log.message(f"note: train.cuda_graphs on {device}: nothing to capture; the step runs uncaptured")
        best_key = measure_key(models.method, next(iter(type(models.method).directions)), cfg.best_metric)
        real_features = None
        if evaluation is not None and main:
            if cfg.eval_fid == "on":
                real_features = RealFeatures(Inception(device), log.message)
            log.message(f"evaluation: {len(evaluation.dataset)} {cfg.eval_split} images"
                        f"{', FID and KID' if real_features else ''}; best checkpoint by {cfg.best_metric}")
        return Session(run, recipe, models, optimizers, scalers, train_step, kit, cfg.cuda_graphs, feed, layout,
                       base_lr, len(train_set) // (cfg.batch_size * context.world), fixed, evaluation, best_key,
                       saved_best(run, best_key) if main else None, real_features, nonfinite, log,
                       thread_tuner(threads, device, context, log), context, device, step, stop_at, batches_seen)


@contextlib.contextmanager
def closed_on_failure(log: Any) -> Iterator[None]:
    """Close the run's log, as failed, when what it encloses raises, then let the error go on: the
    loggers end their runs (an MLflow run marked failed, W&B's service process stopped)."""
    try:
        yield
    except BaseException:
        log.close("failed")
        raise


def thread_tuner(threads: Choice, device: torch.device, context: distributed.Context, log: Any) -> ThreadTuner | None:
    """An "auto" thread count on the CPU keeps adapting to the machine's load (one process only:
    several would each react to the others' changes)."""
    if threads.source != "auto" or device.type != "cpu" or context.active:
        return None
    return ThreadTuner(threads.threads, threads.usable, log.message, others=others_cpu_seconds(allowed_cpus()[0]))


def prepare_process(cfg: Any, device: torch.device | None) -> torch.device:
    """The training device, the seed every process starts from, and deterministic kernels if asked."""
    device = device or pick_device(cfg.device)
    if device.type == "cpu":
        allocator.keep_freed_memory()  # no page faults on each step's large gradients (allocator.py)
    torch.manual_seed(cfg.seed)  # the same on every process: identical initial weights
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return device


def resolved_evaluation(recipe: Recipe, held_out: Any, new_run: RunFolder | None) -> Recipe:
    """The recipe with train.eval_fid and train.best_metric decided ("auto" depends on the FID extra
    and the held-out images). A new run saves the decision in its recipe.toml, so that a resumed
    run keeps judging by the same measure wherever it resumes."""
    cfg = recipe.train
    images = min(cfg.eval_images, len(held_out)) if held_out is not None else 0
    eval_fid, best_metric = resolve_evaluation(cfg.eval_fid, cfg.best_metric, images)
    if (eval_fid, best_metric) == (cfg.eval_fid, cfg.best_metric):
        return recipe
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(cfg, eval_fid=eval_fid, best_metric=best_metric))
    if new_run is not None:
        header = new_run.recipe.read_text(encoding="utf-8").partition("\n")[0]
        text = (header + "\n" if header.startswith("#") else "") + recipe.to_toml()
        replace(new_run.recipe, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return recipe


def datasets(recipe: Recipe, registry: Any, context: distributed.Context) -> tuple[Any, Any]:
    """The training split and the held-out one (None, with a warning, where there is none). Data
    comes first: a missing folder should fail before minutes of model building."""
    train_set = build_dataset(recipe, registry, "train", augment=True)
    try:
        return train_set, build_dataset(recipe, registry, recipe.train.eval_split, augment=False)
    except CganError as error:
        if context.main:
            print(f"warning: no evaluation: {error}", file=sys.stderr)
        return train_set, None


def method_kit(recipe: Recipe, models: Models, optimizers: dict[str, torch.optim.Optimizer],
               scalers: dict[str, torch.amp.GradScaler], nonfinite: NonFiniteLosses, amp_dtype: torch.dtype | None,
               device: torch.device, context: distributed.Context) -> Kit:
    """Hand the method what its step uses: forward passes (compiled under train.compile; updates,
    checkpoints, EMA and evaluation use the plain modules), the precision, and the updates."""
    cfg = recipe.train
    if cfg.compile:
        mode = cuda_graph.compile_mode(cfg.compile, device) if cfg.cuda_graphs else cfg.compile
        forward = Networks({role: torch.compile(net, mode=mode) for role, net in models.networks.items()},
                           models.networks.kinds)
    else:
        forward = models.networks
    # A captured step must recompute its weight casts at every replay, not cache them across it.
    autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None,
                              cache_enabled=not cuda_graph.captures(cfg.cuda_graphs, device))
    kit = Kit(models, forward, optimizers, scalers, nonfinite, autocast, cfg.generator_steps, context)
    models.method.setup(kit)
    return kit


def training_feed(recipe: Recipe, train_set: Any, batches_seen: int, device: torch.device,
                  context: distributed.Context) -> tuple[Any, str | None]:
    """The training batches from where a resumed run left off, and a note for the log."""
    cfg = recipe.train
    if cfg.data_cache == "device":  # decoded once, augmented where the model runs
        check_batch_fits(train_set, cfg.batch_size, context.world)
        cache = DeviceCache(train_set, device)
        sampler = EpochBatches(len(train_set), cfg.batch_size, cfg.seed, batches_seen, context.rank, context.world)
        return cache.batches(sampler), f"the training split is cached on {device}: {cache.megabytes:.0f} MB"
    workers = auto_workers(device) if cfg.workers == "auto" else cfg.workers
    return iter(train_loader(train_set, cfg.batch_size, cfg.seed, batches_seen, workers, device, context.rank,
                             context.world)), None


def saved_best(run: RunFolder, key: str) -> dict[str, Any] | None:
    """The evaluation that earned the run's best checkpoint ({"metric", "value"}), if it was judged
    by the measure (log key) the recipe names now."""
    best = (checkpoint.read_meta(run.best) or {}).get("best")
    if isinstance(best, dict) and best.get("metric") == key and isinstance(best.get("value"), (int, float)):
        return best
    return None


# ---------------------------------------------------------------------------------------------
# The loop


def loop(s: Session) -> None:
    """Train from ``s.step`` to ``s.stop_at``: rate -> batches -> the method's step -> at sync
    points: log, sample, evaluate, checkpoint. Ctrl-C finishes the step and saves."""
    cfg, main, log, skipped = s.recipe.train, s.context.main, s.log, 0
    started = time.perf_counter()
    with StopRequests() as stop:
        if s.step == 0 and main:  # a Ctrl-C here stops after the step-0 evaluation, as after a step
            if s.run.latest() is None:  # a resumable state exists from the start
                s.save()
            if s.evaluation is not None:
                evaluate_and_keep_best(s, epoch=0)
            write_samples(s.models, s.fixed, s.device, s.run, 0, log)
            log.flush(0, running=True)
        while s.step < s.stop_at and not distributed.anywhere(stop.requested, s.context):
            # The learning rate is a function of the step alone: nothing to save, nothing to drift.
            factor = lr_factor(s.recipe.optim.schedule, s.step, cfg.steps, s.recipe.optim.decay_start)
            rates = {name: s.base_lr[name] * factor for name in s.optimizers}
            for name, optimizer in s.optimizers.items():
                set_learning_rate(optimizer, rates[name])
            s.step += 1
            step, last = s.step, s.step == s.stop_at
            logging = main and (step % cfg.log_every == 0 or last)
            scalars: dict[str, float] = {}
            # One batch per critic update; the method decides what it learns from each.
            batches = [s.next_batch() for _ in range(cfg.critic_steps)]
            s.kit.scalars = scalars if logging and not s.captured else None
            result = s.train_step(batches, step)
            if logging and s.captured:  # replayed: this step's gradients are still in place for their norms
                scalars.update(grad_norms(s.optimizers))

            # --- sync points: every process checks the tally alike, then rank 0 writes ----------
            epoch = s.batches_seen // s.per_epoch
            sampling = (cfg.sample_every and step % cfg.sample_every == 0) or last
            evaluating = s.evaluation is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last)
            checkpointing = step % cfg.checkpoint_every == 0 or last
            if step % cfg.log_every == 0 or checkpointing or sampling or evaluating:
                # Reading the tally waits for the device: only where the loop waits anyway.
                skipped = s.nonfinite.check(step, cfg.on_nonfinite, s.run.latest)
            if logging:
                scalars.update({key: value.item() for key, value in result.items()})
                scalars.update({f"lr/{name}": rate for name, rate in rates.items()})
                scalars["speed/images_per_s"] = log.images_per_s(step)
                if skipped:
                    scalars["train/skipped_updates"] = skipped
                log.scalars(step, scalars, epoch)
            else:
                log.advance(step)
            if not main:
                continue
            if sampling:
                write_samples(s.models, s.fixed, s.device, s.run, step, log)
            if evaluating:
                evaluate_and_keep_best(s, epoch)
            if checkpointing:
                s.save()
            if sampling or evaluating:
                log.flush(step, running=not last)  # the report is rewritten here
            if s.tuner is not None and (sampling or evaluating or checkpointing):
                s.tuner.restart()  # judge the thread count by steps that did nothing else
            elif s.tuner is not None:
                s.tuner.step_done()
    finish(s, time.perf_counter() - started)


def evaluate_and_keep_best(s: Session, epoch: int) -> None:
    """Evaluate on the held-out split; keep the state as ``best.safetensors`` when it improves."""
    results = evaluate(s.models, s.evaluation, s.device, s.log.evaluation_progress(s.step), s.real_features)
    if not results:  # the method has no held-out measure to compute here
        return
    s.log.scalars(s.step, results, epoch)
    # Step 0 only sets the baseline in the log: the untrained generator is nobody's best.
    if s.step > 0 and improves(results, s.best, s.best_key):
        s.best = {"metric": s.best_key, "value": results[s.best_key]}
        s.save(best=s.best)


def finish(s: Session, elapsed: float) -> None:
    """After Ctrl-C save the finished step; close the log; say how to go on."""
    interrupted = s.step < s.stop_at
    path = None
    with closed_on_failure(s.log):
        if interrupted:
            s.nonfinite.check(s.step, s.recipe.train.on_nonfinite, s.run.latest)
        if interrupted and s.context.main:
            # Ctrl-C or SIGTERM: the step in progress was finished, so this checkpoint is exact.
            path = s.save()
            s.log.flush(s.step, running=False)
    s.log.close("interrupted" if interrupted else "finished")
    distributed.wait_for_all(s.context)  # all processes leave together, once rank 0 has written
    if interrupted:
        saved = f"saved {path}" if s.context.main else f"rank 0 saved step {s.step}"
        raise Interrupted(f"interrupted at step {s.step}; {saved}; continue with `cgan run --resume {s.run.path}`")
    if s.context.main:
        chosen = s.recipe.train.loggers
        page = f"; report {s.run.report / 'index.html'}" if "report" in chosen else ""
        board = f" | tensorboard --logdir {s.run.tensorboard}" if "tensorboard" in chosen else ""
        print(f"done: {s.run.path} at step {s.step}, {elapsed:.1f} s this session; latest checkpoint "
              f"{s.run.latest()}{page}")
        print(f"next: cgan translate {s.run.path} IMAGES... --out DIR | cgan eval {s.run.path} | "
              f"cgan report {s.run.path}{board}")


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


