"""The third-party path, for real: example plugin packages pip-installed into a fresh virtual
environment that sees this cgan-kit, then used and uninstalled through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

RECIPE = """
[data]
type = "synthetic"
size = 32

[generator]
type = "unet"
depth = 5
ngf = 4

[critic]
type = "patchgan"
ndf = 4

[[losses]]
type = "bce"

[[losses]]
type = "charbonnier"
weight = 100.0
epsilon = 0.01

[[stabilizers]]
type = "label_noise"
amount = 0.1
"""


class Env:
    """A fresh virtual environment whose Python also sees the packages of the one running the tests."""

    def __init__(self, path: Path):
        venv.EnvBuilder(with_pip=False).create(path)
        self.python = path / "bin" / "python"
        site = Path(subprocess.check_output(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
        # addsitedir (not a bare path) so the parent's .pth files, cgan-kit's install among them, apply.
        parent = sysconfig.get_paths()["purelib"]
        (site / "parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CGAN_")}
        full_env.update(env or {})
        result = subprocess.run([str(self.python), *args], capture_output=True, text=True, env=full_env,
                                timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def cgan(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("-m", "cgan_kit", *args, **kwargs)

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "pip", "--disable-pip-version-check", "-q", *args)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    return Env(tmp_path_factory.mktemp("venv") / "env")


def install(env: Env, name: str, tmp_path: Path) -> None:
    source = tmp_path / name
    shutil.copytree(EXAMPLES / name, source)  # building writes into the source tree: use a copy
    env.pip("install", "--no-deps", "--no-build-isolation", str(source))


def test_example_plugin_installs_works_and_uninstalls(env, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    before = json.loads(env.cgan("list", "--json").stdout)
    assert "charbonnier" not in {e["name"] for e in before["losses"]}

    install(env, "cgan-example-plugin", tmp_path)
    listed = json.loads(env.cgan("list", "--json").stdout)
    loss = next(e for e in listed["losses"] if e["name"] == "charbonnier")
    assert loss["distribution"] == "cgan-example-plugin" and loss["version"] == "0.2.0"
    assert loss["summary"].startswith("Charbonnier loss")
    assert any(e["name"] == "label_noise" and e["distribution"] == "cgan-example-plugin"
               for e in listed["stabilizers"])
    plugins = json.loads(env.cgan("plugins", "--json").stdout)
    example = next(p for p in plugins["loaded"] if p["name"] == "example")
    assert set(example["hooks"]) == {"register_losses", "register_stabilizers", "register_commands"}
    assert example["commands"] == ["example-hello"]
    described = json.loads(env.cgan("describe", "loss", "charbonnier", "--json").stdout)
    assert described["parameters"][0]["name"] == "epsilon" and described["parameters"][0]["doc"]
    checked = json.loads(env.cgan("check", str(recipe), "--json").stdout)
    assert checked["losses"][1] == {"type": "charbonnier", "weight": 100.0, "role": "reconstruction"}
    assert env.cgan("example-hello", "cgan").stdout.strip() == "hello cgan from cgan-example-plugin"

    env.pip("uninstall", "-y", "cgan-example-plugin")
    after = json.loads(env.cgan("list", "--json").stdout)
    assert "charbonnier" not in {e["name"] for e in after["losses"]}
    failed = env.cgan("check", str(recipe), check=False)
    assert failed.returncode == 2
    assert 'losses[1].type: unknown loss "charbonnier"' in failed.stderr
    assert "Traceback" not in failed.stderr


def test_broken_plugin_does_not_stop_the_cli(env, tmp_path):
    install(env, "cgan-broken-plugin", tmp_path)
    try:
        result = env.cgan("list", "--json")
        assert json.loads(result.stdout)["generators"]  # the built-ins are all there
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1
        assert "plugin broken (cgan-broken-plugin 0.0.1) failed to load" in warnings[0]
        assert "missing dependency" in warnings[0]

        failed = json.loads(env.cgan("plugins", "--json").stdout)["failed"]
        assert [p["name"] for p in failed] == ["broken"] and "ImportError" in failed[0]["error"]

        strict = env.cgan("list", env={"CGAN_STRICT_PLUGINS": "1"}, check=False)
        assert strict.returncode == 2
        assert strict.stderr.strip().startswith("error: plugin broken") and "Traceback" not in strict.stderr

        quiet = env.cgan("plugins", "--json", env={"CGAN_DISABLE_PLUGINS": "broken"})
        assert "warning" not in quiet.stderr
        assert json.loads(quiet.stdout)["disabled"] == ["broken"]
    finally:
        env.pip("uninstall", "-y", "cgan-broken-plugin")


def test_the_wheel_carries_the_builtin_plugins_and_their_entry_points(tmp_path):
    source = tmp_path / "src"
    everywhere = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", "build")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # Run folders and downloaded data sit at the top only: cgan_kit/runs/ and tests/data/ are source.
        top = {"runs", "data"} & set(names) if Path(folder) == ROOT else set()
        return set(everywhere(folder, names)) | top

    shutil.copytree(ROOT, source, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("cgan_kit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cgan_kit/training/loop.py" in names and "cgan_pix2pix/generators.py" in names
    assert "cgan_pix2pix/method.py" in names and "cgan_kit/plugin_api/contracts.py" in names
    assert "cgan_kit/runs/state.py" in names and "cgan_cyclegan/method.py" in names
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "[cgan_kit]" in entry_points and "pix2pix-generators = cgan_pix2pix.generators" in entry_points
    assert "pix2pix-method = cgan_pix2pix.method" in entry_points
