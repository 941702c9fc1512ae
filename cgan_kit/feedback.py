"""What a run tells its user: a progress bar (or plain lines off a terminal), TensorBoard, a metrics
file and sample images."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


class RunLog:
    """Progress on the terminal, scalars and images in TensorBoard, and ``metrics.jsonl``."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, batch_size: int):
        from torch.utils.tensorboard import SummaryWriter

        self.total, self.batch_size = total_steps, batch_size
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        self.metrics = _reopen_metrics(run_dir / "metrics.jsonl", start_step)
        for leftover in (run_dir / "samples").glob(".*.tmp"):  # a sample being written when a run was killed
            leftover.unlink(missing_ok=True)
        self.interactive = sys.stderr.isatty()
        self.started, self.start_step = time.perf_counter(), start_step
        self.last_time, self.last_step = self.started, start_step
        self.progress = None
        if self.interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(),
                                     TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                     transient=False)
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, status="")
            self.progress.start()

    def images_per_s(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        return rate

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        """Record scalars; show the headline ones on the terminal."""
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.metrics.write(json.dumps({"step": step, "epoch": epoch, **values}) + "\n")
        self.metrics.flush()
        evaluation = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("eval/")}
        if evaluation:  # a line of its own that stays on screen
            shown = " ".join(f"{k} {v:.4g}" for k, v in evaluation.items())
            self.message(f"step {step}/{self.total} evaluation: {shown}")
            return
        status = " ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in values.items()
                          if k.startswith("loss/") or k in ("speed/images_per_s",))
        if self.progress is not None:
            self.progress.update(self.task, completed=step, status=f"epoch {epoch} {status}")
        else:
            elapsed = time.perf_counter() - self.started
            rate = (step - self.start_step) / max(elapsed, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(f"step {step}/{self.total} epoch {epoch} {status} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.writer.close()
        self.metrics.close()


def _reopen_metrics(path: Path, start_step: int) -> Any:
    """Open the metrics file for appending, first dropping rows past ``start_step``: a run killed
    after its last checkpoint logged steps that the resumed run will log again."""
    if path.exists() and start_step > 0:
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        tmp.replace(path)
    return open(path, "a", encoding="utf-8")


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


def sample_grid(inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor,
                critic_maps: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One row per example: input | output | target, and with ``critic_maps`` (the critic's
    realness of the generated pair and of the real pair, (B, 1, h, w) in [0, 1]) two heat maps
    after them; a (3, H', W') image in [0, 1]."""
    size = tuple(inputs.shape[-2:])
    columns = [to_rgb(inputs), to_rgb(outputs), to_rgb(targets)]
    if critic_maps is not None:
        columns += [heat_map(critic_maps[0], size), heat_map(critic_maps[1], size)]
    gap = GRID_GAP
    tiles = [torch.nn.functional.pad(column, (0, gap, 0, gap), value=1.0) for column in columns]  # white lines
    rows = [torch.cat([tile[i:i + 1] for tile in tiles], dim=3) for i in range(inputs.shape[0])]
    return torch.cat(rows, dim=2)[0, :, :-gap, :-gap]


@torch.no_grad()
def render_samples(generator: torch.nn.Module, critic: torch.nn.Module, realness: Any,
                   fixed: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The sample grid of a run: the generator (in eval mode) on the fixed held-out inputs, and
    the critic's per-patch judgement of the generated and the real pairs. The critic normalizes
    with the statistics of each batch of pairs, as in training (its running statistics mix real
    and fake batches), and changes no state. The training RNG is left untouched, so that drawing
    samples cannot change a run."""
    from cgan_kit.inference import set_mode

    modes = generator.training, critic.training
    generator.eval()
    set_mode(critic, "paper")  # batch statistics, running ones untouched; eval otherwise (no power iteration)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        inputs, targets = fixed["input"].to(device), fixed["target"].to(device)
        outputs = generator(inputs).float()
        fake_map = realness(critic(torch.cat([inputs, outputs.to(inputs.dtype)], 1)))
        real_map = realness(critic(torch.cat([inputs, targets], 1)))
    set_mode(critic, "eval")
    generator.train(modes[0])
    critic.train(modes[1])
    return sample_grid(fixed["input"], outputs, fixed["target"], (fake_map, real_map))


def save_png(image: torch.Tensor, path: Path) -> None:
    """Save a (3, H, W) image in [0, 1] as an 8-bit PNG, atomically."""
    from PIL import Image

    array = (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype("uint8")
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)


class SilentLog:
    """What the processes other than rank 0 log in distributed training: nothing."""

    def images_per_s(self, step: int) -> float:
        return 0.0

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        pass

    def advance(self, step: int) -> None:
        pass

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
