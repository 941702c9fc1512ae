"""pix2pixHD's feature-matching loss: ``[method] feature_matching`` on pix2pix, through the
critics' ``features(x)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cgan_kit import hookimpl
from cgan_kit.cli.main import cli
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import checkpoint
from conftest import TINY_RECIPE


def critic(name: str, norm: str, **params) -> nn.Module:
    registry = plugins.registry()
    return registry.get("critic", name).factory(in_channels=6, norm=registry.get("norm", norm).factory,
                                                activation=registry.get("activation", "leaky_relu").factory, **params)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_a_patchgan_shows_one_feature_map_per_block_and_its_last_one_makes_the_scores(norm):
    torch.manual_seed(0)
    patch = critic("patchgan", n_layers=3, ndf=8, norm=norm).eval()
    x = torch.randn(2, 6, 64, 64)
    maps = patch.features(x)
    assert [m.shape[1] for m in maps] == [8, 16, 32, 64]  # the first convolution, then each of the 3 layers
    assert torch.allclose(patch.body[-1](maps[-1]), patch(x), atol=1e-6)


def test_a_multiscale_critic_shows_every_scale_finest_first():
    torch.manual_seed(0)
    multi = critic("multiscale_patchgan", scales=2, n_layers=2, ndf=4, norm="none")
    x = torch.randn(1, 6, 48, 48)
    maps = multi.features(x)
    assert len(maps) == 2 * 3
    assert all(torch.equal(a, b) for a, b in zip(maps[:3], multi.critics[0].features(x)))
    assert maps[3].shape[-1] == maps[0].shape[-1] // 2  # the second scale sees the pair at half size


MATCHING = '[method]\ntype = "pix2pix"\nfeature_matching = 10.0\n'


def train(tmp_path: Path, name: str, extra: str = "", *sets: str, command: str = "run"):
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(extra + TINY_RECIPE + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    return CliRunner().invoke(cli, [command, str(recipe), "--set", "train.steps=2", "--set", "train.log_every=1",
                                    *[part for item in sets for part in ("--set", item)]])


def test_feature_matching_is_a_generator_term_that_changes_what_it_learns(tmp_path):
    plain = train(tmp_path, "plain", "", "train.checkpoint_every=1")
    matched = train(tmp_path, "matched", MATCHING, "train.checkpoint_every=1")
    assert plain.exit_code == 0 and matched.exit_code == 0, matched.output
    rows = [json.loads(line) for line in (tmp_path / "runs" / "matched" / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "loss/g_feature_matching" in row]
    assert [row["step"] for row in logged] == [1, 2] and all(row["loss/g_feature_matching"] > 0 for row in logged)
    for row in logged:  # the generator's loss is the sum of its terms
        terms = row["loss/g_bce"] + row["loss/g_l1"] + row["loss/g_feature_matching"]
        assert row["loss/generator"] == pytest.approx(terms, rel=1e-5)
    assert not any("loss/g_feature_matching" in json.loads(line) for line in
                   (tmp_path / "runs" / "plain" / "metrics.jsonl").read_text().splitlines())

    # Step 1 updates the critic first, alike in both runs; then the generators part ways.
    first = [checkpoint.load(tmp_path / "runs" / name / "checkpoints" / "step_00000001.safetensors")[0]
             for name in ("plain", "matched")]
    critics = [key for key in first[0] if key.startswith("networks.critic.")
               and not key.rsplit(".", 1)[-1].startswith(("running_", "num_batches"))]  # weights, not statistics
    generators = [key for key in first[0] if key.startswith("networks.generator.")]
    assert critics and all(torch.equal(first[0][key], first[1][key]) for key in critics)
    assert any(not torch.equal(first[0][key], first[1][key]) for key in generators)


class NoFeatures:
    @hookimpl
    def register_critics(self, register):
        register("bare_scores", lambda in_channels: nn.Conv2d(in_channels, 1, 4, stride=4))


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_critic_without_features_is_a_one_line_error(tmp_path, command):
    with plugins.registered(NoFeatures(), "no-features"):
        result = train(tmp_path, "bare", MATCHING, 'critic={type="bare_scores"}', command=command)
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error")] == [
        result.output.strip().splitlines()[-1]]
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: method.feature_matching: the critic (Conv2d) has no features(x)")
    assert "Traceback" not in result.output
