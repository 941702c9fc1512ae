"""`cgan convert-reference`: weights saved by the reference pix2pix (junyanz/pytorch-CycleGAN-and-pix2pix)
become a run whose networks compute exactly what the reference's did.

The reference networks are rebuilt here, small, from the reference's layout rules (its module nesting
is what gives its state dicts their key names); the proof is equal outputs in eval mode.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from torch import nn

from cgan_kit.runs import checkpoint, state, validation
from cgan_kit.plugin_api import plugins
from cgan_kit.config.build import build_models
from cgan_kit.errors import CganError
from cgan_kit.config.recipe import load
from cgan_pix2pix import reference
from cgan_pix2pix.activations import leaky_relu, relu
from cgan_pix2pix.critics import patchgan
from cgan_pix2pix.generators import resnet, unet
from cgan_pix2pix.norms import batch, instance
from conftest import TINY_RECIPE, cgan

# The reference caps U-Net widths at 8 * ngf, ours at max_channels (512, which is 8 * 64).
FIT = ["--set", "generator.max_channels=32"]


# ---------------------------------------------------------------------------------------------
# The reference's networks, by its layout rules (each level of its U-Net keeps its layers, and the
# next level down, in a Sequential named `model`; everything else is one flat Sequential)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


class RefLevel(nn.Module):
    def __init__(self, outer: int, inner: int, inputs: int, below: nn.Module | None, outermost: bool,
                 norm: str, dropout: bool):
        super().__init__()
        self.outermost = outermost
        bias = norm == "instance"
        down = nn.Conv2d(inputs, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            layers = [down, below, nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh()]
        elif below is None:  # innermost
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias), _norm(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, _norm(norm, inner), below, nn.ReLU(True),
                      nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=bias), _norm(norm, outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        # The in-place leaky ReLU of the level below changes x before it is joined, as in the reference.
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class RefUnet(nn.Module):
    def __init__(self, depth: int, ngf: int, norm: str = "batch", channels: tuple[int, int] = (3, 3)):
        super().__init__()
        widths = [ngf * min(2**level, 8) for level in range(depth)]
        level_ = None
        for level in reversed(range(depth)):
            outer = channels[1] if level == 0 else widths[level - 1]
            inputs = channels[0] if level == 0 else outer
            dropout = 4 <= level < depth - 1  # its levels of 8 * ngf between the innermost and ngf * 4
            level_ = RefLevel(outer, widths[level], inputs, level_, level == 0, norm, dropout)
        self.model = level_

    def forward(self, x):
        return self.model(x)


class RefResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, dropout: bool):
        super().__init__()
        bias = norm == "instance"
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim), nn.ReLU(True)]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnet(nn.Module):
    def __init__(self, blocks: int, ngf: int, norm: str = "instance", dropout: bool = False):
        super().__init__()
        bias = norm == "instance"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=bias), _norm(norm, ngf), nn.ReLU(True)]
        for i in range(2):
            layers += [nn.Conv2d(ngf * 2**i, ngf * 2**(i + 1), 3, 2, 1, bias=bias), _norm(norm, ngf * 2**(i + 1)),
                       nn.ReLU(True)]
        layers += [RefResnetBlock(ngf * 4, norm, dropout) for _ in range(blocks)]
        for i in (2, 1):
            layers += [nn.ConvTranspose2d(ngf * 2**i, ngf * 2**(i - 1), 3, 2, 1, output_padding=1, bias=bias),
                       _norm(norm, ngf * 2**(i - 1)), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class RefPatchGAN(nn.Module):
    def __init__(self, inputs: int, ndf: int, n_layers: int, norm: str = "batch"):
        super().__init__()
        bias = norm == "instance"
        widths = [ndf * min(2**n, 8) for n in range(n_layers + 1)]
        layers = [nn.Conv2d(inputs, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for n in range(1, n_layers + 1):
            layers += [nn.Conv2d(widths[n - 1], widths[n], 4, 2 if n < n_layers else 1, 1, bias=bias),
                       _norm(norm, widths[n]), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def trained(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics far from their initial values, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(1234)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return net.eval()


def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    return path


def built(run: Path):
    """The run's networks with the weights of its (only) checkpoint, in eval mode."""
    path = checkpoint.step_path(run / "checkpoints", 0)
    tensors, meta = checkpoint.load(path)
    models = build_models(load(run / "recipe.toml"), plugins.registry())
    validation.check_tensors(path, tensors, models)
    state.load_networks(models, tensors, meta, path)
    return models.networks["generator"].eval(), models.networks["critic"].eval(), meta


def failure(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The command, end to end


def test_a_reference_unet_becomes_a_run_computing_the_same_images(tmp_path):
    ref = trained(RefUnet(depth=5, ngf=4))
    weights = tmp_path / "latest_net_G.pth"
    torch.save(ref.state_dict(), weights, _use_new_zipfile_serialization=False)  # as 2018 PyTorch saved
    run = tmp_path / "converted"
    result = cgan("convert-reference", str(tiny_recipe(tmp_path)), str(weights), *FIT, "--out", str(run),
                  check=True)
    assert result.stdout.count("\n") == 1 and f"cgan run --resume {run}" in result.stdout

    generator, critic, meta = built(run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(generator(x), ref(x), rtol=1e-5, atol=1e-6)
    assert meta["step"] == 0 and meta["optimizer_groups"] == {}
    assert meta["converted_from"]["generator"] == str(weights.resolve()) and "critic" not in meta["converted_from"]
    assert "max_channels = 32" in (run / "recipe.toml").read_text()

    # The run resumes from the converted step 0 (fresh optimizers) and trains on.
    cgan("run", "--resume", str(run), "--until", "1", check=True)
    assert [step for step, _ in checkpoint.saved_steps(run / "checkpoints")] == [0, 1]


def test_a_reference_patchgan_becomes_the_runs_critic(tmp_path):
    generator_ref, critic_ref = trained(RefUnet(depth=5, ngf=4)), trained(RefPatchGAN(6, ndf=4, n_layers=2), 1)
    g_path, d_path = tmp_path / "latest_net_G.pth", tmp_path / "latest_net_D.pth"
    torch.save(generator_ref.state_dict(), g_path)
    # Saved from inside nn.DataParallel, by a PyTorch too old to count batches.
    state = collections.OrderedDict((f"module.{k}", v) for k, v in critic_ref.state_dict().items()
                                    if not k.endswith("num_batches_tracked"))
    torch.save(state, d_path)
    run = tmp_path / "converted"
    cgan("convert-reference", str(tiny_recipe(tmp_path)), str(g_path), "--critic", str(d_path), *FIT,
         "--out", str(run), check=True)
    generator, critic, meta = built(run)
    pair = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(critic(pair), critic_ref(pair), rtol=1e-5, atol=1e-6)
    assert meta["converted_from"]["critic"] == str(d_path.resolve())


def test_a_depth_mismatch_is_one_line_naming_generator_depth(tmp_path):
    weights = tmp_path / "latest_net_G.pth"
    torch.save(RefUnet(depth=5, ngf=4).state_dict(), weights)
    run = tmp_path / "converted"
    result = cgan("convert-reference", str(tiny_recipe(tmp_path)), str(weights), *FIT,
                  "--set", "generator.depth=6", "--out", str(run))
    line = failure(result)
    assert "generator.depth: the weights have 5 levels, the recipe 6" in line
    assert "--set generator.depth=5" in line
    assert not run.exists()


class Payload:
    """Anything that is not plain tensors: unpickling it could run code."""

    def __init__(self):
        self.weights = torch.zeros(3)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    weights = tmp_path / "latest_net_G.pth"
    torch.save(Payload(), weights)
    run = tmp_path / "converted"
    line = failure(cgan("convert-reference", str(tiny_recipe(tmp_path)), str(weights), "--out", str(run)))
    assert "refused" in line and "Payload" in line and "weights_only" in line
    assert not run.exists()


def test_an_existing_run_is_never_overwritten(tmp_path):
    weights = tmp_path / "latest_net_G.pth"
    torch.save(RefUnet(depth=5, ngf=4).state_dict(), weights)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.toml").write_text("# someone's run\n")
    line = failure(cgan("convert-reference", str(tiny_recipe(tmp_path)), str(weights), *FIT,
                        "--out", str(tmp_path / "run")))
    assert "already holds a run" in line
    assert (tmp_path / "run" / "recipe.toml").read_text() == "# someone's run\n"


# ---------------------------------------------------------------------------------------------
# The renaming and the recipe checks, in process


def test_unet_256_names_map_onto_ours_with_every_shape_equal():
    with torch.device("meta"):  # full size, no memory
        ref = RefUnet(depth=8, ngf=64)
        ours = unet(3, 3, depth=8, ngf=64, norm=batch, encoder_activation=leaky_relu, decoder_activation=relu)
    renaming = reference.unet_names(ref.state_dict())
    assert renaming.structure == {"depth": 8}
    assert renaming.names["model.model.1.model.3.model.1.weight"] == "down.2.1.weight"
    assert renaming.names["model.model.3.bias"] == "up.0.1.bias"
    fitted = reference.fit(ours.state_dict(), reference.rename(ref.state_dict(), renaming), renaming, "generator",
                           Path("G.pth"))
    assert len(fitted) == len(ours.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 54_413_955


def test_a_reference_resnet_with_instance_norm_statistics_and_dropout_computes_the_same():
    ref = trained(RefResnet(blocks=3, ngf=4, norm="instance", dropout=True))
    state = ref.state_dict()
    # Older reference versions saved running statistics of their (non-affine) instance norms.
    state["model.2.running_mean"], state["model.2.running_var"] = torch.zeros(4), torch.ones(4)
    state["model.10.conv_block.7.running_mean"] = torch.zeros(16)
    renaming = reference.resnet_names(state, dropout=False)
    assert renaming.structure == {"blocks": 3, "downsamplings": 2, "dropout": 1}
    assert set(renaming.dropped) == {"model.2.running_mean", "model.2.running_var",
                                     "model.10.conv_block.7.running_mean"}
    ours = resnet(3, 3, blocks=3, ngf=4, norm=instance, activation=relu)
    ours.load_state_dict(reference.fit(ours.state_dict(), reference.rename(state, renaming), renaming,
                                       "generator", Path("G.pth")))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), rtol=1e-5, atol=1e-6)


def test_patchgan_names_follow_n_layers():
    for n_layers in (1, 3, 5):
        with torch.device("meta"):
            ref, ours = RefPatchGAN(6, 64, n_layers), patchgan(6, n_layers=n_layers, ndf=64, norm=batch,
                                                               activation=leaky_relu)
        renaming = reference.patchgan_names(ref.state_dict())
        assert renaming.structure == {"n_layers": n_layers}
        reference.fit(ours.state_dict(), reference.rename(ref.state_dict(), renaming), renaming, "critic",
                      Path("D.pth"))
        if n_layers == 3:
            assert sum(p.numel() for p in ours.parameters()) == 2_768_705


@pytest.mark.parametrize("override, named", [
    ("generator.attention=[4]", "generator.attention"),
    ("generator.upsample=resize_conv", "generator.upsample"),
    ("generator.norm=instance", "--set generator.norm=batch"),
    ("generator.ngf=8", "--set generator.ngf=4"),
    ("generator.decoder_activation=mish", "--set generator.decoder_activation=relu"),
])
def test_a_recipe_the_weights_do_not_fit_is_refused_in_one_line(tmp_path, override, named):
    weights = tmp_path / "G.pth"
    torch.save(RefUnet(depth=5, ngf=4).state_dict(), weights)
    with pytest.raises(CganError) as error:
        reference.convert(str(tiny_recipe(tmp_path)), {"generator": weights}, [*FIT[1::2], override], tmp_path / "run")
    assert named in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    cases = {"missing.pth": None, "garbage.pth": b"not a torch file", "list.pth": [torch.zeros(1)],
             "epoch.pth": {"epoch": 3}}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(CganError) as error:
            reference.read_state_dict(path, "generator")
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    # A discriminator given as the generator is named as such.
    torch.save(RefPatchGAN(6, 4, 2).state_dict(), tmp_path / "D.pth")
    with pytest.raises(CganError, match="discriminator"):
        reference.convert(str(tiny_recipe(tmp_path)), {"generator": tmp_path / "D.pth"}, [], tmp_path / "run")


CYCLEGAN = """
[method]
type = "cyclegan"

[data]
type = "synthetic_unpaired"
size = 32

[generator]
type = "resnet"
blocks = 2
ngf = 4

[critic]
type = "patchgan"
n_layers = 2
ndf = 4
norm = "instance"

[[losses]]
type = "lsgan"

[train]
steps = 2
precision = "fp32"
eval_fid = "off"  # this test is about equal outputs; FID during training is tested in test_fid_training.py
"""


def test_reference_cyclegan_weights_become_a_run_computing_the_same_images(tmp_path):
    """G_A, G_B, D_A and D_B of the reference's cycle_gan model: G_A translates A to B, D_A judges
    its outputs (domain B: our critic_b), D_B judges domain A (our critic_a)."""
    refs = {"G_A": trained(RefResnet(blocks=2, ngf=4), 1), "G_B": trained(RefResnet(blocks=2, ngf=4), 2),
            "D_A": trained(RefPatchGAN(3, ndf=4, n_layers=2, norm="instance"), 3),
            "D_B": trained(RefPatchGAN(3, ndf=4, n_layers=2, norm="instance"), 4)}
    paths = {}
    for name, net in refs.items():
        paths[name] = tmp_path / f"latest_net_{name}.pth"
        torch.save(net.state_dict(), paths[name])
    recipe = tmp_path / "cyclegan.toml"
    recipe.write_text(CYCLEGAN + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    run = tmp_path / "converted"
    result = cgan("convert-reference", str(recipe), str(paths["G_A"]), "--weights", f"b_to_a={paths['G_B']}",
                  "--weights", f"critic_b={paths['D_A']}", "--weights", f"critic_a={paths['D_B']}",
                  "--out", str(run), check=True)
    assert "a_to_b, b_to_a, critic_a, critic_b" in result.stdout
    tensors, meta = checkpoint.load(checkpoint.step_path(run / "checkpoints", 0))
    models = build_models(load(run / "recipe.toml"), plugins.registry())
    for role, network in models.networks.items():
        network.load_state_dict(checkpoint.split(tensors, f"networks.{role}"))
        network.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for role, name in (("a_to_b", "G_A"), ("b_to_a", "G_B"), ("critic_b", "D_A"), ("critic_a", "D_B")):
            torch.testing.assert_close(models.networks[role](x), refs[name](x), rtol=1e-5, atol=1e-6)
    assert meta["converted_from"]["critic_b"] == str(paths["D_A"].resolve())
    one = cgan("convert-reference", str(recipe), str(paths["G_A"]), "--critic", str(paths["D_A"]),
               "--out", str(tmp_path / "other"))
    assert one.returncode == 2 and "--critic: the recipe's method has 2 critics" in one.stderr
    cgan("run", "--resume", str(run), "--until", "1", check=True)  # fine-tunes from the converted weights
