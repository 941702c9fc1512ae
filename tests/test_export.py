"""`cgan export`: a model folder to share (safetensors) that everything takes without the run
folder, and the generator alone as a torch.export program or ONNX, equal to the PyTorch generator
at every size its graph takes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cgan_kit
from cgan_kit.errors import CganError
from conftest import TINY_RECIPE, cgan
from test_cyclegan import TINY as CYCLEGAN_RECIPE
from test_translate import invoke, one_error, rebuilt_generator, trained_tiny_run

HUB_FILES = ["README.md", "config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def model(run, tmp_path_factory) -> Path:
    """The tiny EMA run exported as a model folder, from a copy of the run that is then deleted."""
    base = tmp_path_factory.mktemp("model")
    copy = base / "run"
    shutil.copytree(run, copy)
    folder = base / "tiny-model"
    report = json.loads(cgan("export", str(copy), "--format", "safetensors", "--out", str(folder), "--json",
                             check=True).stdout)
    assert report["files"] == HUB_FILES and report["max_abs_diff"] == 0 and report["directions"] == ["AtoB"]
    shutil.rmtree(copy)
    return folder


@pytest.fixture(scope="module")
def cyclegan_run(tmp_path_factory) -> Path:
    """A tiny CycleGAN run (ResNet generators, EMA), 2 steps."""
    base = tmp_path_factory.mktemp("cyclegan")
    recipe = base / "cyc.toml"
    recipe.write_text(CYCLEGAN_RECIPE.replace("steps = 6", "steps = 2") + f'out_dir = "{(base / "runs").as_posix()}"\n')
    cgan("run", str(recipe), check=True, env={"OMP_NUM_THREADS": "1"})
    return base / "runs" / "cyc"


@pytest.fixture(scope="module")
def label(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export_inputs") / "label.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(path)
    return path


def random_input(shape, seed: int = 123) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------
# The model folder


def test_the_model_folder_is_what_a_hub_takes_and_says_what_it_holds(run, model):
    from safetensors.torch import load_file, safe_open

    from cgan_kit.runs import checkpoint

    assert sorted(p.name for p in model.iterdir()) == HUB_FILES
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    config = json.loads((model / "config.json").read_text())
    assert config["format"] == "cgan-kit model" and config["format_version"] == 1
    assert config["cgan_kit_version"] == cgan_kit.__version__
    assert config["directions"] == {"AtoB": {"generator": "generator", "source": "input", "target": "target",
                                             "in_channels": 3, "out_channels": 3}}
    assert config["generators"]["generator"]["type"] == "unet" and config["generators"]["generator"]["depth"] == 5
    assert config["preprocessing"]["size"] == [32, 32] and config["preprocessing"]["value_range"] == [-1, 1]
    assert config["data"]["type"] == "synthetic" and config["method"] == {"type": "pix2pix", "feature_matching": 0.0}
    assert {k: config["provenance"][k] for k in ("run", "checkpoint", "step", "ema")} == \
        {"run": "tiny", "checkpoint": "step_00000006.safetensors", "step": 6, "ema": True}
    with safe_open(str(model / "model.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    assert meta == {"format": "cgan-kit model", "format_version": "1", "cgan_kit_version": cgan_kit.__version__}
    tensors = load_file(str(model / "model.safetensors"))
    saved, _ = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    ema = checkpoint.split(saved, "stabilizers.0.generator")  # the EMA weights alone: no critic, no Adam state
    assert sorted(tensors) == sorted(f"generator.{key}" for key in ema)
    assert all(torch.equal(tensors[f"generator.{key}"], value) for key, value in ema.items())
    assert "cgan_kit.load" in (model / "README.md").read_text()


def test_the_folder_translates_without_its_run_like_the_run(run, model, label, tmp_path):
    cgan("translate", str(run), str(label), "--out", str(tmp_path / "from_run"), check=True)
    result = cgan("translate", str(model), str(label), "--out", str(tmp_path / "from_model"), check=True)
    assert "model.safetensors (step 6, EMA weights" in result.stdout
    assert (tmp_path / "from_run" / "label.png").read_bytes() == (tmp_path / "from_model" / "label.png").read_bytes()
    invoke("translate", str(model / "model.safetensors"), str(label), "--out", str(tmp_path / "from_weights"))
    assert (tmp_path / "from_weights" / "label.png").read_bytes() == (tmp_path / "from_run" / "label.png").read_bytes()


def test_the_python_api_loads_the_folder_or_its_weights_file_like_the_run(run, model):
    from_run, from_model = cgan_kit.load(run), cgan_kit.load(model)
    image = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(5))
    assert torch.equal(from_model(image), from_run(image))
    assert torch.equal(cgan_kit.load(model / "model.safetensors")(image), from_run(image))
    assert (from_model.step, from_model.ema, from_model.direction) == (6, True, "AtoB")
    assert from_model.checkpoint == model / "model.safetensors"
    with pytest.raises(CganError, match="holds one model"):
        cgan_kit.load(model, checkpoint="best")
    with pytest.raises(CganError, match="EMA weights alone"):
        cgan_kit.load(model, ema=False)
    with pytest.raises(CganError, match="translates AtoB"):
        cgan_kit.load(model, direction="BtoA")


def test_eval_measures_the_folder_on_its_data_like_the_run(run, model):
    from_run = json.loads(invoke("eval", str(run), "--no-fid", "--json").stdout.splitlines()[-1])
    from_model = json.loads(invoke("eval", str(model), "--no-fid", "--json").stdout.splitlines()[-1])
    assert from_model["checkpoint"] == str(model / "model.safetensors") and from_model["step"] == 6
    assert {k: from_model[k] for k in ("l1", "psnr", "ssim", "images")} == \
        {k: from_run[k] for k in ("l1", "psnr", "ssim", "images")}
    one_error(invoke("eval", str(model), "--no-fid", "--data", "/nowhere"), "data.root", "no root")


def test_a_folder_exports_again_and_no_output_overwrites_anything(model, tmp_path):
    again = tmp_path / "again"
    report = json.loads(invoke("export", str(model), "--format", "safetensors", "--out", str(again), "--json")
                        .stdout)
    assert report["step"] == 6 and report["ema"] is True
    from safetensors.torch import load_file

    tensors, expected = load_file(str(again / "model.safetensors")), load_file(str(model / "model.safetensors"))
    assert sorted(tensors) == sorted(expected) and all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert json.loads((again / "config.json").read_text()) == json.loads((model / "config.json").read_text())
    one_error(invoke("export", str(model), "--format", "safetensors", "--out", str(model)), "not an empty folder")
    one_error(invoke("export", str(model), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")),
              "name the folder")
    one_error(invoke("export", str(model), "--format", "safetensors", "--out", str(tmp_path / "x"), "--size", "8",
                     "8"), "--size")
    (tmp_path / "empty").mkdir()
    invoke("export", str(model), "--format", "safetensors", "--out", str(tmp_path / "empty"))
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == HUB_FILES
    graph = json.loads(invoke("export", str(model), "--format", "pt2", "--out", str(tmp_path / "g.pt2"), "--json")
                       .stdout)
    assert graph["checkpoint"] == str(model / "model.safetensors") and graph["input_shape"] == [1, 3, 32, 32]
    one_error(invoke("export", str(model), "--format", "pt2", "--out", str(model / "config.json")),
              "input of this command")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "empty", "g.pt2"]  # nothing else, no temporary


def test_cyclegan_exports_both_generators_and_each_direction_loads(cyclegan_run, tmp_path):
    from safetensors.torch import load_file

    both, one = tmp_path / "both", tmp_path / "one"
    invoke("export", str(cyclegan_run), "--format", "safetensors", "--out", str(both))
    invoke("export", str(cyclegan_run), "--format", "safetensors", "--out", str(one), "--direction", "BtoA")
    assert {key.split(".")[0] for key in load_file(str(both / "model.safetensors"))} == {"a_to_b", "b_to_a"}
    assert {key.split(".")[0] for key in load_file(str(one / "model.safetensors"))} == {"b_to_a"}
    config = json.loads((both / "config.json").read_text())
    assert config["directions"]["BtoA"] == {"generator": "b_to_a", "source": "B", "target": "A", "in_channels": 3,
                                            "out_channels": 3}
    assert config["generators"]["a_to_b"]["type"] == "resnet" and config["measures"] == "unpaired"
    image = torch.rand(1, 3, 19, 30, generator=torch.Generator().manual_seed(6))
    for direction in ("AtoB", "BtoA"):
        expected = cgan_kit.load(cyclegan_run, direction=direction)(image)
        assert torch.equal(cgan_kit.load(both, direction=direction)(image), expected)
    assert torch.equal(cgan_kit.load(one)(image), cgan_kit.load(cyclegan_run, direction="BtoA")(image))
    with pytest.raises(CganError, match="translates BtoA"):
        cgan_kit.load(one, direction="AtoB")
    report = json.loads(invoke("eval", str(both), "--no-fid", "--json", "--direction", "BtoA").stdout.splitlines()[-1])
    expected = json.loads(invoke("eval", str(cyclegan_run), "--no-fid", "--json", "--direction", "BtoA")
                          .stdout.splitlines()[-1])
    assert report["cycle_l1"] == expected["cycle_l1"] and report["direction"] == "BtoA"


# A damaged or hostile folder: (what is done to a copy, fragments of the one error line).
def _config(change):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _tensors(change):
    def edit(folder: Path) -> None:
        from safetensors.torch import load_file, safe_open, save_file

        path = str(folder / "model.safetensors")
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata()
        tensors = load_file(path)
        change(tensors)
        save_file(tensors, path, metadata=meta)
    return edit


def _first_weight(tensors):
    return next(key for key in sorted(tensors) if key.endswith("weight"))


DAMAGE = {
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{nope"), ["config.json", "not valid JSON"]),
    "config.json missing": (lambda f: (f / "config.json").unlink(), ["config.json does not exist"]),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), ["model.safetensors does not exist"]),
    "config.json nested deeply": (lambda f: (f / "config.json").write_text("[" * 100000 + "]" * 100000),
                                  ["config.json", "nested too deeply"]),
    "another format": (_config(lambda c: c.update(format="diffusers")), ["config.json", "key format"]),
    "a newer format": (_config(lambda c: c.update(format_version=9)), ["format 9", "upgrade cgan-kit"]),
    "unknown generator type": (_config(lambda c: c["generators"]["generator"].update(type="vit")),
                               ["generators.generator.type", 'unknown generator "vit"', "needs the plugin"]),
    "generators too large for the machine": (
        _config(lambda c: c["generators"]["generator"].update(depth=10, ngf=4096, max_channels=16384)),
        ["config.json", "the generators have", "too large for this machine"]),
    "generator out of bounds": (_config(lambda c: c["generators"]["generator"].update(depth=99)),
                                ["generators.generator.depth", "<= 16"]),
    "wider than the weights": (_config(lambda c: c["generators"]["generator"].update(ngf=8)),
                               ["model.safetensors", "generator.down.0.0.weight", "[8, 3, 4, 4]",
                                "do not belong together"]),
    "grey in the config": (_config(lambda c: c["directions"]["AtoB"].update(in_channels=1)),
                           ["generator.down.0.0.weight", "do not belong together"]),
    "channels no image has": (_config(lambda c: c["directions"]["AtoB"].update(in_channels=9)),
                              ["directions.AtoB.in_channels", "1 to 4"]),
    "size not two sides": (_config(lambda c: c["preprocessing"].update(size=[0])), ["preprocessing.size"]),
    "a size nothing trains at": (_config(lambda c: c["preprocessing"].update(size=[65536, 65536])),
                                 ["preprocessing.size", "[65536, 65536]"]),
    "config.json a FIFO": (lambda f: ((f / "config.json").unlink(), os.mkfifo(f / "config.json")),
                           ["config.json is not a plain file"]),
    "a name with a line break": (_config(lambda c: c.update(directions={"A\ntoB": c["directions"]["AtoB"]})),
                                 ["directions key", "A\\ntoB"]),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:999]),
                          ["model.safetensors", "truncated or damaged"]),
    "a pickle as weights": (lambda f: (f / "model.safetensors").write_bytes(b"PK\x03\x04" + bytes(64)),
                            ["model.safetensors", "pickle", "never loads pickles"]),
    "a tensor of no generator": (_tensors(lambda t: t.update({"critic.weight": torch.zeros(2)})),
                                 ["tensor critic.weight", "belongs to no generator"]),
    "a tensor missing": (_tensors(lambda t: t.pop(_first_weight(t))), ["missing generator.", "do not belong"]),
    "half precision": (_tensors(lambda t: t.update({_first_weight(t): t[_first_weight(t)].half()})),
                       ["torch.float16", "do not belong together"]),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_folder_is_one_line_naming_the_file_and_key(model, label, tmp_path, damage):
    edit, fragments = DAMAGE[damage]
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    edit(folder)
    one_error(invoke("translate", str(folder), str(label), "--out", str(tmp_path / "out")), *fragments)
    with pytest.raises(CganError):
        cgan_kit.load(folder)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_in_place_of_the_weights_is_named(run, model, label, tmp_path):
    from cgan_kit.runs import checkpoint

    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    shutil.copy(checkpoint.latest(run / "checkpoints"), folder / "model.safetensors")
    one_error(invoke("translate", str(folder), str(label), "--out", str(tmp_path / "out")), "training checkpoint",
              "--format safetensors")


# ---------------------------------------------------------------------------------------------
# Graphs: torch.export (.pt2) and ONNX


def test_pt2_takes_any_batch_and_multiple_of_the_stride_like_pytorch(run, tmp_path):
    from cgan_kit.inference.export import GraphFile

    out = tmp_path / "generator.pt2"
    report = json.loads(invoke("export", str(run), "--format", "pt2", "--out", str(out), "--json").stdout)
    assert report["ema"] is True and report["input_shape"] == [1, 3, 32, 32]  # the recipe's size by default
    assert report["dynamic"] and (report["size_multiple"], report["min_size"]) == (32, 32)
    assert report["accepts"] == "(N, 3, H, W) with H and W multiples of 32 from 32 (pad other sizes)"
    assert report["checked_shapes"] == [[1, 3, 32, 32], [2, 3, 32, 64]] and report["max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.pt2"]  # no temporary file left
    # Independently: the saved program against the EMA weights rebuilt from the checkpoint.
    program = torch.export.load(str(out)).module()
    generator = rebuilt_generator(run, "stabilizers.0.generator")
    for shape in [(1, 3, 32, 32), (3, 3, 64, 96)]:
        x = random_input(shape)
        with torch.no_grad():
            assert (program(x) - generator(x)).abs().max() <= 1e-4
    with pytest.raises(CganError, match=r"multiples of 32 from 32 \(pad other sizes\), not \(1, 3, 37, 53\)"):
        GraphFile(out)(random_input((1, 3, 37, 53)))


def test_a_fixed_size_pt2_names_its_size_and_refuses_others_in_one_line(run, tmp_path):
    from cgan_kit.inference.export import GraphFile

    out = tmp_path / "fixed.pt2"
    result = cgan("export", str(run), "--format", "pt2", "--out", str(out), "--size", "40", "24", "--no-ema",
                  check=True)
    assert "(1, 3, 40, 24) only" in result.stdout and "no multiple of the generator's 32" in result.stdout
    graph = GraphFile(out)
    x = random_input((1, 3, 40, 24))
    with torch.no_grad():
        assert (graph(x) - rebuilt_generator(run)(x)).abs().max() <= 1e-4
    with pytest.raises(CganError, match=r"takes \(1, 3, 40, 24\) only \(a fixed size\), not \(1, 3, 32, 32\)"):
        graph(random_input((1, 3, 32, 32)))
    report = json.loads(invoke("export", str(run), "--format", "pt2", "--out", str(out), "--fixed-size", "--json")
                        .stdout)
    assert not report["dynamic"] and report["accepts"] == "(1, 3, 32, 32) only (a fixed size)"


def test_pt2_of_a_resnet_takes_multiples_of_its_stride_from_two_strides(cyclegan_run, tmp_path):
    out = tmp_path / "b_to_a.pt2"
    report = json.loads(invoke("export", str(cyclegan_run), "--format", "pt2", "--out", str(out), "--direction",
                               "BtoA", "--json").stdout)
    assert (report["direction"], report["size_multiple"], report["min_size"]) == ("BtoA", 4, 8)
    program = torch.export.load(str(out)).module()
    expected = cgan_kit.load(cyclegan_run, direction="BtoA", device="cpu").generator
    x = random_input((2, 3, 8, 20))
    with torch.no_grad():
        assert (program(x) - expected(x)).abs().max() <= 1e-4


def test_onnx_takes_any_batch_and_multiple_of_the_stride_in_onnxruntime(run, tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)
    import onnxruntime

    out = tmp_path / "generator.onnx"
    report = json.loads(invoke("export", str(run), "--format", "onnx", "--out", str(out), "--no-ema", "--json")
                        .stdout)
    assert report["ema"] is False and report["dynamic"] and report["checked_with"] == "onnxruntime"
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert json.loads(session.get_modelmeta().custom_metadata_map["cgan_kit.json"])["multiple"] == 32
    for shape in [(1, 3, 32, 32), (2, 3, 96, 64)]:
        x = random_input(shape)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            assert (got - rebuilt_generator(run)(x)).abs().max() <= 1e-4


def test_onnx_without_its_extra_names_it(run, tmp_path, monkeypatch):
    from cgan_kit.inference import export

    monkeypatch.setattr(export, "_importable", lambda name: False)
    with pytest.raises(CganError, match=r"pip install 'cgan-kit\[export\]'"):
        export.export(run, "onnx", tmp_path / "g.onnx")
    assert not list(tmp_path.iterdir())


def test_export_errors_are_one_line(run, tmp_path):
    one_error(invoke("export", str(run), "--format", "torchscript", "--out", str(tmp_path / "g.pt")),
              "replaced by pt2", "torch.export.load")
    one_error(invoke("export", str(run), "--format", "tflite", "--out", str(tmp_path / "g")), "safetensors, pt2, onnx")
    one_error(invoke("export", str(run), "--format", "pt2", "--out", str(tmp_path / "no" / "g.pt2")), "does not exist")
    one_error(invoke("export", str(tmp_path / "missing"), "--format", "pt2", "--out", str(tmp_path / "g.pt2")),
              "does not exist")
    one_error(invoke("export", str(run), "--format", "pt2", "--out", str(run / "checkpoints" / "best.safetensors")),
              "input of this command")
    assert not list(tmp_path.iterdir())


def test_an_export_that_differs_from_pytorch_is_refused(run, tmp_path, monkeypatch):
    from cgan_kit.inference import export

    real = export.GraphFile.__call__
    monkeypatch.setattr(export.GraphFile, "__call__", lambda self, x: real(self, x) + 1e-3)
    with pytest.raises(CganError, match="differs from PyTorch"):
        export.export(run, "pt2", tmp_path / "g.pt2")
    assert not list(tmp_path.iterdir())


def test_eval_of_a_folder_whose_directions_do_not_fit_its_data_is_one_line(model, tmp_path):
    for change, fragments in ((lambda d: d.update(source="photo"), ['reads "photo" from the data', "does not fit"]),
                              (lambda d: d.update(in_channels=1), ["do not belong together"])):
        folder = tmp_path / f"model{len(list(tmp_path.iterdir()))}"
        shutil.copytree(model, folder)
        _config(lambda c: change(c["directions"]["AtoB"]))(folder)
        one_error(invoke("eval", str(folder), "--no-fid"), *fragments)


def test_a_generator_with_spectral_norm_exports_its_normalized_weights(tmp_path):
    """Spectral norm is a stabilizer, not part of the architecture: the folder holds the weights it
    computes, and the bare generator built from config.json gives the run's outputs."""
    recipe = tmp_path / "sn.toml"
    recipe.write_text(TINY_RECIPE.replace("steps = 6", "steps = 2") + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n'
                      '\n[[stabilizers]]\ntype = "spectral_norm"\ntarget = "both"\n')
    cgan("run", str(recipe), check=True, env={"OMP_NUM_THREADS": "1"})
    run_folder, folder = tmp_path / "runs" / "sn", tmp_path / "sn-model"
    report = json.loads(cgan("export", str(run_folder), "--format", "safetensors", "--out", str(folder), "--json",
                             check=True).stdout)
    assert report["max_abs_diff"] == 0
    from safetensors.torch import load_file

    assert not [key for key in load_file(str(folder / "model.safetensors")) if "parametrizations" in key]
    x = random_input((1, 3, 32, 32))
    assert torch.allclose(cgan_kit.load(folder).generator(x), cgan_kit.load(run_folder).generator(x), atol=1e-6)


def test_an_export_says_when_its_config_keeps_a_path_of_this_machine(model, tmp_path):
    assert "note:" not in cgan("export", str(model), "--format", "safetensors", "--out", str(tmp_path / "again"),
                               check=True).stderr  # synthetic data: no root to reveal
    local = tmp_path / "local"
    shutil.copytree(model, local)
    _config(lambda c: c["data"].update(root=str(tmp_path / "data" / "facades")))(local)
    result = cgan("export", str(local), "--format", "safetensors", "--out", str(tmp_path / "shared"), check=True)
    assert f"note: config.json keeps data.root '{tmp_path / 'data' / 'facades'}'" in result.stderr
    assert "--data ROOT" in result.stderr
