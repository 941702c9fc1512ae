"""Built-in critics: PatchGAN (pix2pix), PixelGAN, and multiscale PatchGAN (pix2pixHD)."""

from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from cgan_kit import Range, hookimpl, ref
from cgan_pix2pix.init import Init
from cgan_pix2pix.layers import Layers

Reduce = Literal["none", "mean"]
MAX_WIDTH_FACTOR = 8  # PatchGAN widths stop doubling at 8 * ndf, as in the reference


def receptive_field(stack: Iterable[nn.Module]) -> int:
    """Input pixels seen by one output pixel of a chain of convolutions and poolings, in forward order
    (other modules are pointwise and do not widen it)."""
    field = 1
    for module in reversed(list(stack)):
        if isinstance(module, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)):
            kernel, stride, dilation = _geometry(module)
            field = (field - 1) * stride + dilation * (kernel - 1) + 1
    return field


def _geometry(module: nn.Module) -> tuple[int, int, int]:
    """Kernel size, stride and dilation along the height (poolings may give ints, and lack a dilation)."""
    values = (getattr(module, name, 1) for name in ("kernel_size", "stride", "dilation"))
    return tuple(value[0] if isinstance(value, tuple) else value for value in values)


class PatchCritic(nn.Module):
    """A fully convolutional critic scoring every patch, or their mean with ``reduce="mean"``."""

    def __init__(self, body: nn.Sequential, reduce: Reduce):
        super().__init__()
        self.body, self.reduce = body, reduce
        self.receptive_field = receptive_field(body.modules())
        # A block ends where the next module holds a convolution: its output is a feature map.
        self.block_ends = [i for i in range(len(body) - 1)
                           if any(isinstance(m, nn.Conv2d) for m in body[i + 1].modules())]

    def forward(self, x: Tensor) -> Tensor:
        scores = self.body(x)
        return scores.mean((2, 3), keepdim=True) if self.reduce == "mean" else scores

    def features(self, x: Tensor) -> list[Tensor]:
        """The feature map of each block, first to last (the input of the final convolution
        last), for the feature-matching loss (``[method] feature_matching``)."""
        maps = []
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self.block_ends:
                maps.append(x)
        return maps


class MultiscaleCritic(nn.Module):
    """One critic per scale, each on the previous scale's input average-pooled to half size; scores
    of all scales come out flattened side by side as (B, 1, 1, N)."""

    def __init__(self, critics: list[PatchCritic]):
        super().__init__()
        self.critics = nn.ModuleList(critics)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)  # pix2pixHD's
        self.receptive_field = max(receptive_field([self.pool] * scale + list(critic.body.modules()))
                                   for scale, critic in enumerate(critics))

    def forward(self, x: Tensor) -> Tensor:
        scores = []
        for scale, critic in enumerate(self.critics):
            if scale:
                x = self.pool(x)
            scores.append(critic(x).flatten(1))
        return torch.cat(scores, 1)[:, None, None, :]

    def features(self, x: Tensor) -> list[Tensor]:
        """Every scale's feature maps, finest scale first (see ``PatchCritic.features``)."""
        maps = []
        for scale, critic in enumerate(self.critics):
            if scale:
                x = self.pool(x)
            maps += critic.features(x)
        return maps


def _patch_body(in_channels: int, n_layers: int, ndf: int, layers: Layers,
                activation: Callable[[], nn.Module]) -> nn.Sequential:
    """The reference's NLayerDiscriminator: n_layers stride-2 4x4 convolutions, one stride-1, one to scores."""
    widths = [ndf * min(2**n, MAX_WIDTH_FACTOR) for n in range(n_layers + 1)]
    body = [layers.conv(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1)), activation()]  # no norm on the input
    for n in range(1, n_layers + 1):
        stride = 2 if n < n_layers else 1
        body += [layers.conv(nn.Conv2d(widths[n - 1], widths[n], 4, stride=stride, padding=1, bias=layers.bias)),
                 layers.norm(widths[n]), activation()]
    body.append(layers.conv(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1)))
    return nn.Sequential(*body)


def patchgan(
    in_channels: int,
    n_layers: Annotated[int, Range(ge=1, le=12)] = 3,
    ndf: Annotated[int, Range(ge=1, le=4096)] = 64,
    norm: ref("norm") = "batch",
    activation: ref("activation") = "leaky_relu",
    reduce: Reduce = "none",
    init: Init = "normal",
    init_gain: Annotated[float, Range(gt=0)] = 0.02,
) -> nn.Module:
    """PatchGAN critic (pix2pix): one real/fake logit per overlapping patch; 3 layers see 70x70 patches.

    On a 256x256 pair the default scores a 30x30 grid of 70x70 patches. Inputs need at least
    3 * 2**n_layers pixels a side (24 for 3 layers).

    Args:
        in_channels: Channels of the input and output images concatenated.
        n_layers: Stride-2 convolutions; 1 gives 16x16 patches, 3 gives 70x70, 5 gives 286x286.
        ndf: Width of the first convolution; each layer doubles it, up to 8 * ndf.
        norm: Normalization of every convolution but the first and the last.
        activation: Activation after every convolution but the last (the paper: leaky ReLU, slope 0.2).
        reduce: "none" keeps one score per patch; "mean" averages them into one score per image.
        init: Weight initialization: "normal" (N(0, init_gain), the paper's), "xavier", "kaiming" or "orthogonal".
        init_gain: Standard deviation for "normal", gain for "xavier" and "orthogonal"; unused by "kaiming".
    """
    body = _patch_body(in_channels, n_layers, ndf, Layers(norm(), init, init_gain), activation)
    return PatchCritic(body, reduce)


def pixelgan(
    in_channels: int,
    ndf: Annotated[int, Range(ge=1, le=4096)] = 64,
    norm: ref("norm") = "batch",
    activation: ref("activation") = "leaky_relu",
    reduce: Reduce = "none",
    init: Init = "normal",
    init_gain: Annotated[float, Range(gt=0)] = 0.02,
) -> nn.Module:
    """PixelGAN critic: 1x1 convolutions scoring every pixel on its own (judges colour, not structure).

    Args:
        in_channels: Channels of the input and output images concatenated.
        ndf: Width of the first convolution; the second doubles it.
        norm: Normalization of the second convolution.
        activation: Activation after the first two convolutions.
        reduce: "none" keeps one score per pixel; "mean" averages them into one score per image.
        init: Weight initialization: "normal" (N(0, init_gain), the paper's), "xavier", "kaiming" or "orthogonal".
        init_gain: Standard deviation for "normal", gain for "xavier" and "orthogonal"; unused by "kaiming".
    """
    layers = Layers(norm(), init, init_gain)
    body = nn.Sequential(
        layers.conv(nn.Conv2d(in_channels, ndf, 1)), activation(),
        layers.conv(nn.Conv2d(ndf, 2 * ndf, 1, bias=layers.bias)), layers.norm(2 * ndf), activation(),
        layers.conv(nn.Conv2d(2 * ndf, 1, 1)),
    )
    return PatchCritic(body, reduce)


def multiscale_patchgan(
    in_channels: int,
    scales: Annotated[int, Range(ge=1, le=8)] = 3,
    n_layers: Annotated[int, Range(ge=1, le=12)] = 3,
    ndf: Annotated[int, Range(ge=1, le=4096)] = 64,
    norm: ref("norm") = "batch",
    activation: ref("activation") = "leaky_relu",
    reduce: Reduce = "none",
    init: Init = "normal",
    init_gain: Annotated[float, Range(gt=0)] = 0.02,
) -> nn.Module:
    """Multiscale PatchGAN (pix2pixHD): independent PatchGANs on the pair at full, half, quarter... size.

    Scores of all scales are returned side by side, shape (B, 1, 1, N). With reduce "none" every patch
    counts once, so the full scale dominates a mean loss; with "mean" each scale gives one score and
    weighs the same, as in pix2pixHD. The receptive field reported is the coarsest scale's, in input
    pixels. The coarsest scale still needs 3 * 2**n_layers pixels a side, so the input needs about
    3 * 2**(n_layers + scales - 1) (96 for 3 layers and 3 scales).

    Args:
        in_channels: Channels of the input and output images concatenated.
        scales: Number of scales (pix2pixHD uses 2 or 3); each halves the previous with 3x3 average pooling.
        n_layers: Stride-2 convolutions of each PatchGAN (3 gives 70x70 patches at its scale).
        ndf: Width of each PatchGAN's first convolution; each layer doubles it, up to 8 * ndf.
        norm: Normalization of every convolution but the first and the last.
        activation: Activation after every convolution but the last (the paper: leaky ReLU, slope 0.2).
        reduce: "none" keeps every patch score; "mean" averages each scale's into one score.
        init: Weight initialization: "normal" (N(0, init_gain), the paper's), "xavier", "kaiming" or "orthogonal".
        init_gain: Standard deviation for "normal", gain for "xavier" and "orthogonal"; unused by "kaiming".
    """
    critics = [PatchCritic(_patch_body(in_channels, n_layers, ndf, Layers(norm(), init, init_gain), activation),
                           reduce) for _ in range(scales)]
    return MultiscaleCritic(critics)


@hookimpl
def register_critics(register):
    register("patchgan", patchgan)
    register("pixelgan", pixelgan)
    register("multiscale_patchgan", multiscale_patchgan)
