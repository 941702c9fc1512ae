"""An example cgan-kit plugin: one loss, one stabilizer and one command, registered through hooks."""

from __future__ import annotations

from typing import Annotated

import click
import torch

from cgan_kit import Range, ReconstructionLoss, Stabilizer, hookimpl


class Charbonnier(ReconstructionLoss):
    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((output - target) ** 2 + self.epsilon**2).mean()


def charbonnier(epsilon: Annotated[float, Range(gt=0)] = 1e-3) -> Charbonnier:
    """Charbonnier loss, a smooth L1: mean of sqrt((output - target)^2 + epsilon^2).

    Args:
        epsilon: Smoothing constant; below it the loss behaves like L2, above like L1.
    """
    return Charbonnier(epsilon)


class LabelNoise(Stabilizer):
    capturable = True  # no host reads, no use of step: it can run inside a captured CUDA graph

    def __init__(self, amount: float):
        self.amount = amount

    def targets(self, real_target, fake_target, step, role):
        noise = lambda t: (torch.rand_like(t) * 2 - 1) * self.amount  # noqa: E731
        return (real_target + noise(real_target)).clamp(0, 1), (fake_target + noise(fake_target)).clamp(0, 1)


def label_noise(amount: Annotated[float, Range(ge=0, le=0.5)] = 0.05) -> LabelNoise:
    """Uniform noise on the critic's real and fake targets, clamped to [0, 1].

    Args:
        amount: Half-width of the uniform noise added to every target.
    """
    return LabelNoise(amount)


@hookimpl
def register_losses(register):
    register("charbonnier", charbonnier)


@hookimpl
def register_stabilizers(register):
    register("label_noise", label_noise)


@hookimpl
def register_commands(cli):
    @cli.command(name="example-hello")
    @click.argument("name", default="world")
    def hello(name: str) -> None:
        """Say hello (a command added by cgan-example-plugin)."""
        click.echo(f"hello {name} from cgan-example-plugin")
