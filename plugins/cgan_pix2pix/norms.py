"""Built-in normalizations: how each convolution of an architecture is normalized."""

from typing import Annotated

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cgan_kit import Norm, Range, hookimpl


class BatchNorm(Norm):
    conv_bias = False  # the norm's shift replaces the bias

    def __init__(self, momentum: float):
        self.momentum = momentum

    def layer(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels, momentum=self.momentum)


class SyncBatchNorm(BatchNorm):
    def layer(self, channels: int) -> nn.Module:
        return nn.SyncBatchNorm(channels, momentum=self.momentum)


class InstanceNorm(Norm):
    def __init__(self, affine: bool):
        self.affine = affine
        # Without its own shift the norm leaves the bias to the convolution, as the reference does.
        self.conv_bias = not affine

    def layer(self, channels: int) -> nn.Module:
        return nn.InstanceNorm2d(channels, affine=self.affine, track_running_stats=False)


class NoNorm(Norm):
    def layer(self, channels: int) -> nn.Module:
        return nn.Identity()


class SpectralNorm(NoNorm):
    def __init__(self, power_iterations: int):
        self.power_iterations = power_iterations

    def wrap(self, conv: nn.Module) -> nn.Module:
        return spectral_norm(conv, n_power_iterations=self.power_iterations)


def batch(momentum: Annotated[float, Range(gt=0, le=1)] = 0.1) -> Norm:
    """Batch normalization (the paper's choice); the convolution before it has no bias.

    Args:
        momentum: Weight of the current batch in the running mean and variance used at evaluation.
    """
    return BatchNorm(momentum)


def syncbatch(momentum: Annotated[float, Range(gt=0, le=1)] = 0.1) -> Norm:
    """Batch normalization with statistics synchronized across processes, for multi-GPU training.

    Outside distributed training it behaves exactly like "batch".

    Args:
        momentum: Weight of the current batch in the running mean and variance used at evaluation.
    """
    return SyncBatchNorm(momentum)


def instance(affine: bool = False) -> Norm:
    """Instance normalization, per image and channel, without running statistics.

    Args:
        affine: Learn a per-channel scale and shift; the convolution then drops its bias.
    """
    return InstanceNorm(affine)


def none() -> Norm:
    """No normalization: every convolution keeps its bias."""
    return NoNorm()


def spectral(power_iterations: Annotated[int, Range(ge=1)] = 1) -> Norm:
    """Spectral normalization of every convolution's weight (SAGAN), with no normalization layer.

    Args:
        power_iterations: Power-method steps per training forward pass to estimate each top singular value.
    """
    return SpectralNorm(power_iterations)


@hookimpl
def register_norms(register):
    register("batch", batch)
    register("syncbatch", syncbatch)
    register("instance", instance)
    register("none", none)
    register("spectral", spectral)
