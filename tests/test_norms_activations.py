"""The built-in norms and activations: their contract, their values, and their documentation."""

import inspect
import typing

import pytest
import torch
from torch import nn

from cgan_kit import Norm
from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.params import params_of, parse_docstring
from cgan_pix2pix import activations, norms

NORMS = {"batch": False, "syncbatch": False, "instance": True, "none": True, "spectral": True}
ACTIVATIONS = ["relu", "leaky_relu", "mish", "silu", "gelu"]


@pytest.mark.parametrize("kind,names", [("norm", list(NORMS)), ("activation", ACTIVATIONS)])
def test_registered_and_documented(kind, names):
    registry = plugins.registry()
    assert set(names) <= set(registry.names(kind))
    for name in names:
        factory = registry.get(kind, name).factory
        typing.get_type_hints(factory, include_extras=True)  # every annotation resolves
        assert parse_docstring(factory.__doc__)[0], name
        for param in params_of(factory):
            assert param.annotation is not inspect.Parameter.empty, (name, param.name)
            assert not param.required and param.doc, (name, param.name)
            assert param.check(param.default)[1] is None, (name, param.name)


@pytest.mark.parametrize("name,conv_bias", NORMS.items())
def test_conv_bias(name, conv_bias):
    norm = getattr(norms, name)()
    assert isinstance(norm, Norm)
    assert norm.conv_bias is conv_bias


def test_layers():
    assert isinstance(norms.batch().layer(4), nn.BatchNorm2d)
    assert isinstance(norms.syncbatch().layer(4), nn.SyncBatchNorm)
    instance = norms.instance().layer(4)
    assert isinstance(instance, nn.InstanceNorm2d)
    assert not instance.affine and not instance.track_running_stats
    assert isinstance(norms.none().layer(4), nn.Identity)
    assert isinstance(norms.spectral().layer(4), nn.Identity)
    # With its own shift, instance norm makes the convolution's bias redundant.
    affine = norms.instance(affine=True)
    assert affine.layer(4).affine and affine.conv_bias is False


def test_layers_are_fresh():
    norm = norms.batch()
    assert norm.layer(4) is not norm.layer(4)


@pytest.mark.parametrize("name", [n for n in NORMS if n != "spectral"])
def test_wrap_leaves_conv_alone(name):
    conv = nn.Conv2d(3, 4, 3)
    assert getattr(norms, name)().wrap(conv) is conv


@pytest.mark.parametrize("conv", [nn.Conv2d(6, 16, 4), nn.ConvTranspose2d(16, 6, 4)])
def test_spectral_norm_bounds_the_top_singular_value(conv):
    torch.manual_seed(0)
    nn.init.normal_(conv.weight, 0, 1.0)  # far from 1 before wrapping
    wrapped = norms.spectral().wrap(conv)
    wrapped.train()
    x = torch.randn(2, wrapped.in_channels, 8, 8)
    for _ in range(5):
        wrapped(x)
    weight = wrapped.weight.detach()
    if isinstance(conv, nn.ConvTranspose2d):  # its output channels are dimension 1
        weight = weight.transpose(0, 1)
    sigma = torch.linalg.matrix_norm(weight.flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.02)


def test_syncbatch_runs_without_distributed():
    layer = norms.syncbatch().layer(3)
    out = layer(torch.randn(4, 3, 5, 5))
    assert out.mean().abs() < 1e-5


def test_activation_values():
    x = torch.tensor([-2.0, -0.5, 0.0, 1.5])
    torch.testing.assert_close(activations.relu()(x), torch.tensor([0.0, 0.0, 0.0, 1.5]))
    torch.testing.assert_close(activations.leaky_relu()(x), torch.tensor([-0.4, -0.1, 0.0, 1.5]))
    torch.testing.assert_close(activations.leaky_relu(slope=0.5)(x), torch.tensor([-1.0, -0.25, 0.0, 1.5]))
    torch.testing.assert_close(activations.mish()(x), x * torch.tanh(nn.functional.softplus(x)))
    torch.testing.assert_close(activations.silu()(x), x * torch.sigmoid(x))
    torch.testing.assert_close(activations.gelu()(x), x * 0.5 * (1 + torch.erf(x / 2**0.5)))
    tanh = activations.gelu(approximate="tanh")(x)
    torch.testing.assert_close(tanh, activations.gelu()(x), atol=1e-3, rtol=0)
    assert not torch.equal(tanh, activations.gelu()(x))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_are_fresh_and_not_in_place(name):
    factory = getattr(activations, name)
    assert factory() is not factory()
    x = torch.tensor([-1.0, 2.0])
    factory()(x)
    assert torch.equal(x, torch.tensor([-1.0, 2.0]))
