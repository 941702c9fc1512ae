"""The built-in critics: the reference's exact PatchGAN, receptive fields from the layer stack, shapes."""

import inspect
import typing

import pytest
import torch
from torch import nn

from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.params import params_of, parse_docstring
from cgan_pix2pix.activations import leaky_relu
from cgan_pix2pix.critics import multiscale_patchgan, patchgan, pixelgan
from cgan_pix2pix.norms import batch, instance, none, spectral

NAMES = ["patchgan", "pixelgan", "multiscale_patchgan"]


def small(factory, in_channels=6, **kwargs):
    return factory(in_channels, **{"ndf": 4, "norm": batch, "activation": leaky_relu, **kwargs})


def test_registered_and_documented():
    registry = plugins.registry()
    assert set(NAMES) <= set(registry.names("critic"))
    for name in NAMES:
        entry = registry.get("critic", name)
        typing.get_type_hints(entry.factory, include_extras=True)  # every annotation resolves
        assert entry.summary
        assert [p.name for p in entry.context] == ["in_channels"]
        _, _, docs = parse_docstring(entry.factory.__doc__)
        for param in params_of(entry.factory):
            assert param.annotation is not inspect.Parameter.empty, (name, param.name)
            assert docs.get(param.name), (name, param.name)
        for param in entry.params:
            assert not param.required and param.check(param.default)[1] is None, (name, param.name)
            if param.ref_kind:
                assert param.default in registry.names(param.ref_kind), (name, param.name)


def test_patchgan_is_the_reference_70x70():
    critic = patchgan(6, norm=batch, activation=leaky_relu)
    assert sum(p.numel() for p in critic.parameters()) == 2_768_705
    assert critic.receptive_field == 70
    assert critic(torch.randn(1, 6, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("n_layers,field", [(1, 16), (2, 34), (3, 70), (4, 142), (5, 286)])
def test_patchgan_receptive_fields(n_layers, field):
    assert small(patchgan, n_layers=n_layers).receptive_field == field


@pytest.mark.parametrize("n_layers", [1, 2])
def test_receptive_field_is_what_one_score_depends_on(n_layers):
    torch.manual_seed(0)
    critic = small(patchgan, n_layers=n_layers, norm=none).double()
    x = torch.randn(1, 6, 96, 96, dtype=torch.double, requires_grad=True)
    scores = critic(x)
    scores[0, 0, scores.shape[2] // 2, scores.shape[3] // 2].backward()
    rows = x.grad.abs().sum((0, 1, 3)).nonzero()
    assert (rows.max() - rows.min() + 1).item() == critic.receptive_field


def test_pixelgan():
    critic = small(pixelgan, in_channels=2)
    assert critic.receptive_field == 1
    assert critic(torch.randn(3, 2, 7, 9)).shape == (3, 1, 7, 9)


def test_reduce_mean_averages_the_patches():
    torch.manual_seed(0)
    critic = small(patchgan, n_layers=2).eval()
    x = torch.randn(2, 6, 64, 48)
    patches = critic(x)
    critic.reduce = "mean"
    torch.testing.assert_close(critic(x), patches.mean((2, 3), keepdim=True))
    assert small(pixelgan, reduce="mean")(x).shape == (2, 1, 1, 1)


def test_multiscale_patchgan():
    critic = small(multiscale_patchgan, scales=3)
    # PatchGAN maps of 128, 64 and 32 pixel inputs: 14x14, 6x6 and 2x2, side by side.
    assert critic(torch.randn(2, 6, 128, 128)).shape == (2, 1, 1, 196 + 36 + 4)
    # 70 pixels at quarter size, through two 3x3 stride-2 poolings: (70 - 1) * 2 + 3 = 141, then 283.
    assert critic.receptive_field == 283
    assert small(multiscale_patchgan, scales=2).receptive_field == 141
    assert small(multiscale_patchgan, scales=1).receptive_field == 70
    assert small(multiscale_patchgan, reduce="mean")(torch.randn(2, 6, 128, 96)).shape == (2, 1, 1, 3)


@pytest.mark.parametrize("build", [
    lambda: small(patchgan),
    lambda: small(patchgan, norm=spectral, n_layers=2),
    lambda: small(pixelgan, norm=instance),
    lambda: small(multiscale_patchgan, scales=2, n_layers=2),
], ids=["patchgan", "patchgan-spectral", "pixelgan-instance", "multiscale"])
def test_gradients_reach_every_parameter(build):
    torch.manual_seed(0)
    critic = build()
    critic(torch.randn(2, 6, 64, 64)).sum().backward()
    for name, parameter in critic.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_spectral_norm_wraps_every_convolution():
    critic = small(patchgan, norm=spectral)
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(conv, "parametrizations") for conv in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in critic.modules())


@pytest.mark.parametrize("factory", [patchgan, multiscale_patchgan])
def test_shapes_on_the_meta_device(factory):
    # `cgan check` measures output shapes on the meta device, without computing anything.
    critic = factory(6, norm=batch, activation=leaky_relu).to("meta")
    expected = (1, 1, 30, 30) if factory is patchgan else (1, 1, 1, 900 + 196 + 36)
    assert critic(torch.empty(1, 6, 256, 256, device="meta")).shape == expected
