"""Sample grids: the fixed held-out examples a run shows at every step, drawn as the method's
columns (images and the critics' heat maps), for the run folder, the loggers and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cgan_kit.config.build import Models, build_dataset
from cgan_kit.config.recipe import Recipe
from cgan_kit.errors import CganError
from cgan_kit.inference.translate import set_mode
from cgan_kit.outputs.log import writing
from cgan_kit.plugin_api.contracts import Column
from cgan_kit.runs.folder import COLUMNS_KEY, RunFolder
from cgan_kit.safe_output import replace
from cgan_kit.data import collate, eval_loader

SAMPLE_COUNT = 4
# The key of ``fixed_samples``'s answer when its examples differ in size: a list of one-example batches.
SEPARATE = "separate examples"


def fixed_samples(recipe: Recipe, registry: Any, device: torch.device) -> dict[str, Any]:
    """The held-out examples every sample grid of a run shows (training examples if there is no
    held-out split): the same ones at every step, and again when ``cgan report`` redraws them.

    One batch where they share one size; where they differ (a dataset whose preprocessing keeps
    each image's proportions), ``{SEPARATE: [batch, ...]}``, one batch per example, which
    ``write_samples`` draws one at a time (as training saw them) and pads to a common tile size."""
    try:
        source = build_dataset(recipe, registry, recipe.train.eval_split, augment=False)
    except CganError:
        source = build_dataset(recipe, registry, "train", augment=False)
    batches = list(eval_loader(source, SAMPLE_COUNT, SAMPLE_COUNT, 0, device))
    if len(batches) == 1:
        return batches[0]
    shapes = {tuple((key, tuple(value.shape[1:])) for key, value in batch.items() if isinstance(value, torch.Tensor))
              for batch in batches}
    if len(shapes) == 1:  # one at a time only because they might have differed: one batch after all
        return collate([{key: value[0] for key, value in batch.items()} for batch in batches])
    return {SEPARATE: batches}


def write_samples(models: Models, fixed: dict[str, Any], device: torch.device, run: RunFolder, step: int,
                  log: Any = None) -> None:
    """Draw the sample grid of ``step`` into the run's samples (and to the loggers, given a log)."""
    grid, titles = render_samples(models, fixed, device)
    with writing("the sample grid", run.sample(step), run):
        save_png(grid, run.sample(step), {COLUMNS_KEY: json.dumps(titles)})
    if log is not None:
        log.image("samples/grid", grid, step)


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] with 1, 3 or 4 channels to RGB in [0, 1] for display."""
    images = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    return images[:, :3]


GRID_GAP = 2  # pixels of white between the tiles of a sample grid
# A diverging colour scale for the critic's judgement: blue = judged fake, grey = unsure, red = judged real.
_HEAT_STOPS = torch.tensor([[0.230, 0.299, 0.754], [0.865, 0.865, 0.865], [0.706, 0.016, 0.150]])


def heat_map(realness: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) values in [0, 1] (0 fake, 1 real) as (B, 3, H, W) RGB, each patch a block of
    colour. A critic without a spatial map (h or w of 1, e.g. several scales side by side) is
    shown as one colour: its mean judgement."""
    # A diverged critic (NaN) is drawn as undecided grey rather than failing the drawing.
    realness = realness.detach().float().cpu().nan_to_num(0.5).clamp(0, 1)
    if realness.dim() != 4 or realness.shape[-2] == 1 or realness.shape[-1] == 1:
        realness = realness.flatten(1).mean(1).view(-1, 1, 1, 1)
    realness = torch.nn.functional.interpolate(realness[:, :1], size=size, mode="nearest")
    position = realness * (len(_HEAT_STOPS) - 1)
    low = position.floor().clamp(max=len(_HEAT_STOPS) - 2).long()
    fraction = position - low
    colours = _HEAT_STOPS[low.squeeze(1)].permute(0, 3, 1, 2)  # (B, 3, H, W)
    upper = _HEAT_STOPS[(low + 1).squeeze(1)].permute(0, 3, 1, 2)
    return colours + (upper - colours) * fraction


def sample_grid(columns: list[Column]) -> torch.Tensor:
    """One row per example, one tile per column: images as they are, a critic's realness as a
    heat map the size of the first image column; a (3, H', W') image in [0, 1]."""
    return rows_grid([columns])


def rows_grid(groups: list[list[Column]]) -> torch.Tensor:
    """The grid of several groups of columns (each a batch of examples, e.g. one example each where
    their sizes differ), one row per example: tiles smaller than the largest are centred in white,
    the colour of the lines between tiles, so every image shows at its own size."""
    tiles = []  # per row, its (3, h, w) tiles
    for columns in groups:
        size = tuple(next(c.images for c in columns if c.kind == "image").shape[-2:])
        drawn = [to_rgb(c.images) if c.kind == "image" else heat_map(c.images, size) for c in columns]
        tiles += [[tile[i] for tile in drawn] for i in range(drawn[0].shape[0])]
    height = max(tile.shape[-2] for row in tiles for tile in row)
    width = max(tile.shape[-1] for row in tiles for tile in row)
    gap = GRID_GAP

    def cell(tile: torch.Tensor) -> torch.Tensor:  # centred in white, with the white line right and below
        left, top = (width - tile.shape[-1]) // 2, (height - tile.shape[-2]) // 2
        pads = (left, width - tile.shape[-1] - left + gap, top, height - tile.shape[-2] - top + gap)
        return torch.nn.functional.pad(tile, pads, value=1.0)

    rows = [torch.cat([cell(tile) for tile in row], dim=2) for row in tiles]
    return torch.cat(rows, dim=1)[:, :-gap, :-gap]


@torch.no_grad()
def render_samples(models: Models, fixed: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, list[str]]:
    """The sample grid of a run and its column titles: the method's columns for the fixed held-out examples, drawn with
    the evaluation networks (generators in eval mode, the moving average where there is one;
    critics normalizing with the statistics of each batch, as in training, since their running
    statistics mix real and fake batches). No state changes, and the training RNG is left
    untouched, so that drawing samples cannot change a run."""
    networks = models.eval_networks()
    modes = {role: network.training for role, network in networks.items()}
    for role, network in networks.items():
        if networks.kinds[role] == "critic":
            set_mode(network, "paper")  # batch statistics, running ones untouched; no power iteration
        else:
            network.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            groups = []
            for examples in fixed.get(SEPARATE, [fixed]):
                batch = {key: value.to(device) for key, value in examples.items() if isinstance(value, torch.Tensor)}
                groups.append(models.method.samples(networks, models.losses, batch))
    finally:
        for role, network in networks.items():
            if networks.kinds[role] == "critic":
                set_mode(network, "eval")
            network.train(modes[role])
    return rows_grid(groups), [column.title for column in groups[0]]


def save_png(image: torch.Tensor, path: Path, text: dict[str, str] | None = None) -> None:
    """Save a (3, H, W) image in [0, 1] as an 8-bit PNG with ``text`` in its text chunks, atomically."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)  # UTF-8: titles are the method's own words
    array = (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype("uint8")
    replace(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))

