"""The engine's own recipe tables, ``[train]`` and ``[optim]``: every key, its type, default and bounds.

Each table is a dataclass documented like a component factory, so the recipe validator and
``cgan describe`` treat both the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from cgan_kit.plugin_api.params import Range


@dataclass(frozen=True)
class TrainSettings:
    """How long and how to train: steps, batch, device, logging and checkpoints.

    Args:
        name: Run name; the run folder is ``<out_dir>/<name>``. Empty: the recipe file's name.
        out_dir: Folder that holds run folders.
        steps: Number of training iterations (each one critic and one generator update by default).
        batch_size: Images per step.
        critic_steps: Critic updates per iteration.
        generator_steps: Generator updates per iteration.
        seed: Seed for every random number generator (weights, data order, augmentation).
        deterministic: Ask torch for deterministic kernels (slower; bit-identical reruns on one machine).
        device: "auto" (CUDA when present, else CPU) or a torch device such as "cpu" or "cuda:1".
        workers: DataLoader worker processes; "auto" uses them only where they pay.
        threads: CPU threads for computing: "auto" takes the CPUs this process may use (affinity,
            cgroup quota) less those other work keeps busy, shares them between --nproc processes,
            and keeps adapting while training when step times show the load changed; a number
            fixes it (a fixed count also makes reruns bit-identical). OMP_NUM_THREADS,
            MKL_NUM_THREADS or CGAN_THREADS in the environment always win.
        log_every: Steps between log lines and logged scalars.
        loggers: Where the run records its scalars, sample grids and resolved recipe (`cgan list
            loggers`): "jsonl" (metrics.jsonl, always listed: the report and `cgan bench` read it),
            "tensorboard", "report" (the HTML report), "mlflow" and "wandb" (optional extras), or a
            plugin's; settings go in a [loggers.NAME] table.
        sample_every: Steps between sample images (0: only at the end).
        checkpoint_every: Steps between checkpoints (a checkpoint is always written at the end).
        keep_checkpoints: How many recent checkpoints to keep.
        eval_every: Steps between evaluations on the held-out split (0: only at the end).
        eval_split: Held-out split used for evaluation and validation metrics.
        eval_images: At most this many held-out images per evaluation.
        eval_fid: FID and KID at each evaluation, against the held-out split's real images of the
            target side (their Inception features computed once per data and cached): "auto" where
            the FID extra is installed (pip install 'cgan-kit[fid]'), "on" (an error without
            it), "off". With few held-out images FID is biased upward: compare runs at the same
            train.eval_images.
        best_metric: The held-out measure that picks ``checkpoints/best.safetensors``: "fid" or
            "kid" (lower is better), "ssim" (higher), "psnr" (higher) or "l1" (lower); "auto" is
            "fid" where FID is measured (train.eval_fid) and "ssim" elsewhere. FID is what papers
            compare; SSIM rewards blur, and on facades L1 stops improving within the first
            epochs while the photos keep improving. Step 0's evaluation is logged as the untrained
            baseline and never kept as the best. A method with several directions is judged by
            its first.
        data_cache: "none": a DataLoader decodes and augments every training image on the CPU at
            every step. "device": the training split is decoded once and kept on the training
            device, where each step gathers and augments its batch (the same batches as "none");
            it pays on a GPU and needs the memory for the whole split at load size.
        on_nonfinite: When a loss is NaN or infinite, that update is skipped; "stop" then ends the
            run at the next log step, sample or checkpoint (keeping the last good checkpoint),
            "skip" trains on and logs the count.
        precision: "fp32", "bf16" or "fp16" autocast for the forward passes (fp16 with gradient
            scaling); "auto" is bf16 where the hardware computes it (CUDA GPUs that support it, CPUs
            with AVX512-BF16 or AMX) and fp32 elsewhere.
        channels_last: Keep images and convolution weights in channels-last memory layout (faster
            convolutions on recent GPUs with bf16/fp16).
        compile: torch.compile the networks' forward passes: false, "default", "max-autotune" or
            "reduce-overhead" (the latter captures CUDA graphs of the networks' forward passes on GPUs).
        cuda_graphs: Capture the whole training iteration (forward, backward and Adam for both
            networks) as one CUDA graph after a few eager steps, and replay it: no Python or kernel
            launch cost per step. Needs precision "fp32" or "bf16", one process, and stabilizers
            that can be captured (not history_buffer). On the CPU the step runs uncaptured.
    """

    name: str = ""
    out_dir: str = "runs"
    steps: Annotated[int, Range(ge=1)] = 1000
    batch_size: Annotated[int, Range(ge=1, le=65536)] = 1
    critic_steps: Annotated[int, Range(ge=1)] = 1
    generator_steps: Annotated[int, Range(ge=1)] = 1
    seed: Annotated[int, Range(ge=0, le=2**63 - 1)] = 0
    deterministic: bool = False
    device: str = "auto"
    workers: Literal["auto"] | Annotated[int, Range(ge=0)] = "auto"
    threads: Literal["auto"] | Annotated[int, Range(ge=1, le=1024)] = "auto"
    log_every: Annotated[int, Range(ge=1)] = 50
    loggers: tuple[str, ...] = ("jsonl", "tensorboard", "report")
    sample_every: Annotated[int, Range(ge=0)] = 500
    checkpoint_every: Annotated[int, Range(ge=1)] = 500
    keep_checkpoints: Annotated[int, Range(ge=1)] = 3
    eval_every: Annotated[int, Range(ge=0)] = 0
    eval_split: Literal["val", "test"] = "test"
    eval_images: Annotated[int, Range(ge=1, le=10**7)] = 64
    eval_fid: Literal["auto", "on", "off"] = "auto"
    best_metric: Literal["auto", "fid", "kid", "ssim", "psnr", "l1"] = "auto"
    data_cache: Literal["none", "device"] = "none"
    on_nonfinite: Literal["stop", "skip"] = "stop"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    compile: Literal[False, "default", "max-autotune", "reduce-overhead"] = False
    cuda_graphs: bool = False


@dataclass(frozen=True)
class OptimSettings:
    """Adam optimizers for generator and critic and their learning-rate schedule.

    Args:
        lr: Generator learning rate.
        critic_lr_factor: The critic's learning rate is ``lr`` times this (two time-scale update rule).
        betas: Adam's beta1 and beta2 (the paper: 0.5, 0.999).
        weight_decay: Adam weight decay.
        schedule: "constant", "linear_decay" (constant, then linearly to zero, as the paper's
            100 + 100 epochs) or "cosine" (over the whole run).
        decay_start: For "linear_decay": the fraction of ``train.steps`` after which the rate decays.
    """

    lr: Annotated[float, Range(gt=0)] = 2e-4
    critic_lr_factor: Annotated[float, Range(gt=0)] = 1.0
    betas: tuple[Annotated[float, Range(ge=0, lt=1)], Annotated[float, Range(ge=0, lt=1)]] = (0.5, 0.999)
    weight_decay: Annotated[float, Range(ge=0)] = 0.0
    schedule: Literal["constant", "linear_decay", "cosine"] = "constant"
    decay_start: Annotated[float, Range(ge=0, le=1)] = 0.5
