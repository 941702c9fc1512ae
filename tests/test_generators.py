"""The built-in generators: the reference's exact sizes, any image size, and gradients everywhere."""

import inspect
import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.params import params_of, parse_docstring
from cgan_pix2pix.activations import leaky_relu, relu
from cgan_pix2pix.generators import resnet, unet
from cgan_pix2pix.layers import Layers, SelfAttention, crop, pad_to_multiple, upsample
from cgan_pix2pix.norms import batch, instance, none, spectral


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_unet(in_channels=3, out_channels=3, **kwargs):
    args = dict(depth=4, ngf=4, max_channels=16, norm=batch, encoder_activation=leaky_relu,
                decoder_activation=relu)
    return unet(in_channels, out_channels, **{**args, **kwargs})


def small_resnet(in_channels=3, out_channels=3, **kwargs):
    args = dict(blocks=2, ngf=4, norm=instance, activation=relu)
    return resnet(in_channels, out_channels, **{**args, **kwargs})


def test_registered_and_documented():
    registry = plugins.registry()
    assert {"unet", "resnet"} <= set(registry.names("generator"))
    for name in ("unet", "resnet"):
        entry = registry.get("generator", name)
        typing.get_type_hints(entry.factory, include_extras=True)  # every annotation resolves
        assert entry.summary
        assert [p.name for p in entry.context] == ["in_channels", "out_channels"]
        _, _, docs = parse_docstring(entry.factory.__doc__)
        for param in params_of(entry.factory):
            assert param.annotation is not inspect.Parameter.empty, (name, param.name)
            assert docs.get(param.name), (name, param.name)
        for param in entry.params:
            assert not param.required and param.check(param.default)[1] is None, (name, param.name)
            if param.ref_kind:
                assert param.default in registry.names(param.ref_kind), (name, param.name)


@pytest.mark.parametrize("depth,parameters", [(8, 54_413_955), (7, 41_828_995)])
def test_unet_matches_the_reference_size(depth, parameters):
    model = unet(3, 3, depth=depth, norm=batch, encoder_activation=leaky_relu, decoder_activation=relu)
    assert count(model) == parameters


@pytest.mark.parametrize("blocks,parameters", [(9, 11_378_179), (6, 7_837_699)])
def test_resnet_matches_the_reference_size(blocks, parameters):
    assert count(resnet(3, 3, blocks=blocks, norm=instance, activation=relu)) == parameters


def test_unet_dropout_sits_in_the_blocks_above_the_innermost_as_the_reference():
    model = unet(3, 3, depth=8, ngf=2, max_channels=8, norm=batch, encoder_activation=leaky_relu,
                 decoder_activation=relu)
    with_dropout = [level for level, block in enumerate(model.up) if any(isinstance(m, nn.Dropout) for m in block)]
    assert with_dropout == [4, 5, 6]
    depth7 = unet(3, 3, depth=7, ngf=2, max_channels=8, norm=batch, encoder_activation=leaky_relu,
                  decoder_activation=relu)
    assert [level for level, block in enumerate(depth7.up) if any(isinstance(m, nn.Dropout) for m in block)] == [4, 5]
    without = small_unet(depth=8, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in without.modules())


@pytest.mark.parametrize("size", [(33, 47), (300, 200), (16, 16), (1, 5)])
@pytest.mark.parametrize("upsample", ["transpose", "resize_conv", "bilinear_conv"])
def test_unet_any_size(size, upsample):
    model = small_unet(upsample=upsample, attention=[8])
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_upsampling_is_the_resize_then_a_3x3_convolution(mode):
    layer = upsample(4, 6, 4, "resize_conv" if mode == "nearest" else "bilinear_conv", Layers(none(), "normal", 0.02),
                     bias=True)
    conv = layer[1]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    x = torch.randn(2, 4, 5, 7)
    resized = F.interpolate(x, scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    torch.testing.assert_close(layer(x), conv(resized))
    assert layer(x).shape == (2, 6, 10, 14)
    if mode == "bilinear":  # no 2x2 blocks: neighbouring output pixels of one input pixel differ
        assert not torch.equal(resized[..., 0::2, 0::2], resized[..., 1::2, 1::2])


@pytest.mark.parametrize("channels", [(1, 1), (4, 4), (3, 1), (1, 3)])
def test_unet_channels(channels):
    in_channels, out_channels = channels
    out = small_unet(in_channels, out_channels)(torch.randn(2, in_channels, 20, 24))
    assert out.shape == (2, out_channels, 20, 24)


def test_deep_unet_on_an_image_smaller_than_its_stride():
    model = small_unet(depth=8, ngf=2, max_channels=8)
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)


def test_unet_attention_placement():
    model = small_unet(attention=[2, 16])
    blocks = [m for m in model.modules() if isinstance(m, SelfAttention)]
    # Factor 2 is the outermost decoder input (skip + upsampled: 2 * ngf); 16 the innermost (16 channels).
    assert sorted(block.value.in_channels for block in blocks) == [8, 16]
    for bad in ([3], [32]):
        with pytest.raises(ValueError, match="attention"):
            small_unet(attention=bad)


def test_self_attention_starts_as_identity_then_attends_globally():
    torch.manual_seed(0)
    block = SelfAttention(8, Layers(batch(), "normal", 0.02))
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    assert torch.equal(block(x), x)
    nn.init.constant_(block.gamma, 1.0)
    block(x)[0, :, 0, 0].sum().backward()  # one corner of the first image...
    assert x.grad[0, :, -1, -1].abs().sum() > 0  # ...sees the opposite corner
    assert x.grad[1].abs().sum() == 0  # ...and nothing of the other image


@pytest.mark.parametrize("build", [
    lambda: small_unet(attention=[4, 16]),
    lambda: small_unet(upsample="resize_conv", norm=instance),
    lambda: small_unet(norm=spectral),
    lambda: small_resnet(dropout=0.5, upsample="resize_conv"),
    lambda: small_resnet(norm=batch, padding="zeros"),
], ids=["unet-attention", "unet-resize-instance", "unet-spectral", "resnet-dropout-resize", "resnet-batch"])
def test_gradients_reach_every_parameter(build):
    torch.manual_seed(0)
    model = build()
    for module in model.modules():
        if isinstance(module, SelfAttention):
            nn.init.constant_(module.gamma, 0.5)  # at 0 it passes nothing to its query, key and value
    model(torch.randn(2, 3, 24, 20)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("size", [(33, 47), (300, 200), (1, 1)])
@pytest.mark.parametrize("channels", [(1, 1), (4, 4)])
def test_resnet_any_size(size, channels):
    in_channels, out_channels = channels
    out = small_resnet(in_channels, out_channels)(torch.randn(1, in_channels, *size))
    assert out.shape == (1, out_channels, *size)


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zeros"])
@pytest.mark.parametrize("upsample", ["transpose", "resize_conv", "bilinear_conv"])
def test_resnet_options(padding, upsample):
    model = small_resnet(padding=padding, upsample=upsample, downsamplings=3, dropout=0.5)
    assert model(torch.randn(2, 3, 21, 30)).shape == (2, 3, 21, 30)


def test_padding_reflects_and_crops_back():
    x = torch.arange(35.0).view(1, 1, 5, 7)
    padded, pads = pad_to_multiple(x, 4)
    torch.testing.assert_close(padded, F.pad(x, (0, 1, 1, 2), mode="reflect"))
    torch.testing.assert_close(crop(padded, pads), x)
    tiny, pads = pad_to_multiple(x, 16)  # needs more padding than the image has pixels
    torch.testing.assert_close(tiny, F.pad(x, (4, 5, 5, 6), mode="replicate"))
    torch.testing.assert_close(crop(tiny, pads), x)
    same, pads = pad_to_multiple(x, 1, minimum=8)
    assert same.shape[-2:] == (8, 8)


@pytest.mark.parametrize("scheme", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_schemes(scheme):
    torch.manual_seed(0)
    model = unet(3, 3, depth=3, ngf=64, norm=batch, encoder_activation=leaky_relu, decoder_activation=relu,
                 init=scheme, init_gain=0.02)
    conv = model.down[1][1]
    std = conv.weight.std().item()
    expected = {"normal": 0.02, "xavier": 0.02 * (2 / (16 * 64 + 16 * 128)) ** 0.5,
                "kaiming": (2 / (16 * 64)) ** 0.5, "orthogonal": 0.02 / (64 * 16) ** 0.5}[scheme]
    assert std == pytest.approx(expected, rel=0.1)
    norm = model.down[1][2]
    assert norm.weight.mean().item() == pytest.approx(1.0, abs=0.01) and norm.bias.abs().sum() == 0
    assert model.up[0][1].bias.abs().sum() == 0
