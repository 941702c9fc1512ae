"""Ready recipes ship with the plugins (issue 16): `cgan run NAME` and `cgan check NAME` take a bare
name (a path still wins), `cgan list recipes` lists them with their purpose, `cgan init NAME [DEST]`
copies one out, and `cgan --help` lists every command, the packages' included, without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cgan_kit.cli.main import cli
from cgan_kit.plugin_api import plugins
from conftest import ROOT, TINY_RECIPE, cgan, one_error

SHIPPED = {"quickstart", "pix2pix_facades", "pix2pix_facades_lsgan", "pix2pix_facades_mish", "pix2pix_facades_stable",
           "cyclegan_quickstart", "cyclegan_facades", "cyclegan_facades_stable"}


def test_every_recipe_in_recipes_is_shipped_by_a_plugin_and_each_has_a_purpose():
    recipes = plugins.load().recipes
    assert set(recipes) == SHIPPED == {path.stem for path in (ROOT / "recipes").glob("*.toml")}
    for name, recipe in recipes.items():
        assert recipe.path.resolve() == (ROOT / "recipes" / f"{name}.toml").resolve()
        assert recipe.purpose and len(recipe.purpose) <= 72, (name, recipe.purpose)
    listing = json.loads(CliRunner().invoke(cli, ["list", "recipes", "--json"]).output)
    assert {entry["name"] for entry in listing["recipes"]} == SHIPPED and list(listing) == ["recipes"]
    assert "recipes" in json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)


def test_init_copies_a_ready_recipe_and_never_overwrites(tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # `cgan init` writes into the current folder
    result = runner.invoke(cli, ["init", "quickstart"])
    assert result.exit_code == 0, result.output
    assert Path("quickstart.toml").read_text() == (ROOT / "recipes" / "quickstart.toml").read_text()
    again = runner.invoke(cli, ["init", "quickstart"])
    assert again.exit_code == 2 and "quickstart.toml exists already" in again.output
    Path("mine").mkdir()
    assert runner.invoke(cli, ["init", "cyclegan_quickstart", "mine"]).exit_code == 0
    assert Path("mine/cyclegan_quickstart.toml").is_file()
    typo = runner.invoke(cli, ["init", "quickstrt"])
    assert typo.exit_code == 2 and 'did you mean "quickstart"' in typo.output


def test_a_bare_name_runs_the_ready_recipe_and_a_file_of_that_name_wins(tmp_path):
    result = cgan("run", "quickstart", "--set", "train.steps=2", "--set", f"train.out_dir={tmp_path / 'runs'}",
                  "--set", "train.eval_images=4", cwd=tmp_path, check=True)
    assert (tmp_path / "runs" / "quickstart" / "checkpoints" / "step_00000002.safetensors").is_file(), result.stderr
    assert f"next: cgan translate {tmp_path / 'runs' / 'quickstart'} IMAGES... --out DIR" in result.stdout
    (tmp_path / "quickstart").write_text(TINY_RECIPE)  # a file named like the recipe: the path wins
    tiny = json.loads(cgan("check", "quickstart", "--json", cwd=tmp_path, check=True).stdout)
    shipped = json.loads(cgan("check", str(ROOT / "recipes" / "quickstart.toml"), "--json", check=True).stdout)
    assert tiny["generator"]["parameters"] < shipped["generator"]["parameters"] / 10  # the tiny U-Net
    one_error(cgan("check", "quickstrt", cwd=tmp_path), "recipe quickstrt does not exist", "cgan list recipes")


def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from click.testing import CliRunner; from cgan_kit.cli.main import cli; "
            "out = CliRunner().invoke(cli, ['--help']).output; "
            "print(out); print('TORCH', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip().endswith("TORCH False"), done.stdout
    for command in ("run", "check", "translate", "eval", "export", "report", "list", "describe", "plugins", "bench",
                    "init", "data", "convert-reference"):
        assert f"\n  {command} " in done.stdout, command


def test_a_smoke_run_does_the_whole_recipe_small_in_its_own_folder(tmp_path):
    from cgan_kit.config.recipe import load, smoke_overrides
    from cgan_kit.runs.folder import RunFolder

    # Every shipped recipe can be smoked: its caps are valid values of its own keys.
    for name in SHIPPED:
        recipe = load(name, smoke_overrides(load(name)))
        assert recipe.train.steps <= 10 and recipe.train.eval_images <= 8 and recipe.run_name == f"{name}-smoke"
        assert recipe.data.args.get("crop_size", recipe.data.args.get("size", 0)) <= 128
    facades = load("pix2pix_facades", smoke_overrides(load("pix2pix_facades")))
    assert (facades.data.args["load_size"], facades.data.args["crop_size"]) == (143, 128)  # the paper's margin
    # Smaller values given with --set stay; larger ones are capped.
    assert load("quickstart", smoke_overrides(load("quickstart", ["train.steps=3"]))).train.steps == 3

    result = cgan("run", "quickstart", "--smoke", "--set", "train.steps=500", "--set", "train.threads=1",
                  cwd=tmp_path, check=True)
    run = RunFolder(tmp_path / "runs" / "quickstart-smoke")
    assert [step for step, _ in run.saved_steps()] == [0, 10] and "at step 10" in result.stdout
    assert (run.path / "report" / "index.html").is_file() and run.sample(10).is_file()
    assert load(run.recipe).train.steps == 10  # the saved recipe is the smoke run's: a resume stays small
    one_error(cgan("run", "--resume", str(run.path), "--smoke", cwd=tmp_path), "--smoke", "--resume")


def test_a_third_party_package_ships_recipes_one_by_one_or_as_a_folder(tmp_path):
    from cgan_kit import hookimpl, recipes_in

    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "mine.toml").write_text("# My tiny recipe. More words.\n" + TINY_RECIPE)
    (tmp_path / "folder").mkdir()
    for name in ("alpha", "beta"):
        (tmp_path / "folder" / f"{name}.toml").write_text(f"# Recipe {name}.\n" + TINY_RECIPE)
    (tmp_path / "folder" / "notes.txt").write_text("not a recipe")

    class OneByOne:
        @hookimpl
        def register_recipes(self, register):
            register("mine", tmp_path / "one" / "mine.toml")

    class Folder:
        register_recipes = staticmethod(recipes_in(tmp_path / "folder"))

    with plugins.registered(OneByOne(), "one-by-one"), plugins.registered(Folder(), "a-folder") as loaded:
        assert {name: loaded.recipes[name].purpose for name in ("mine", "alpha", "beta")} == \
            {"mine": "My tiny recipe", "alpha": "Recipe alpha", "beta": "Recipe beta"}
        assert loaded.recipes["mine"].provider.plugin == "one-by-one"
        assert loaded.recipes["alpha"].provider.plugin == "a-folder" and "notes" not in loaded.recipes
        listed = CliRunner().invoke(cli, ["list", "recipes"])
        assert listed.exit_code == 0 and "mine" in listed.output and "beta" in listed.output
        checked = CliRunner().invoke(cli, ["check", "alpha", "--json"])
        assert checked.exit_code == 0, checked.output
        assert json.loads(checked.stdout)["generator"]["type"] == "unet"
