"""The ResNet generator of CycleGAN/pix2pix (Johnson et al.): downsample, residual blocks, upsample."""

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

from cgan_pix2pix.layers import Layers, Upsample, crop, pad_to_multiple, upsample

Padding = Literal["reflect", "replicate", "zeros"]


class ResidualBlock(nn.Module):
    """x + conv-norm-act-(dropout)-conv-norm(x), at constant width and resolution."""

    def __init__(self, channels: int, layers: Layers, activation: Callable[[], nn.Module], padding: Padding,
                 dropout: float):
        super().__init__()

        def conv() -> nn.Module:
            return layers.conv(nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding, bias=layers.bias))

        body = [conv(), layers.norm(channels), activation()]
        if dropout > 0:
            body.append(nn.Dropout(dropout))
        body += [conv(), layers.norm(channels)]
        self.body = nn.Sequential(*body)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """A fully convolutional network padded to its total stride, so that any image size comes back."""

    def __init__(self, body: nn.Sequential, stride: int):
        super().__init__()
        self.body, self.stride = body, stride

    def forward(self, x: Tensor) -> Tensor:
        # At least 2x2 at the bottleneck, where the residual blocks reflect-pad by one pixel.
        x, pads = pad_to_multiple(x, self.stride, minimum=2 * self.stride)
        return crop(self.body(x), pads)


def build_resnet(in_channels: int, out_channels: int, blocks: int, ngf: int, downsamplings: int, layers: Layers,
                 activation: Callable[[], nn.Module], padding: Padding, dropout: float,
                 upsample_mode: Upsample) -> ResNet:
    """Assemble the ResNet generator (see the ``resnet`` factory)."""
    body = [layers.conv(nn.Conv2d(in_channels, ngf, 7, padding=3, padding_mode=padding, bias=layers.bias)),
            layers.norm(ngf), activation()]
    for i in range(downsamplings):
        width = ngf * 2**i
        body += [layers.conv(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=layers.bias)),
                 layers.norm(2 * width), activation()]
    width = ngf * 2**downsamplings
    body += [ResidualBlock(width, layers, activation, padding, dropout) for _ in range(blocks)]
    for i in reversed(range(downsamplings)):
        width = ngf * 2**i
        body += [upsample(2 * width, width, 3, upsample_mode, layers, bias=layers.bias), layers.norm(width),
                 activation()]
    body += [layers.conv(nn.Conv2d(ngf, out_channels, 7, padding=3, padding_mode=padding)), nn.Tanh()]
    return ResNet(nn.Sequential(*body), 2**downsamplings)
