"""The method kind: pix2pix as a method trains exactly as the engine's own loop did, old
checkpoints still load, and methods register, validate and list like every other kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cgan_kit import Direction, Method, Network, hookimpl
from cgan_kit.cli.main import cli
from cgan_kit.config.build import build_models
from cgan_kit.errors import CganError
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import state
from cgan_kit.training.updates import build_optimizers

from conftest import cgan_one_thread, one_error

DATA = Path(__file__).parent / "data"
GOLDEN_RECIPE = DATA / "pix2pix_golden.toml"
GOLDEN = json.loads((DATA / "pix2pix_golden.json").read_text())


def exact_here() -> bool:
    """Bit-equality holds for the torch build and CPU kernels the golden tensors were made with;
    elsewhere float kernels may round differently and the comparison allows 1e-5."""
    return torch.__version__ == GOLDEN["torch"] and torch.backends.cpu.get_cpu_capability() == GOLDEN["cpu_capability"]


def everything(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint restores into a freshly built run, by a name independent of the
    checkpoint format: networks, Adam moments and steps, stabilizer state (the EMA, the pool), RNG."""
    tensors, meta = state.read(path)
    recipe = state.saved_recipe(path, meta)
    models = build_models(recipe, plugins.registry())
    models.setup_stabilizers(recipe.train.steps)
    optimizers = build_optimizers(models, recipe.optim, torch.device("cpu"))
    state.restore(path, models, optimizers, {})
    found, _ = state.state_tensors(models, optimizers)
    return found


def assert_same(new: dict[str, torch.Tensor], golden: dict[str, torch.Tensor]) -> None:
    assert sorted(new) == sorted(golden)
    for key in golden:
        if exact_here():
            assert torch.equal(new[key], golden[key]), key
        else:
            # Other CPU kernels (AVX2 here, the golden AVX512) round differently, and 8 Adam steps grow
            # that to ~1e-5 of a value in a few elements; a change of algorithm moves whole tensors by
            # the learning rate (2e-4) or more.
            torch.testing.assert_close(new[key], golden[key], rtol=1e-4, atol=1e-5, msg=key)


def golden_run(tmp_path: Path) -> Path:
    """A run folder holding the golden recipe, as `cgan run` would have made it."""
    run = tmp_path / "runs" / "golden"
    (run / "checkpoints").mkdir(parents=True)
    out_dir = f'out_dir = "{(tmp_path / "runs").as_posix()}"'
    text = GOLDEN_RECIPE.read_text().replace('name = "golden"', f'name = "golden"\n{out_dir}')
    (run / "recipe.toml").write_text(text)
    return run


def test_pix2pix_method_reproduces_the_engine_loop_bit_for_bit(tmp_path: Path):
    """The golden recipe (every stabilizer, 2 critic updates, TTUR, decaying rate) trained by the
    pix2pix method gives the tensors the pre-methods engine wrote: weights, Adam, EMA, pool, RNG."""
    cgan_one_thread("run", str(GOLDEN_RECIPE), "--set", f"train.out_dir={(tmp_path / 'runs').as_posix()}",
                    check=True)
    new = tmp_path / "runs" / "golden" / "checkpoints" / "step_00000008.safetensors"
    assert state.read(new)[1]["format_version"] == 2
    assert_same(everything(new), everything(DATA / "pix2pix_golden_v1_step8.safetensors"))


def test_a_format_1_checkpoint_resumes_exactly(tmp_path: Path):
    """Resuming the pre-methods engine's step-4 checkpoint to step 8 equals its own step 8."""
    run = golden_run(tmp_path)
    shutil.copy(DATA / "pix2pix_golden_v1_step4.safetensors", run / "checkpoints" / "step_00000004.safetensors")
    cgan_one_thread("run", "--resume", str(run), check=True)
    assert_same(everything(run / "checkpoints" / "step_00000008.safetensors"),
                everything(DATA / "pix2pix_golden_v1_step8.safetensors"))


def test_a_format_1_checkpoint_translates_evaluates_exports_and_reports(tmp_path: Path):
    run = golden_run(tmp_path)
    shutil.copy(DATA / "pix2pix_golden_v1_step8.safetensors", run / "checkpoints" / "step_00000008.safetensors")
    runner = CliRunner()
    result = runner.invoke(cli, ["eval", str(run), "--no-fid", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["step"] == 8 and report["ema"] is True and 0 < report["l1"] < 1
    from cgan_kit.images import write_image

    image = tmp_path / "in.png"
    write_image(image, torch.rand(3, 40, 24), 8)
    result = runner.invoke(cli, ["translate", str(run), str(image), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "in.png").is_file()
    result = runner.invoke(cli, ["export", str(run), "--format", "pt2", "--out", str(tmp_path / "g.pt2")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "samples" / "step_00000008.png").is_file() and (run / "report" / "index.html").is_file()


def test_list_and_describe_methods():
    runner = CliRunner()
    result = runner.invoke(cli, ["list", "methods", "--json"])
    assert result.exit_code == 0, result.output
    assert "pix2pix" in [entry["name"] for entry in json.loads(result.output)["methods"]]
    result = runner.invoke(cli, ["describe", "method", "pix2pix"])
    assert result.exit_code == 0 and "Paired image-to-image translation" in result.output, result.output


@pytest.mark.parametrize("method, key", [("pix2pix", "feature_matching"), ("cyclegan", "cycle_a")])
def test_a_methods_settings_are_typed_and_bounded_like_any_components(tiny_recipe: Path, method, key):
    described = CliRunner().invoke(cli, ["describe", "method", method, "--json"])
    assert described.exit_code == 0, described.output
    params = {param["name"]: param for param in json.loads(described.output)["parameters"]}
    assert (params[key]["type"], params[key]["bounds"]) == ("float", ">= 0")  # the constructor's annotation
    tiny_recipe.write_text(f'[method]\ntype = "{method}"\n{key} = -1.0\n' + tiny_recipe.read_text())
    result = CliRunner().invoke(cli, ["check", str(tiny_recipe)])
    assert result.exit_code == 2
    assert f"method.{key}: must be >= 0, found number -1" in result.output


def test_a_recipe_without_method_means_pix2pix_and_saves_it(tiny_recipe: Path):
    from cgan_kit.config.recipe import load

    recipe = load(tiny_recipe)
    assert recipe.method.type == "pix2pix"
    assert '[method]\ntype = "pix2pix"' in recipe.to_toml()


def test_an_unknown_method_is_one_line(tiny_recipe: Path):
    tiny_recipe.write_text('[method]\ntype = "pix2pox"\n' + tiny_recipe.read_text())
    result = CliRunner().invoke(cli, ["check", str(tiny_recipe)])
    assert result.exit_code == 2
    assert 'method.type: unknown method "pix2pox"; did you mean "pix2pix"?' in result.output


def test_a_missing_network_table_names_the_method(tiny_recipe: Path):
    text = tiny_recipe.read_text().replace('[critic]\ntype = "patchgan"\nn_layers = 2\nndf = 4\n', "")
    tiny_recipe.write_text(text)
    result = CliRunner().invoke(cli, ["check", str(tiny_recipe)])
    assert result.exit_code == 2
    assert 'critic: missing table [critic] with a type' in result.output
    assert 'method "pix2pix" builds its critic from it' in result.output


class NotAMethod:
    networks = {"generator": Network("generator", "generator")}


class NoOptimizer(Method):
    """Declares a network no optimizer updates."""

    networks = {"generator": Network("generator", "generator"), "critic": Network("critic", "critic")}
    optimizers = {"generator": ("generator",)}
    directions = {"AtoB": Direction("generator")}


@pytest.mark.parametrize("factory, fragment", [
    (NotAMethod, "must be registered as a subclass of cgan_kit.Method"),
    (NoOptimizer, "optimizers must update every role of networks exactly once"),
])
def test_a_broken_method_declaration_names_the_plugin(factory, fragment):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_methods(register):
            register("broken", factory)

    with pytest.raises(CganError, match=fragment) as caught:
        with plugins.registered(Plugin(), "broken-plugin"):
            pass
    assert "plugin broken-plugin" in str(caught.value)
    assert "broken" not in plugins.registry().names("method")


def test_check_reports_each_role(tiny_recipe: Path):
    result = CliRunner().invoke(cli, ["check", str(tiny_recipe), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "pix2pix" and report["roles"] == ["generator", "critic"]
    assert report["critic"]["kind"] == "critic" and report["critic"]["output_shape"][1] == 1


def test_direction_must_be_the_methods(tmp_path: Path):
    run = golden_run(tmp_path)
    shutil.copy(DATA / "pix2pix_golden_v1_step8.safetensors", run / "checkpoints" / "step_00000008.safetensors")
    result = cgan_one_thread("eval", str(run), "--no-fid", "--direction", "BtoA")
    one_error(result, "--direction BtoA", 'method "pix2pix" translates AtoB')
