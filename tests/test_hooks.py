"""Every hook, used in-process the way simonw/llm's tests use theirs: one plugin object registers
a component of every kind and a command, and a recipe made only of them trains through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import click
import torch
from click.testing import CliRunner
from torch import nn

from cgan_kit import AdversarialLoss, Logger, Norm, Range, ReconstructionLoss, Stabilizer, hookimpl, ref
from cgan_kit.cli.main import cli
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import state


class Plain(Norm):
    conv_bias = True

    def layer(self, channels):
        return nn.Identity()


class Squares(AdversarialLoss):
    def critic_loss(self, real_scores, fake_scores, real_target, fake_target):
        return ((real_scores - real_target) ** 2).mean() + ((fake_scores - fake_target) ** 2).mean()

    def generator_loss(self, fake_scores):
        return ((fake_scores - 1) ** 2).mean()


class Absolute(ReconstructionLoss):
    def __call__(self, output, target):
        return (output - target).abs().mean()


class CountUpdates(Stabilizer):
    capturable = False
    augmented: list[tuple[str, bool]] = []  # (role, whether gradients flow back to a generator)

    def __init__(self):
        self.updates = 0

    def augment(self, images, step, role):
        CountUpdates.augmented.append((role, images.requires_grad))
        return images

    def after_generator_step(self, generator, step, role):
        self.updates += 1

    def extra_state(self):
        return {"updates": self.updates}

    def load_extra_state(self, state):
        self.updates = state["updates"]


class StepsSeen(Logger):
    seen: list[int] = []

    def scalars(self, step, values, epoch):
        self.seen.append(step)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, length: int):
        generator = torch.Generator().manual_seed(length)
        self.inputs = torch.rand(length, 1, 16, 16, generator=generator) * 2 - 1

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return {"input": self.inputs[index], "target": -self.inputs[index], "name": f"pair_{index}"}


def one_conv(in_channels: int, out_channels: int, norm: ref("norm") = "plain",
             activation: ref("activation") = "softsign") -> nn.Module:
    """One convolution.

    Args:
        norm: Normalization after it.
        activation: Activation after the norm.
    """
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), norm().layer(out_channels), activation())


def patch_scores(in_channels: int) -> nn.Module:
    """A 4x4 patch critic."""
    return nn.Conv2d(in_channels, 1, 4, stride=4)


def pairs(split: str, augment: bool, in_channels: int = 1, out_channels: int = 1,
          length: Annotated[int, Range(ge=1)] = 8):
    """Negated noise.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        length: Pairs per split.
    """
    return Pairs(length if split == "train" else 4)


class EveryHook:
    @hookimpl
    def register_generators(self, register):
        register("one_conv", one_conv)

    @hookimpl
    def register_critics(self, register):
        register("patch_scores", patch_scores)

    @hookimpl
    def register_losses(self, register):
        register("squares", lambda: Squares())
        register("absolute", lambda: Absolute())

    @hookimpl
    def register_norms(self, register):
        register("plain", lambda: Plain())

    @hookimpl
    def register_activations(self, register):
        register("softsign", lambda: nn.Softsign())

    @hookimpl
    def register_stabilizers(self, register):
        register("count_updates", lambda: CountUpdates())

    @hookimpl
    def register_datasets(self, register):
        register("negated_noise", pairs)

    @hookimpl
    def register_loggers(self, register):
        register("steps_seen", lambda: StepsSeen())

    @hookimpl
    def register_commands(self, cli):
        @cli.command()
        def hello():
            """Say hello."""
            click.echo("hello from a plugin")


RECIPE = """
[data]
type = "negated_noise"

[generator]
type = "one_conv"

[critic]
type = "patch_scores"

[[losses]]
type = "squares"

[[losses]]
type = "absolute"
weight = 10.0

[[stabilizers]]
type = "count_updates"

[train]
steps = 3
batch_size = 2
log_every = 1
eval_every = 3
precision = "fp32"
workers = 0
loggers = ["jsonl", "steps_seen"]
"""


def test_a_component_of_every_kind_registered_in_process_trains_through_the_cli(tmp_path: Path):
    recipe = tmp_path / "every.toml"
    recipe.write_text(RECIPE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    runner = CliRunner()
    with plugins.registered(EveryHook(), "every-hook"):
        listing = json.loads(runner.invoke(cli, ["list", "--json"]).output)
        for kind, name in [("generators", "one_conv"), ("critics", "patch_scores"), ("losses", "squares"),
                           ("norms", "plain"), ("activations", "softsign"), ("stabilizers", "count_updates"),
                           ("datasets", "negated_noise"), ("loggers", "steps_seen"), ("methods", "pix2pix")]:
            assert name in [entry["name"] for entry in listing[kind]], (kind, name)
        result = runner.invoke(cli, ["run", str(recipe)])
        assert result.exit_code == 0, result.output
        path = tmp_path / "runs" / "every" / "checkpoints" / "step_00000003.safetensors"
        _, meta = state.read(path)
        assert meta["stabilizers"] == [{"updates": 3}]
        # augment sees the critic update's real and generated pairs, then the generator update's, with its graph
        assert CountUpdates.augmented == [("critic", False), ("critic", False), ("critic", True)] * 3
        rows = [json.loads(line) for line in (tmp_path / "runs" / "every" / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in rows if "loss/g_squares" in row] == [1, 2, 3]
        assert any("eval/l1" in row for row in rows)
        assert StepsSeen.seen == [0, 1, 2, 3, 3]  # the untrained baseline, each step, the last evaluation
        hello = runner.invoke(cli, ["hello"])
        assert hello.exit_code == 0 and hello.output == "hello from a plugin\n"
    assert "one_conv" not in plugins.registry().names("generator")  # gone with the context
