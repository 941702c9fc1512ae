"""The U-Net generator of pix2pix: an encoder-decoder whose mirrored levels are joined by skip connections."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cgan_pix2pix.layers import Layers, SelfAttention, Upsample, crop, pad_to_multiple, upsample



class UNet(nn.Module):
    """``down[i]`` and ``up[i]`` are level i of the U-Net, 0 the outermost. ``down[i]`` halves the
    resolution; ``up[i]`` takes ``down[i]``'s output (joined with the level below's) back up."""

    def __init__(self, down: list[nn.Module], up: list[nn.Module]):
        super().__init__()
        self.down, self.up = nn.ModuleList(down), nn.ModuleList(up)
        self.stride = 2 ** len(down)

    def forward(self, x: Tensor) -> Tensor:
        x, pads = pad_to_multiple(x, self.stride)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()  # the innermost output goes straight up
        for block in reversed(self.up):
            x = block(x)
            if skips:
                x = torch.cat([skips.pop(), x], 1)
        return crop(x, pads)


def build_unet(in_channels: int, out_channels: int, depth: int, ngf: int, max_channels: int, layers: Layers,
               encoder_activation: Callable[[], nn.Module], decoder_activation: Callable[[], nn.Module],
               dropout: float, upsample_mode: Upsample, attention: list[int]) -> UNet:
    """Assemble a U-Net; ``attention`` lists downsampling factors (see the ``unet`` factory)."""
    factors = [2 ** (level + 1) for level in range(depth)]
    unknown = sorted(set(attention) - set(factors))
    if unknown:
        raise ValueError(f"attention factors {unknown} are not among this U-Net's downsampling factors "
                         f"{factors}")
    width = [min(ngf * 2**level, max_channels) for level in range(depth)]
    innermost = depth - 1
    # Dropout sits in the depth - 5 decoder blocks just above the innermost, as in the reference:
    # 3 for its unet_256 (the paper's "first 3 decoder layers"), 2 for unet_128.
    dropout_levels = max(0, depth - 5)
    down, up = [], []
    for level in range(depth):
        # As in the reference, the outermost level (the raw image) and the innermost (a 1x1 map at
        # 256 px, where batch statistics are meaningless) are not normalized, yet their biases still
        # follow the norm: the reference's parameter counts depend on it.
        conv = nn.Conv2d(in_channels if level == 0 else width[level - 1], width[level], 4, stride=2, padding=1,
                         bias=layers.bias)
        block = [encoder_activation(), layers.conv(conv)] if level > 0 else [layers.conv(conv)]
        if 0 < level < innermost:
            block.append(layers.norm(width[level]))
        down.append(nn.Sequential(*block))

        channels = width[level] if level == innermost else 2 * width[level]  # the skip doubles them
        block = [SelfAttention(channels, layers)] if factors[level] in attention else []
        block.append(decoder_activation())
        if level == 0:
            block += [upsample(channels, out_channels, 4, upsample_mode, layers, bias=True), nn.Tanh()]
        else:
            block += [upsample(channels, width[level - 1], 4, upsample_mode, layers, bias=layers.bias),
                      layers.norm(width[level - 1])]
            if dropout > 0 and innermost - dropout_levels <= level < innermost:
                block.append(nn.Dropout(dropout))
        up.append(nn.Sequential(*block))
    return UNet(down, up)
