"""Building blocks shared by the architectures: consistent layer making, self-attention, padding."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgan_kit import Norm
from cgan_pix2pix.init import Init, initialize

Upsample = Literal["transpose", "resize_conv", "bilinear_conv"]


class Layers:
    """Makes the layers of one network alike: each convolution is initialized, then wrapped by the
    norm; each norm layer is initialized. ``bias`` says whether a convolution followed by a norm
    layer needs its own bias."""

    def __init__(self, norm: Norm, init: Init, gain: float):
        self._norm, self._init, self._gain = norm, init, gain
        self.bias = norm.conv_bias

    def conv(self, conv: nn.Module) -> nn.Module:
        return self._norm.wrap(initialize(conv, self._init, self._gain))

    def norm(self, channels: int) -> nn.Module:
        return initialize(self._norm.layer(channels), self._init, self._gain)


class SelfAttention(nn.Module):
    """SAGAN self-attention: every position attends to all others; starts as the identity (gamma = 0)."""

    def __init__(self, channels: int, layers: Layers):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = layers.conv(nn.Conv2d(channels, inner, 1))
        self.key = layers.conv(nn.Conv2d(channels, inner, 1))
        self.value = layers.conv(nn.Conv2d(channels, channels, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, N, inner)
        key = self.key(x).flatten(2)  # (B, inner, N)
        value = self.value(x).flatten(2)  # (B, C, N)
        attention = torch.softmax(query @ key, dim=-1)  # (B, N, N): row i weighs the positions i looks at
        out = (value @ attention.transpose(1, 2)).view(batch, channels, height, width)
        return x + self.gamma * out


def upsample(in_channels: int, out_channels: int, kernel: int, mode: Upsample, layers: Layers,
             bias: bool) -> nn.Module:
    """Double the resolution: a transposed convolution, or nearest-neighbour ("resize_conv") or
    bilinear ("bilinear_conv") resizing then a 3x3 convolution (Odena et al., free of checkerboard
    artifacts; bilinear also leaves no 2x2 blocks for the convolution to smooth)."""
    if mode == "transpose":
        padding = (kernel - 1) // 2
        return layers.conv(nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=padding,
                                              output_padding=kernel % 2, bias=bias))
    if mode in ("resize_conv", "bilinear_conv"):
        resize = (nn.Upsample(scale_factor=2, mode="nearest") if mode == "resize_conv" else
                  nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        return nn.Sequential(resize, layers.conv(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)))
    raise ValueError(f'unknown upsample "{mode}"; choose "transpose", "resize_conv" or "bilinear_conv"')


Pads = tuple[int, int, int, int]


def pad_to_multiple(x: Tensor, multiple: int, minimum: int = 1) -> tuple[Tensor, Pads]:
    """Pad height and width to the next multiples of ``multiple`` not below ``minimum``, evenly on
    both sides; return the pads.

    Reflection avoids hard edges; an image smaller than the padding it needs (a tiny input to a deep
    network) cannot be reflected, so it is replicated instead.
    """
    def padding(side: int) -> int:
        target = max(side, minimum)
        return target + -target % multiple - side

    height, width = x.shape[-2:]
    pad_h, pad_w = padding(height), padding(width)
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if not any(pads):
        return x, pads
    mode = "reflect" if pads[1] < width and pads[3] < height else "replicate"
    return F.pad(x, pads, mode=mode), pads


def crop(x: Tensor, pads: Pads) -> Tensor:
    """Undo ``pad_to_multiple``."""
    left, right, top, bottom = pads
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]
