"""The built-in stabilizers, reached through the registry as a recipe reaches them."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from cgan_kit import Networks
from cgan_kit.plugin_api import plugins
from cgan_kit.plugin_api.params import check_value


def make(name, **params):
    return plugins.registry().get("stabilizer", name).factory(**params)


def tiny_nets():
    generator = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.ConvTranspose2d(4, 3, 3, padding=1))
    critic = nn.Sequential(nn.Conv2d(6, 4, 4, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
    return generator, critic


def networks(generator, critic):
    return Networks({"generator": generator, "critic": critic}, {"generator": "generator", "critic": "critic"})


def labels(n=64):
    return torch.ones(n, 1, 4, 4), torch.zeros(n, 1, 4, 4)


def test_all_six_are_registered_with_documented_parameters():
    registry = plugins.registry()
    names = set(registry.names("stabilizer"))
    assert {"label_smoothing", "label_flipping", "instance_noise", "history_buffer", "ema",
            "spectral_norm"} <= names
    for name in names:
        entry = registry.get("stabilizer", name)
        assert entry.summary
        assert all(param.doc for param in entry.params), name


def test_label_smoothing_softens_only_the_real_target_by_default():
    real, fake = make("label_smoothing").targets(*labels(), step=1, role="critic")
    assert torch.all(real == 0.9) and torch.all(fake == 0)
    real, fake = make("label_smoothing", real=[0.7, 1.0], fake=0.1).targets(*labels(), step=1, role="critic")
    assert real.min() >= 0.7 and real.max() <= 1.0 and real.std() > 0  # drawn per patch
    assert torch.allclose(fake, torch.full_like(fake, 0.1))


def test_label_smoothing_range_is_checked():
    real = plugins.registry().get("stabilizer", "label_smoothing").param("real")
    assert check_value([0.8, 1.0], real.annotation)[1] is None
    assert "must be" in check_value(-0.5, real.annotation)[1]
    assert check_value([0.8, 1.2], real.annotation)[1] is None  # above 1 is allowed, as often used
    assert "must be" in check_value([-0.1, 1.0], real.annotation)[1]
    assert check_value("high", real.annotation)[1]


def test_label_flipping_swaps_whole_images_at_the_given_rate_and_decays():
    torch.manual_seed(0)
    stabilizer = make("label_flipping", probability=0.25, decay="linear")
    stabilizer.setup(networks(*tiny_nets()), total_steps=100)
    real, fake = stabilizer.targets(*labels(4000), step=0, role="critic")
    flipped = real.flatten(1).mean(1) == 0
    assert torch.all(real.flatten(1).std(1) == 0)  # per image, not per patch
    assert torch.all(fake[flipped] == 1) and torch.all(fake[~flipped] == 0)
    assert 0.22 < flipped.float().mean().item() < 0.28
    real, _ = stabilizer.targets(*labels(4000), step=100, role="critic")  # fully decayed
    assert torch.all(real == 1)


def test_instance_noise_has_the_stated_sigma_and_fades_linearly():
    torch.manual_seed(0)
    stabilizer = make("instance_noise", sigma=0.2)
    stabilizer.setup(networks(*tiny_nets()), total_steps=1000)
    real = torch.zeros(8, 6, 32, 32)
    noisy_real, noisy_fake = stabilizer.critic_inputs(real, real.clone(), step=0, role="critic")
    assert noisy_real.std().item() == pytest.approx(0.2, rel=0.05)
    assert not torch.equal(noisy_real, noisy_fake)  # independent draws
    halfway, _ = stabilizer.critic_inputs(real, real, step=500, role="critic")
    assert halfway.std().item() == pytest.approx(0.1, rel=0.05)
    end, _ = stabilizer.critic_inputs(real, real, step=1000, role="critic")
    assert torch.equal(end, real)


def test_history_buffer_fills_then_mixes_old_fakes_and_round_trips():
    torch.manual_seed(0)
    stabilizer = make("history_buffer", size=4, probability=0.5)
    stabilizer.setup(networks(*tiny_nets()), 10)
    real = torch.zeros(2, 6, 8, 8)
    first, second = torch.full((2, 6, 8, 8), 1.0), torch.full((2, 6, 8, 8), 2.0)
    assert torch.equal(stabilizer.critic_inputs(real, first, 1, "critic")[1], first)  # filling: shown as is
    assert torch.equal(stabilizer.critic_inputs(real, second, 2, "critic")[1], second)
    seen = torch.cat([stabilizer.critic_inputs(real, torch.full((2, 6, 8, 8), 3.0 + i), 3 + i, "critic")[1]
                      for i in range(50)])
    values = seen.flatten(1)[:, 0]
    fresh = values == torch.arange(50).repeat_interleave(2) + 3.0
    assert 0.3 < 1 - fresh.float().mean().item() < 0.7  # about half are old fakes
    assert (values < 3).any()  # the very first fakes came back at some point

    state = stabilizer.state_dict()
    assert state["critic.pool"].shape == (4, 6, 8, 8)  # a pool per critic role
    restored = make("history_buffer", size=4, probability=0.5)
    restored.setup(networks(*tiny_nets()), 10)
    restored.load_state_dict(state)
    torch.manual_seed(1)
    a = stabilizer.critic_inputs(real, torch.full((2, 6, 8, 8), 99.0), 60, "critic")[1]
    torch.manual_seed(1)
    b = restored.critic_inputs(real, torch.full((2, 6, 8, 8), 99.0), 60, "critic")[1]
    assert torch.equal(a, b)


def test_history_buffer_of_size_zero_is_off():
    fake = torch.randn(2, 6, 8, 8)
    assert make("history_buffer", size=0).critic_inputs(fake, fake, 1, "critic")[1] is fake


def test_ema_averages_weights_copies_buffers_and_round_trips():
    generator, critic = tiny_nets()
    stabilizer = make("ema", decay=0.9, start_step=1)
    stabilizer.setup(networks(generator, critic), total_steps=10)
    start = generator[0].weight.detach().clone()
    stabilizer.after_generator_step(generator, step=1, role="generator")  # before start_step: follows the weights
    with torch.no_grad():
        generator[0].weight.add_(1.0)
        generator[1].running_mean.fill_(5.0)
    stabilizer.after_generator_step(generator, step=2, role="generator")
    average = stabilizer.eval_generator("generator")
    assert torch.allclose(average[0].weight, start + 0.1)
    assert torch.all(average[1].running_mean == 5.0)
    assert not average.training and not any(p.requires_grad for p in average.parameters())

    # k more steps against the formula: average_k = d^k * average_0 + (1 - d^k) * w for constant w
    weights = generator[0].weight.detach().clone()
    for step in range(3, 3 + 5):
        stabilizer.after_generator_step(generator, step, "generator")
    expected = 0.9**5 * (start + 0.1) + (1 - 0.9**5) * weights
    assert torch.allclose(average[0].weight, expected, atol=1e-6)

    restored = make("ema", decay=0.9, start_step=1)
    restored.setup(networks(*tiny_nets()), total_steps=10)
    restored.load_state_dict(stabilizer.state_dict())
    assert torch.equal(restored.eval_generator("generator")[0].weight, average[0].weight)


def test_ema_copies_the_generator_after_spectral_norm_changed_it():
    generator, critic = tiny_nets()
    average, normalize = make("ema"), make("spectral_norm", target="generator")
    for stabilizer in (average, normalize):  # the recipe's order: ema listed first
        stabilizer.setup(networks(generator, critic), 10)
    average.after_generator_step(generator, 1, "generator")
    assert parametrize.is_parametrized(average.eval_generator("generator")[0], "weight")


def test_spectral_norm_bounds_the_critic_and_leaves_the_generator():
    generator, critic = tiny_nets()
    make("spectral_norm").setup(networks(generator, critic), 10)
    assert parametrize.is_parametrized(critic[0], "weight") and parametrize.is_parametrized(critic[2], "weight")
    assert not parametrize.is_parametrized(generator[0], "weight")
    critic.train()
    for _ in range(30):  # power iterations converge during training forward passes
        critic(torch.randn(1, 6, 16, 16))
    sigma = torch.linalg.matrix_norm(critic[0].weight.flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.05)
    make("spectral_norm", target="both").setup(networks(generator, critic), 10)  # applying twice is harmless
    assert parametrize.is_parametrized(generator[3], "weight")
    assert len(critic[0].parametrizations.weight) == 1


def test_a_method_with_two_critics_gets_a_pool_each_and_two_generators_an_average_each():
    generator_a, critic_a = tiny_nets()
    generator_b, critic_b = tiny_nets()
    four = Networks({"g_ab": generator_a, "g_ba": generator_b, "d_a": critic_a, "d_b": critic_b},
                    {"g_ab": "generator", "g_ba": "generator", "d_a": "critic", "d_b": "critic"})
    pool, average = make("history_buffer", size=2), make("ema", decay=0.5)
    pool.setup(four, 10)
    average.setup(four, 10)
    real = torch.zeros(1, 6, 8, 8)
    pool.critic_inputs(real, torch.full((1, 6, 8, 8), 1.0), 1, "d_a")
    pool.critic_inputs(real, torch.full((1, 6, 8, 8), 2.0), 1, "d_b")
    state = pool.state_dict()
    assert sorted(state) == ["d_a.pool", "d_b.pool"]
    assert state["d_a.pool"].unique().tolist() == [1.0] and state["d_b.pool"].unique().tolist() == [2.0]
    average.after_generator_step(generator_a, 1, "g_ab")
    assert average.eval_generator("g_ab") is not average.eval_generator("g_ba")
    assert average.eval_generator("d_a") is None
    assert {key.split(".")[0] for key in average.state_dict()} == {"g_ab", "g_ba"}
    normalize = make("spectral_norm", target="critic")
    normalize.setup(four, 10)
    assert parametrize.is_parametrized(critic_a[0], "weight") and parametrize.is_parametrized(critic_b[0], "weight")
    assert not parametrize.is_parametrized(generator_b[0], "weight")


def test_diffaugment_moves_a_pair_as_one_and_lets_gradients_through():
    torch.manual_seed(0)
    half = torch.randn(8, 3, 16, 16)
    pair = torch.cat([half, half], 1).requires_grad_(True)
    out = make("diffaugment").augment(pair, 1, "critic")
    assert out.shape == pair.shape
    assert torch.equal(out[:, :3], out[:, 3:])  # the same transform for the input and output halves
    out.sum().backward()
    assert pair.grad is not None and pair.grad.abs().sum() > 0
    # A fresh draw at every call: real and generated batches are not transformed alike.
    again = make("diffaugment").augment(pair.detach(), 1, "critic")
    assert not torch.equal(out.detach(), again)


def test_diffaugment_translation_is_a_whole_pixel_shift_with_zero_fill():
    torch.manual_seed(1)
    images = torch.arange(1, 1 + 4 * 2 * 16 * 16, dtype=torch.float32).view(4, 2, 16, 16)
    out = make("diffaugment", policy=["translation"], translation=0.25).augment(images, 1, "critic")
    shifts = set()
    for image, moved in zip(images, out):
        padded = torch.nn.functional.pad(image, (4, 4, 4, 4))  # zeros around: what shifts in
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(padded[:, 4 - dy:20 - dy, 4 - dx:20 - dx], moved)]
        assert len(found) == 1, found  # exactly one shift within the reach explains the output
        shifts.add(found[0])
    assert len(shifts) > 1  # each image its own draw
    assert torch.equal(make("diffaugment", policy=["translation"], translation=0.0).augment(images, 1, "c"), images)


def test_diffaugment_cutout_zeroes_one_rectangle_of_the_stated_size():
    torch.manual_seed(2)
    images = torch.ones(64, 3, 16, 16)
    out = make("diffaugment", policy=["cutout"], cutout=0.5).augment(images, 1, "critic")
    zeroed = (out == 0).all(dim=1)  # every channel cut at the same pixels
    assert torch.equal((out == 0).any(dim=1), zeroed)
    for mask in zeroed:
        rows, columns = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        assert 1 <= len(rows) <= 8 and 1 <= len(columns) <= 8
        assert mask.sum() == len(rows) * len(columns)  # one solid rectangle, cut at most by the border
    assert zeroed.sum(dim=(1, 2)).float().mean() > 40  # mostly whole 8x8 squares


def test_diffaugment_color_changes_values_per_image_and_checks_its_policy():
    torch.manual_seed(3)
    images = torch.rand(16, 6, 8, 8) * 2 - 1
    out = make("diffaugment", policy=["color"]).augment(images, 1, "critic")
    assert out.shape == images.shape and not torch.allclose(out, images)
    policy = plugins.registry().get("stabilizer", "diffaugment").param("policy")
    assert check_value(["translation", "cutout"], policy.annotation)[1] is None
    assert "did you mean" in check_value(["cutuot"], policy.annotation)[1]
