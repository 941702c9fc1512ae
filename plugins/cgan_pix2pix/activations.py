"""Built-in activations. Each factory returns a fresh module, never in-place (skip connections reuse inputs)."""

from typing import Annotated, Literal

from torch import nn

from cgan_kit import Range, hookimpl


def relu() -> nn.Module:
    """Rectified linear unit, max(0, x)."""
    return nn.ReLU()


def leaky_relu(slope: Annotated[float, Range(ge=0)] = 0.2) -> nn.Module:
    """Leaky ReLU, x for x > 0 and slope * x below (the pix2pix encoder and critic use 0.2).

    Args:
        slope: Gradient for negative inputs.
    """
    return nn.LeakyReLU(slope)


def mish() -> nn.Module:
    """Mish, x * tanh(softplus(x))."""
    return nn.Mish()


def silu() -> nn.Module:
    """SiLU (swish), x * sigmoid(x)."""
    return nn.SiLU()


def gelu(approximate: Literal["none", "tanh"] = "none") -> nn.Module:
    """Gaussian error linear unit, x * Phi(x).

    Args:
        approximate: "none" for the exact error function, "tanh" for the faster tanh approximation.
    """
    return nn.GELU(approximate=approximate)


@hookimpl
def register_activations(register):
    register("relu", relu)
    register("leaky_relu", leaky_relu)
    register("mish", mish)
    register("silu", silu)
    register("gelu", gelu)
