"""The built-in losses on hand-computed cases, and a gradient penalty that really penalizes."""

import inspect
import math
import typing

import pytest
import torch
from torch import nn

from cgan_kit import AdversarialLoss, ReconstructionLoss
from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.params import params_of, parse_docstring
from cgan_pix2pix.activations import leaky_relu
from cgan_pix2pix.critics import multiscale_patchgan, patchgan
from cgan_pix2pix.losses import bce, focal_frequency, hinge, l1, lsgan, wgan_gp
from cgan_pix2pix.norms import instance

ADVERSARIAL = {"bce": bce, "lsgan": lsgan, "hinge": hinge, "wgan_gp": wgan_gp}
RECONSTRUCTION = {"l1": l1, "focal_frequency": focal_frequency}


def scores(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(len(values), 1, 1, 1)


def test_registered_and_documented():
    registry = plugins.registry()
    assert {*ADVERSARIAL, *RECONSTRUCTION} <= set(registry.names("loss"))
    for name in (*ADVERSARIAL, *RECONSTRUCTION):
        factory = registry.get("loss", name).factory
        typing.get_type_hints(factory, include_extras=True)  # every annotation resolves
        assert parse_docstring(factory.__doc__)[0], name
        for param in params_of(factory):
            assert param.annotation is not inspect.Parameter.empty, (name, param.name)
            assert not param.required and param.doc, (name, param.name)
    assert all(isinstance(factory(), AdversarialLoss) for factory in ADVERSARIAL.values())
    assert all(isinstance(factory(), ReconstructionLoss) for factory in RECONSTRUCTION.values())


def test_bce():
    loss = bce()
    zero = scores(0.0, 0.0)
    ones, zeros = torch.ones_like(zero), torch.zeros_like(zero)
    assert loss.critic_loss(zero, zero, ones, zeros).item() == pytest.approx(math.log(2))
    assert loss.generator_loss(zero).item() == pytest.approx(math.log(2))
    real, fake = scores(2.0), scores(-1.0)
    one, zero = torch.ones_like(real), torch.zeros_like(real)
    # Half the sum of -log(sigmoid(2)) and -log(1 - sigmoid(-1)).
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))
    assert loss.critic_loss(real, fake, one, zero).item() == pytest.approx(expected)
    # Smoothed targets are honoured: -(0.9 log sigmoid(2) + 0.1 log(1 - sigmoid(2))) for the real term.
    sigmoid = 1 / (1 + math.exp(-2))
    smoothed = 0.5 * (-(0.9 * math.log(sigmoid) + 0.1 * math.log(1 - sigmoid)) + math.log(1 + math.exp(-1)))
    assert loss.critic_loss(real, fake, one * 0.9, zero).item() == pytest.approx(smoothed)
    assert loss.generator_loss(fake).item() == pytest.approx(math.log(1 + math.e))
    assert loss.penalty(nn.Identity(), real, fake) is None


def test_lsgan():
    loss = lsgan()
    real, fake = scores(0.5, 1.0), scores(0.5, -1.0)
    ones, zeros = torch.ones_like(real), torch.zeros_like(real)
    # real: ((0.5 - 1)^2 + 0) / 2 = 0.125; fake: (0.25 + 1) / 2 = 0.625; halved sum 0.375.
    assert loss.critic_loss(real, fake, ones, zeros).item() == pytest.approx(0.375)
    # With a 0.9 real target: ((0.5 - 0.9)^2 + (1 - 0.9)^2) / 2 = 0.085 for the real term.
    assert loss.critic_loss(real, fake, ones * 0.9, zeros).item() == pytest.approx(0.5 * (0.085 + 0.625))
    assert loss.generator_loss(fake).item() == pytest.approx((0.25 + 4) / 2)


def test_hinge_ignores_targets():
    loss = hinge()
    real, fake = scores(2.0, 0.5), scores(-2.0, 0.0)
    ones, zeros = torch.ones_like(real), torch.zeros_like(real)
    # mean(relu(1 - [2, 0.5])) = 0.25; mean(relu(1 + [-2, 0])) = 0.5.
    assert loss.critic_loss(real, fake, ones, zeros).item() == pytest.approx(0.75)
    assert loss.critic_loss(real, fake, zeros, ones).item() == pytest.approx(0.75)
    assert loss.generator_loss(fake).item() == pytest.approx(1.0)
    assert not loss.uses_targets and not wgan_gp().uses_targets  # label smoothing is idle beside them
    assert bce().uses_targets and lsgan().uses_targets


def test_wgan_ignores_targets():
    loss = wgan_gp()
    real, fake = scores(2.0, 1.0), scores(-1.0, 0.0)
    ones, zeros = torch.ones_like(real), torch.zeros_like(real)
    assert loss.critic_loss(real, fake, ones, zeros).item() == pytest.approx(-0.5 - 1.5)
    assert loss.critic_loss(real, fake, ones * 0.9, ones).item() == pytest.approx(-2.0)
    assert loss.generator_loss(fake).item() == pytest.approx(0.5)


def test_l1():
    output = torch.tensor([[0.5, -1.0], [0.0, 1.0]])
    target = torch.tensor([[0.0, 1.0], [0.0, 0.5]])
    assert l1()(output, target).item() == pytest.approx((0.5 + 2 + 0 + 0.5) / 4)


def wave(height: int, width: int, fy: int, fx: int) -> torch.Tensor:
    """cos(2 pi (fy y / H + fx x / W)): one real frequency, at (fy, fx) and its mirror (-fy, -fx)."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cos(2 * math.pi * (fy * y / height + fx * x / width))


def test_focal_frequency_weighs_each_frequency_by_its_error():
    target = torch.rand(1, 1, 8, 8)
    # The error: amplitude 0.5 at frequency (0, 1) and 0.1 at (2, 3). With the orthonormal transform
    # a wave of amplitude a over N = 64 pixels puts a^2 N / 4 on each of its two mirrored frequencies.
    error = 0.5 * wave(8, 8, 0, 1) + 0.1 * wave(8, 8, 2, 3)
    output = target + error
    big, small = 0.5**2 * 64 / 4, 0.1**2 * 64 / 4
    # alpha 0: every frequency weighs 1, so the loss is the mean squared pixel error (Parseval).
    assert focal_frequency(alpha=0)(output, target).item() == pytest.approx((error**2).mean().item(), rel=1e-5)
    # alpha 1: the worst frequency weighs 1, the other sqrt(small / big) = 0.2.
    expected = (2 * big + 2 * 0.2 * small) / 64
    assert focal_frequency(alpha=1)(output, target).item() == pytest.approx(expected, rel=1e-5)
    assert focal_frequency(alpha=2)(output, target).item() == pytest.approx((2 * big + 2 * 0.04 * small) / 64,
                                                                           rel=1e-5)
    assert focal_frequency()(target, target).item() == 0  # no error, no loss (and no division by zero)


def test_focal_frequency_weights_are_constants_and_per_image():
    target = torch.zeros(2, 3, 8, 8)
    output = (0.3 * wave(8, 8, 1, 2)).expand(2, 3, 8, 8).clone()
    output[1] *= 2  # the second image errs twice as much: its weights are still relative to its own worst
    output.requires_grad_(True)
    loss = focal_frequency(alpha=1)(output, target)
    # One frequency per image and channel, each its own worst (weight 1): the mean squared error.
    assert loss.item() == pytest.approx((output**2).mean().item(), rel=1e-5)
    loss.backward()
    # With constant weights of 1 the gradient is MSE's, 2 x / numel; were the weights differentiated
    # (distance^1.5) it would be larger.
    torch.testing.assert_close(output.grad, 2 * output.detach() / output.numel())


def test_focal_frequency_matches_the_definition_on_a_non_square_batch():
    # The definition written out with an explicit DFT matrix, per image and channel: each channel's
    # weights are relative to its own worst frequency, and the transform runs over height and width.
    torch.manual_seed(0)
    output, target = torch.randn(2, 3, 6, 10, dtype=torch.float64), torch.randn(2, 3, 6, 10, dtype=torch.float64)
    output[1, 2] *= 5  # one channel far worse than the others: a shared maximum would shrink theirs

    def dft(n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=torch.float64)
        return torch.exp(-2j * math.pi * k[:, None] * k[None, :] / n) / math.sqrt(n)

    for alpha in (0.5, 1.0, 3.0):
        expected = 0.0
        for b in range(2):
            for c in range(3):
                spectrum = dft(6) @ (output[b, c] - target[b, c]).to(torch.complex128) @ dft(10).T
                distance = spectrum.abs() ** 2
                weight = (spectrum.abs() / spectrum.abs().max()) ** alpha
                expected += (weight * distance).sum().item()
        expected /= output.numel()
        assert focal_frequency(alpha=alpha)(output, target).item() == pytest.approx(expected, rel=1e-4)


def test_focal_frequency_keeps_its_weights_on_tiny_errors_at_a_large_alpha():
    target = torch.zeros(1, 1, 8, 8)
    output = 1e-4 * (wave(8, 8, 0, 1) + 0.5 * wave(8, 8, 1, 1))[None, None]
    big, small = 1e-8 * 64 / 4, 0.25e-8 * 64 / 4
    # The worst frequency weighs 1 however small the error; the other (0.5)^alpha.
    expected = (2 * big + 2 * 0.5**10 * small) / 64
    assert focal_frequency(alpha=10)(output, target).item() == pytest.approx(expected, rel=1e-3)


def test_focal_frequency_under_bf16():
    target = torch.rand(1, 3, 16, 16)
    output = target + 0.1 * wave(16, 16, 3, 1)
    exact = focal_frequency()(output, target)
    half = focal_frequency()(output.bfloat16(), target.bfloat16())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(exact.item(), rel=0.05)


def linear_critic() -> nn.Conv2d:
    critic = nn.Conv2d(6, 1, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([3.0, 4.0, 0, 0, 0, 0]).view(1, 6, 1, 1))
        critic.bias.fill_(0.7)
    return critic


def test_gradient_penalty_of_a_linear_critic():
    critic = linear_critic()
    real, fake = torch.randn(3, 6, 2, 2), torch.randn(3, 6, 2, 2)
    penalty = wgan_gp(gp_weight=10.0).penalty(critic, real, fake)
    # An image's score is the mean of its 4 patch scores w.x + b: its gradient is w / 4 at each of the
    # 4 pixels, of norm |w| / 2 = 2.5 wherever the critic looks; 10 * (2.5 - 1)^2 = 22.5.
    assert penalty.item() == pytest.approx(22.5)
    penalty.backward()
    # d/dw of 10 * (|w| / 2 - 1)^2 = 10 * 2 * 1.5 * w / (2 |w|) = 3 w.
    torch.testing.assert_close(critic.weight.grad.flatten(), torch.tensor([9.0, 12.0, 0, 0, 0, 0]))
    assert critic.bias.grad is None  # a constant shift does not change the gradient
    assert wgan_gp(gp_weight=0.0).penalty(critic, real, fake).item() == 0


def test_gradient_penalty_is_taken_between_the_pairs():
    # Score sum(c * x^2) / 4: its gradient 2 c x / 4 depends on where it is evaluated. With real equal
    # to fake, every interpolate is that pair, whatever the random mixing.
    class Quadratic(nn.Module):
        def forward(self, x):
            return (0.5 * x**2).sum(1, keepdim=True)

    pair = torch.randn(2, 6, 2, 2)
    penalty = wgan_gp(gp_weight=1.0).penalty(Quadratic(), pair, pair.clone())
    norms = (0.5 * pair / 4 * 2).flatten(1).norm(dim=1)
    assert penalty.item() == pytest.approx(((norms - 1) ** 2).mean().item(), rel=1e-5)


def test_gradient_penalty_changes_the_critics_gradients():
    torch.manual_seed(0)
    critic = patchgan(6, n_layers=2, ndf=4, norm=instance, activation=leaky_relu)
    real, fake = torch.randn(2, 6, 32, 32), torch.randn(2, 6, 32, 32)
    loss = wgan_gp()

    def gradients(with_penalty: bool) -> list[torch.Tensor]:
        critic.zero_grad()
        total = loss.critic_loss(critic(real), critic(fake), torch.ones(1), torch.zeros(1))
        if with_penalty:
            penalty = loss.penalty(critic, real, fake)
            assert penalty.item() > 0
            total = total + penalty
        total.backward()
        # Biases are left out: instance norm cancels most, and the last cannot change a gradient.
        return [p.grad.clone() for p in critic.parameters() if p.dim() > 1]

    for without, with_ in zip(gradients(False), gradients(True)):
        assert not torch.allclose(without, with_)


def test_gradient_penalty_on_a_multiscale_critic():
    critic = multiscale_patchgan(6, scales=2, n_layers=1, ndf=4, norm=instance, activation=leaky_relu)
    penalty = wgan_gp().penalty(critic, torch.randn(2, 6, 32, 32), torch.randn(2, 6, 32, 32))
    assert penalty.shape == () and penalty.item() > 0
    penalty.backward()
    weights = [p for p in critic.parameters() if p.dim() > 1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
