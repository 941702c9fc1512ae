"""The `cgan` command line, run for real in a subprocess: listing, describing, checking, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cgan_kit.plugin_api import plugins
from conftest import FACADES, ROOT, TINY_RECIPE, cgan

KINDS = ("methods", "generators", "critics", "losses", "norms", "activations", "stabilizers", "datasets", "loggers")
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    return "\n".join(lines)


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from cgan_kit.cli.main import cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    started = time.perf_counter()
    result = cgan("--help", check=True)
    assert time.perf_counter() - started < 5  # a generous bound for a loaded CI machine; ~0.2 s here
    for command in ("list", "describe", "plugins", "check", "run"):
        assert command in result.stdout
    # Plugin commands load on first use (importing every plugin would cost --help its speed).
    assert "facades" in cgan("data", "releases", check=True).stdout


def test_list_json_shows_every_registered_component_with_summary_and_package():
    listing = json.loads(cgan("list", "--json", check=True).stdout)
    registry = plugins.registry()
    assert set(listing) == set(KINDS) | {"recipes"}
    for kind in KINDS:
        singular = kind[:-1] if kind != "losses" else "loss"
        assert {e["name"] for e in listing[kind]} == set(registry.names(singular))
        for entry in listing[kind]:
            assert entry["summary"] and entry["distribution"] == "cgan-kit" and entry["version"]
            assert all(param["doc"] for param in entry["parameters"]), entry["name"]
    assert {"unet", "resnet"} <= {e["name"] for e in listing["generators"]}


def test_list_one_kind_accepts_singular_and_plural_and_suggests():
    assert "unet" in cgan("list", "generators", check=True).stdout
    assert "patchgan" in cgan("list", "critic", check=True).stdout
    assert "did you mean" in one_error_line(cgan("list", "norma"))


def test_describe_shows_parameters_defaults_and_docs():
    unet = json.loads(cgan("describe", "generator", "unet", "--json", check=True).stdout)
    depth = next(p for p in unet["parameters"] if p["name"] == "depth")
    assert depth["default"] == 8 and depth["type"] == "int" and "unet_256" in depth["doc"]
    text = cgan("describe", "stabilizer", "ema", check=True).stdout
    assert "decay" in text and "0.999" in text
    train = cgan("describe", "train", check=True).stdout
    assert "[train]" in train and "batch_size" in train
    loss = cgan("describe", "loss", "l1", check=True).stdout
    assert "weight" in loss and "[[losses]]" in loss and "float (>= 0)" in loss
    assert "int (>= 1, <= 16)" in cgan("describe", "generator", "unet", check=True).stdout
    error = one_error_line(cgan("describe", "generator", "unett"))
    assert 'did you mean "unet"' in error and "cgan list generators" in error


def test_plugins_json_names_each_builtin_plugin_and_its_hooks():
    report = json.loads(cgan("plugins", "--json", check=True).stdout)
    hooks = {p["name"]: p["hooks"] for p in report["loaded"]}
    assert hooks["pix2pix-generators"] == ["register_generators"]
    assert hooks["pix2pix-recipes"] == ["register_recipes"] and hooks["cyclegan-recipes"] == ["register_recipes"]
    assert {c["name"]: c["value"] for c in report["commands"]} == {
        "data": "cgan_pix2pix.commands:data", "convert-reference": "cgan_pix2pix.commands:convert_reference_command"}
    assert report["failed"] == []


def test_disabled_plugin_is_skipped_and_its_components_are_gone():
    listing = json.loads(cgan("list", "--json", env={"CGAN_DISABLE_PLUGINS": "pix2pix-stabilizers"},
                              check=True).stdout)
    assert listing["stabilizers"] == [] and listing["generators"]


def test_typo_in_generator_type_is_one_line_naming_the_key_and_suggesting(tmp_path):
    recipe = tmp_path / "typo.toml"
    recipe.write_text(TINY_RECIPE.replace('type = "unet"', 'type = "unett"'))
    error = one_error_line(cgan("check", str(recipe)))
    assert error.count("\n") == 0
    assert "generator.type" in error and 'did you mean "unet"' in error and str(recipe) in error


def test_unknown_key_is_named_with_its_path_and_a_suggestion(tmp_path):
    recipe = tmp_path / "key.toml"
    recipe.write_text(TINY_RECIPE.replace("ngf = 4", "ngff = 4"))
    error = one_error_line(cgan("check", str(recipe)))
    assert "generator.ngff" in error and '"ngf"' in error


def test_every_problem_is_reported_together(tmp_path):
    recipe = tmp_path / "many.toml"
    recipe.write_text(TINY_RECIPE.replace('type = "unet"', 'type = "unett"').replace("steps = 6", "steps = 0"))
    error = one_error_line(cgan("check", str(recipe), "--set", "optim.lr=fast"))
    assert "generator.type" in error and "train.steps" in error and "optim.lr" in error


def test_debug_shows_the_traceback(tmp_path):
    result = cgan("--debug", "check", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_unknown_command_suggests():
    result = cgan("chek")
    assert result.returncode == 2 and "check" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_passes_check(recipe):
    report = json.loads(cgan("check", str(recipe), "--json", check=True).stdout)
    assert report["roles"] and all(report[role]["parameters"] > 0 for role in report["roles"])
    assert {report[role]["kind"] for role in report["roles"]} == {"generator", "critic"}


def test_facades_recipe_is_the_papers_networks():
    recipe = str(ROOT / "recipes" / "pix2pix_facades.toml")
    report = json.loads(cgan("check", recipe, "--json", check=True).stdout)
    assert report["generator"]["parameters"] == 54_413_955
    assert report["critic"]["parameters"] == 2_768_705
    assert report["critic"]["receptive_field"] == 70
    assert report["critic"]["output_shape"][-2:] == [30, 30]
    depth7 = json.loads(cgan("check", recipe, "--json", "--set", "generator.depth=7", check=True).stdout)
    assert depth7["generator"]["parameters"] == 41_828_995


def test_check_and_run_warn_of_a_stabilizer_that_the_loss_leaves_idle(tmp_path):
    # Label smoothing only changes the critic's targets, which the hinge and Wasserstein losses
    # ignore; the moving average beside it acts whatever the loss.
    path = tmp_path / "idle.toml"
    path.write_text(TINY_RECIPE.replace('type = "bce"', 'type = "hinge"')
                    + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n'
                    + '\n[[stabilizers]]\ntype = "ema"\n\n[[stabilizers]]\ntype = "label_smoothing"\nreal = 0.9\n')
    for loss in ("hinge", "wgan_gp"):
        report = json.loads(cgan("check", str(path), "--json", "--set", f'losses[0].type="{loss}"', check=True).stdout)
        assert len(report["warnings"]) == 1, report["warnings"]
        expected = f'stabilizers[1] ("label_smoothing") only changes the critic\'s targets, which the loss "{loss}"'
        assert report["warnings"][0].startswith(expected + " ignores: it has no effect")
    for loss in ("bce", "lsgan"):
        report = json.loads(cgan("check", str(path), "--json", "--set", f'losses[0].type="{loss}"', check=True).stdout)
        assert report["warnings"] == [], loss
    run = cgan("run", str(path), "--set", "train.steps=1", "--set", "train.eval_every=0", check=True)
    assert sum('warning: stabilizers[1] ("label_smoothing")' in line for line in run.stderr.splitlines()) == 1


def test_check_reports_the_data_and_says_how_to_fetch_a_missing_release(tmp_path):
    recipe = str(ROOT / "recipes" / "pix2pix_facades.toml")
    result = cgan("check", recipe, "--json", "--set", f"data.root={tmp_path / 'facades'}", check=True)
    problems = json.loads(result.stdout)["data"]["problems"]
    assert len(problems) == 1 and "cgan data download facades" in problems[0]
    if FACADES.is_dir():
        report = json.loads(cgan("check", recipe, "--json", "--set", f"data.root={FACADES}", check=True).stdout)
        assert report["data"]["splits"] == {"train": 400, "test": 106}
