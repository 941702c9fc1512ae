"""Built-in stabilizers: label smoothing and flipping, instance noise, differentiable augmentation,
a history buffer of past fakes, a moving average of the generators, and spectral normalization of
critics or generators.

They act on networks by role, so they work with any method: a method with two critics gets a
history pool per critic, one with two generators a moving average of each."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from cgan_kit import Networks, Range, Stabilizer, hookimpl

Decay = Literal["none", "linear"]


def _strength(decay: Decay, step: int | Tensor, total_steps: int) -> float | Tensor:
    """1 throughout with no decay; with linear decay, 1 at the start falling to 0 at the last step
    (a device tensor when ``step`` is one: the loop's step captured as a CUDA graph)."""
    if decay == "none" or total_steps <= 0:
        return 1.0
    if isinstance(step, Tensor):
        return (1.0 - step / total_steps).clamp(min=0.0)
    return max(0.0, 1.0 - step / total_steps)


class LabelSmoothing(Stabilizer):
    capturable = True

    def __init__(self, real: float | list[float], fake: float):
        self.real, self.fake = real, fake

    def targets(self, real_target: Tensor, fake_target: Tensor, step: int | Tensor,
                role: str) -> tuple[Tensor, Tensor]:
        if isinstance(self.real, list):  # a fresh uniform draw per patch
            low, high = self.real
            real_target = torch.empty_like(real_target).uniform_(low, high)
        else:
            real_target = torch.full_like(real_target, self.real)
        return real_target, torch.full_like(fake_target, self.fake)


class LabelFlipping(Stabilizer):
    capturable = True

    def __init__(self, probability: float, decay: Decay):
        self.probability, self.decay = probability, decay
        self.total_steps = 0

    def setup(self, networks: Networks, total_steps: int) -> None:
        self.total_steps = total_steps

    def targets(self, real_target: Tensor, fake_target: Tensor, step: int | Tensor,
                role: str) -> tuple[Tensor, Tensor]:
        p = self.probability * _strength(self.decay, step, self.total_steps)
        # One draw per image: a flipped image has all its patches' labels swapped.
        flip = torch.rand(real_target.shape[0], device=real_target.device) < p
        flip = flip.view(-1, *([1] * (real_target.dim() - 1)))
        return torch.where(flip, fake_target, real_target), torch.where(flip, real_target, fake_target)


class InstanceNoise(Stabilizer):
    capturable = True

    def __init__(self, sigma: float, decay: Decay):
        self.sigma, self.decay = sigma, decay
        self.total_steps = 0

    def setup(self, networks: Networks, total_steps: int) -> None:
        self.total_steps = total_steps

    def critic_inputs(self, real_pair: Tensor, fake_pair: Tensor, step: int | Tensor,
                      role: str) -> tuple[Tensor, Tensor]:
        if self.sigma == 0:
            return real_pair, fake_pair
        # Drawn even where the decay has reached 0: the random numbers a step draws never depend on
        # the step, so a captured step (whose step is a tensor) draws the very same ones.
        sigma = self.sigma * _strength(self.decay, step, self.total_steps)
        return real_pair + sigma * torch.randn_like(real_pair), fake_pair + sigma * torch.randn_like(fake_pair)


Augmentation = Literal["color", "translation", "cutout"]


class DiffAugment(Stabilizer):
    """Differentiable augmentation (Zhao et al., 2020): every batch a critic scores in training, real
    or generated, in the critic's update and in the generators', gets a fresh random transform, the
    same for all of an image's channels (an input|output pair moves as one). Only tensor arithmetic
    and indexing: the generators learn through it, and a captured step can replay it."""

    capturable = True

    def __init__(self, policy: tuple[str, ...], translation: float, cutout: float):
        self.policy, self.translation, self.cutout = policy, translation, cutout

    def augment(self, images: Tensor, step: int | Tensor, role: str) -> Tensor:
        for name in self.policy:
            if name == "color":
                images = _color(images)
            elif name == "translation" and self.translation > 0:
                images = _translate(images, self.translation)
            elif name == "cutout" and self.cutout > 0:
                images = _cut_out(images, self.cutout)
        return images


def _color(images: Tensor) -> Tensor:
    """Random brightness (+-0.5), saturation (x0-2 around the channel mean) and contrast (x0.5-1.5
    around the image mean), one draw of each per image."""
    def draw(low: float, high: float) -> Tensor:
        return torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype) * (high - low) + low

    images = images + draw(-0.5, 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * draw(0.0, 2.0) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * draw(0.5, 1.5) + mean


def _translate(images: Tensor, fraction: float) -> Tensor:
    """Shift each image by a random whole number of pixels, up to ``fraction`` of its height and
    width each way, filling with zeros (mid-grey in [-1, 1])."""
    batch, _, height, width = images.shape
    reach_y, reach_x = int(height * fraction + 0.5), int(width * fraction + 0.5)
    device = images.device
    shift_y = torch.randint(-reach_y, reach_y + 1, (batch, 1, 1), device=device)
    shift_x = torch.randint(-reach_x, reach_x + 1, (batch, 1, 1), device=device)
    # Index into a copy padded by one zero pixel: a source row or column outside the image reads the padding.
    rows = (torch.arange(height, device=device).view(1, -1, 1) - shift_y + 1).clamp(0, height + 1)
    columns = (torch.arange(width, device=device).view(1, 1, -1) - shift_x + 1).clamp(0, width + 1)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    picked = padded[torch.arange(batch, device=device).view(-1, 1, 1), rows, columns]  # (B, H, W, C)
    return picked.permute(0, 3, 1, 2)


def _cut_out(images: Tensor, fraction: float) -> Tensor:
    """Zero one rectangle per image, ``fraction`` of its height and width, centred anywhere in it
    (so it may be cut by the border)."""
    batch, _, height, width = images.shape
    device = images.device
    size_y, size_x = int(height * fraction + 0.5), int(width * fraction + 0.5)
    top = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=device) - size_y // 2
    left = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=device) - size_x // 2
    ys = torch.arange(height, device=device).view(1, -1, 1)
    xs = torch.arange(width, device=device).view(1, 1, -1)
    inside = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    return images * (~inside).unsqueeze(1).to(images.dtype)


class HistoryBuffer(Stabilizer):
    """The image pool of Shrivastava et al. (2017), as pix2pix and CycleGAN use it: one pool per
    critic. It decides on the host which fakes to swap, so it cannot run inside a captured CUDA
    graph (not capturable)."""

    def __init__(self, size: int, probability: float):
        self.size, self.probability = size, probability
        self.pools: dict[str, Tensor] = {}  # critic role -> (size, C, H, W) past fakes, detached
        self.filled: dict[str, int] = {}
        self.critics: list[str] = []

    def setup(self, networks: Networks, total_steps: int) -> None:
        self.critics = networks.roles("critic")

    def critic_inputs(self, real_pair: Tensor, fake_pair: Tensor, step: int, role: str) -> tuple[Tensor, Tensor]:
        if self.size == 0:
            return real_pair, fake_pair
        fake_pair = fake_pair.detach()
        pool = self.pools.get(role)
        if pool is None or pool.shape[1:] != fake_pair.shape[1:]:
            # First call, or the image size changed (a new crop size on resume): start afresh.
            pool = fake_pair.new_empty((self.size, *fake_pair.shape[1:]))
            self.filled[role] = 0
        pool = self.pools[role] = pool.to(fake_pair.device)
        shown = []
        for fake in fake_pair:
            if self.filled[role] < self.size:  # fill the pool first, showing the new fakes themselves
                pool[self.filled[role]] = fake
                self.filled[role] += 1
                shown.append(fake)
            elif torch.rand(()).item() < self.probability:  # show an old fake, keep the new one in its place
                index = int(torch.randint(self.size, ()).item())
                shown.append(pool[index].clone())
                pool[index] = fake
            else:
                shown.append(fake)
        return real_pair, torch.stack(shown)

    def state_dict(self) -> dict[str, Tensor]:
        return {f"{role}.pool": pool[: self.filled[role]].contiguous()
                for role, pool in self.pools.items() if self.filled.get(role)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "pool" in state and len(self.critics) == 1:  # checkpoint format 1: one critic, unnamed
            state = {f"{self.critics[0]}.pool": state["pool"]}
        self.pools, self.filled = {}, {}
        for key, saved in state.items():
            role = key.removesuffix(".pool")
            self.filled[role] = min(saved.shape[0], self.size)
            self.pools[role] = saved.new_empty((self.size, *saved.shape[1:]))
            self.pools[role][: self.filled[role]] = saved[: self.filled[role]]


class MovingAverage(Stabilizer):
    """An exponential moving average of each generator's weights (Karras et al., 2018; Yazici et al., 2019)."""

    capturable = True

    def __init__(self, decay: float, start_step: int):
        self.decay, self.start_step = decay, start_step
        self.generators: dict[str, nn.Module] = {}
        self._averages: dict[str, nn.Module] = {}

    def setup(self, networks: Networks, total_steps: int) -> None:
        # The copies are made when first needed, so that stabilizers listed later (spectral norm)
        # have changed the generators before they are copied.
        self.generators = {role: networks[role] for role in networks.roles("generator")}

    def average(self, role: str) -> nn.Module:
        if role not in self._averages:
            assert role in self.generators, "setup() comes first"
            self._averages[role] = copy.deepcopy(self.generators[role]).eval().requires_grad_(False)
        return self._averages[role]

    @torch.no_grad()
    def after_generator_step(self, generator: nn.Module, step: int | Tensor, role: str) -> None:
        # Until start_step the average simply follows the weights: early weights are poor to average.
        if isinstance(step, Tensor):
            weight = torch.where(step <= self.start_step, 1.0, 1.0 - self.decay)
        else:
            weight = 1.0 if step <= self.start_step else 1.0 - self.decay
        average = self.average(role)
        weights = dict(generator.named_parameters())
        for name, averaged in average.named_parameters():
            averaged.lerp_(weights[name].detach(), weight)
        # Buffers (batch-norm running statistics, spectral-norm vectors) are copied, not averaged.
        buffers = dict(generator.named_buffers())
        for name, averaged in average.named_buffers():
            averaged.copy_(buffers[name])

    def eval_generator(self, role: str) -> nn.Module | None:
        return self.average(role) if role in self.generators else None

    def state_dict(self) -> dict[str, Tensor]:
        return {f"{role}.{name}": value.detach().clone()
                for role in self.generators for name, value in self.average(role).state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if not state:
            return
        roles = list(self.generators)
        if len(roles) == 1 and not any(key.startswith(f"{roles[0]}.") for key in state):
            state = {f"{roles[0]}.{key}": value for key, value in state.items()}  # checkpoint format 1
        for role in roles:
            prefix = f"{role}."
            own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            if own:
                self.average(role).load_state_dict(own)


class SpectralNormalization(Stabilizer):
    capturable = True  # its power iterations update their vectors in place inside the forward pass

    def __init__(self, target: Literal["critic", "generator", "both"], power_iterations: int):
        self.target, self.power_iterations = target, power_iterations

    def setup(self, networks: Networks, total_steps: int) -> None:
        kinds = {"critic": ("critic",), "generator": ("generator",), "both": ("generator", "critic")}[self.target]
        for network in (networks[role] for role in networks if networks.kinds[role] in kinds):
            for module in list(network.modules()):
                if (isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
                        and not parametrize.is_parametrized(module, "weight")):
                    _spectral_norm(module, n_power_iterations=self.power_iterations)


def label_smoothing(real: Annotated[float | tuple[float, float], Range(ge=0)] = 0.9,
                    fake: Annotated[float, Range(ge=0, le=1)] = 0.0) -> Stabilizer:
    """Softer critic targets: real pairs are labelled ``real`` instead of 1 (Salimans et al., 2016).

    One-sided by default, as the paper recommends: fakes keep the label 0.

    Args:
        real: Target for real pairs: a number, or [low, high] to draw a fresh target per patch
            (such as [0.8, 1.2]).
        fake: Target for generated pairs.
    """
    return LabelSmoothing(list(real) if isinstance(real, (list, tuple)) else real, fake)


def label_flipping(probability: Annotated[float, Range(ge=0, le=1)] = 0.05, decay: Decay = "none") -> Stabilizer:
    """Swap the critic's real and fake targets for a random few images of each batch.

    Args:
        probability: Chance that an image's labels are swapped in a critic step.
        decay: "none" keeps the probability; "linear" lowers it to 0 by the last step.
    """
    return LabelFlipping(probability, decay)


def instance_noise(sigma: Annotated[float, Range(ge=0)] = 0.1, decay: Decay = "linear") -> Stabilizer:
    """Gaussian noise on the pairs the critic sees in its step (Sønderby et al., 2017).

    The noise blurs the real and fake distributions into each other early in training, when
    they barely overlap; with linear decay it is gone by the last step.

    Args:
        sigma: Standard deviation of the noise, in the [-1, 1] units of the images.
        decay: "linear" lowers sigma to 0 by the last step; "none" keeps it.
    """
    return InstanceNoise(sigma, decay)


def diffaugment(policy: list[Augmentation] = ("color", "translation", "cutout"),
                translation: Annotated[float, Range(ge=0, le=0.5)] = 0.125,
                cutout: Annotated[float, Range(ge=0, le=1)] = 0.5) -> Stabilizer:
    """Differentiable augmentation of everything the critic scores, real and generated (Zhao et al., 2020).

    The critic never sees an unaugmented image, so it cannot memorize a small training set; the
    generator learns through the same transforms. Helps most on small data and long runs.

    Args:
        policy: The transforms, applied in this order: "color" (brightness, saturation, contrast),
            "translation" (a shift with zero fill), "cutout" (a zeroed rectangle).
        translation: Largest shift, as a fraction of the image's height and width.
        cutout: Side of the zeroed rectangle, as a fraction of the image's height and width.
    """
    return DiffAugment(tuple(policy), translation, cutout)


def history_buffer(size: Annotated[int, Range(ge=0, le=10000)] = 50,
                   probability: Annotated[float, Range(ge=0, le=1)] = 0.5) -> Stabilizer:
    """Show the critic past fakes: a pool of generated pairs, as pix2pix and CycleGAN use.

    Until the pool is full every new fake is stored and shown; then each fake, with the given
    probability, is swapped for a random stored one, which the critic sees instead.

    Args:
        size: How many past fakes the pool holds; 0 turns the buffer off.
        probability: Chance that a fake is replaced by a stored one once the pool is full.
    """
    return HistoryBuffer(size, probability)


def ema(decay: Annotated[float, Range(ge=0, lt=1)] = 0.999, start_step: Annotated[int, Range(ge=0)] = 0) -> Stabilizer:
    """An exponential moving average of each generator's weights, used for samples, evaluation and inference.

    Batch-norm statistics are copied from the trained generator rather than averaged. The
    average is checkpointed with the run.

    Args:
        decay: Weight kept by the average at each step; 0.999 averages over about 1000 steps.
        start_step: Until this step the average follows the weights exactly.
    """
    return MovingAverage(decay, start_step)


def spectral_norm(target: Literal["critic", "generator", "both"] = "critic",
                  power_iterations: Annotated[int, Range(ge=1)] = 1) -> Stabilizer:
    """Spectral normalization of every convolution and linear weight of critics or generators (Miyato et al., 2018).

    Applies on top of whatever norm the recipe chose; weights that are already spectrally
    normalized are left alone.

    Args:
        target: Which networks to normalize: "critic" (every critic of the method), "generator" (every
            generator) or "both".
        power_iterations: Power-method steps per training forward pass to estimate each top singular value.
    """
    return SpectralNormalization(target, power_iterations)


@hookimpl
def register_stabilizers(register: Any) -> None:
    register("label_smoothing", label_smoothing)
    register("label_flipping", label_flipping)
    register("instance_noise", instance_noise)
    register("diffaugment", diffaugment)
    register("history_buffer", history_buffer)
    register("ema", ema)
    register("spectral_norm", spectral_norm)
