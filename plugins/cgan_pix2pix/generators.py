"""Built-in generators: the U-Net and ResNet of pix2pix, with optional self-attention and resize-convolutions."""

from typing import Annotated

from torch import nn

from cgan_kit import Range, hookimpl, ref
from cgan_pix2pix.init import Init
from cgan_pix2pix.layers import Layers, Upsample
from cgan_pix2pix.resnet import Padding, build_resnet
from cgan_pix2pix.unet import build_unet


def unet(
    in_channels: int,
    out_channels: int,
    depth: Annotated[int, Range(ge=1, le=16)] = 8,
    ngf: Annotated[int, Range(ge=1, le=4096)] = 64,
    max_channels: Annotated[int, Range(ge=1, le=16384)] = 512,
    norm: ref("norm") = "batch",
    encoder_activation: ref("activation") = "leaky_relu",
    decoder_activation: ref("activation") = "relu",
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.5,
    upsample: Upsample = "transpose",
    attention: Annotated[list[int], Range(ge=2)] = (),
    init: Init = "normal",
    init_gain: Annotated[float, Range(gt=0)] = 0.02,
) -> nn.Module:
    """U-Net encoder-decoder with skip connections (pix2pix); depth 8 is the paper's unet_256.

    Each level halves the resolution with a 4x4 stride-2 convolution on the way down and doubles it on
    the way up, concatenating the mirrored encoder features. Inputs of any size work: they are padded to
    a multiple of 2**depth (reflected, or replicated when too small) and the output is cropped back.

    Args:
        in_channels: Channels of the input image.
        out_channels: Channels of the output image (tanh, in [-1, 1]).
        depth: Number of downsamplings; 7 is the reference unet_128, 8 its unet_256 (1x1 bottleneck at 256 px).
        ngf: Width of the outermost level; each level deeper doubles it, up to max_channels.
        max_channels: Cap on the width of any level.
        norm: Normalization of every level except the outermost and the innermost encoder level.
        encoder_activation: Activation before each encoder convolution (the paper: leaky ReLU, slope 0.2).
        decoder_activation: Activation before each decoder upsampling (the paper: ReLU).
        dropout: Dropout rate in the depth - 5 decoder blocks just above the innermost (3 at depth 8, as in
            the paper and the reference); 0 disables it.
        upsample: "transpose" for 4x4 transposed convolutions, "resize_conv" for nearest-neighbour resizing then
            a 3x3 convolution (no checkerboard artifacts), "bilinear_conv" for bilinear resizing then a 3x3
            convolution.
        attention: Downsampling factors (powers of two up to 2**depth) of the feature maps to put a SAGAN
            self-attention block on, in the decoder just before they are upsampled; [8] attends over the
            32x32 maps of a 256x256 input. Cost grows with the square of the map's pixel count.
        init: Weight initialization: "normal" (N(0, init_gain), the paper's), "xavier", "kaiming" or "orthogonal".
        init_gain: Standard deviation for "normal", gain for "xavier" and "orthogonal"; unused by "kaiming".
    """
    return build_unet(in_channels, out_channels, depth, ngf, max_channels, Layers(norm(), init, init_gain),
                      encoder_activation, decoder_activation, dropout, upsample, list(attention))


def resnet(
    in_channels: int,
    out_channels: int,
    blocks: Annotated[int, Range(ge=1, le=256)] = 9,
    ngf: Annotated[int, Range(ge=1, le=4096)] = 64,
    downsamplings: Annotated[int, Range(ge=1, le=12)] = 2,
    norm: ref("norm") = "instance",
    activation: ref("activation") = "relu",
    padding: Padding = "reflect",
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
    upsample: Upsample = "transpose",
    init: Init = "normal",
    init_gain: Annotated[float, Range(gt=0)] = 0.02,
) -> nn.Module:
    """ResNet generator (Johnson et al., as in CycleGAN/pix2pix): downsample, residual blocks, upsample.

    A 7x7 convolution, stride-2 downsamplings that double the width, residual blocks at the lowest
    resolution, then the mirror image back up and a 7x7 convolution with tanh. Inputs of any size work:
    they are padded to a multiple of 2**downsamplings and the output is cropped back.

    Args:
        in_channels: Channels of the input image.
        out_channels: Channels of the output image (tanh, in [-1, 1]).
        blocks: Residual blocks at the lowest resolution (the reference uses 6 or 9).
        ngf: Width of the first convolution; each downsampling doubles it.
        downsamplings: Number of stride-2 downsamplings (and upsamplings back).
        norm: Normalization after every convolution but the last.
        activation: Activation after every normalization.
        padding: Border handling of the 7x7 and residual convolutions: "reflect" (the reference), "replicate"
            or "zeros".
        dropout: Dropout rate between the two convolutions of each residual block; 0 disables it.
        upsample: "transpose" for 3x3 transposed convolutions, "resize_conv" for nearest-neighbour resizing then
            a 3x3 convolution, "bilinear_conv" for bilinear resizing then a 3x3 convolution.
        init: Weight initialization: "normal" (N(0, init_gain), the paper's), "xavier", "kaiming" or "orthogonal".
        init_gain: Standard deviation for "normal", gain for "xavier" and "orthogonal"; unused by "kaiming".
    """
    return build_resnet(in_channels, out_channels, blocks, ngf, downsamplings, Layers(norm(), init, init_gain),
                        activation, padding, dropout, upsample)


@hookimpl
def register_generators(register):
    register("unet", unet)
    register("resnet", resnet)
