"""`cgan export`: the generator alone as TorchScript or ONNX, equal to the PyTorch generator."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from cgan_kit.errors import CganError
from conftest import cgan
from test_translate import invoke, one_error, rebuilt_generator, trained_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory)


def random_input(shape, seed: int = 123) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_torchscript_export_equals_the_ema_generator(run, tmp_path):
    out = tmp_path / "generator.pt"
    report = json.loads(cgan("export", str(run), "--format", "torchscript", "--out", str(out), "--json",
                             check=True).stdout)
    assert report["ema"] is True and report["input_shape"] == [1, 3, 32, 32]  # the recipe's size by default
    assert report["max_abs_diff"] <= 1e-4 and report["checked_with"] == "torch.jit.load"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.pt"]  # no temporary file left
    # Independently: the saved file against the EMA weights rebuilt from the checkpoint.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ deprecates TorchScript, still supported
        exported = torch.jit.load(str(out))
    x = random_input((1, 3, 32, 32))
    with torch.no_grad():
        assert (exported(x) - rebuilt_generator(run, "stabilizers.0.generator")(x)).abs().max() <= 1e-4


def test_onnx_export_runs_in_onnxruntime_like_pytorch(run, tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)
    import onnxruntime

    out = tmp_path / "generator.onnx"
    report = json.loads(cgan("export", str(run), "--format", "onnx", "--out", str(out), "--size", "40", "24",
                             "--no-ema", "--json", check=True).stdout)
    assert report["input_shape"] == [1, 3, 40, 24] and report["ema"] is False
    assert report["max_abs_diff"] <= 1e-4 and report["checked_with"] == "onnxruntime"
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = random_input((1, 3, 40, 24))
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        assert (got - rebuilt_generator(run)(x)).abs().max() <= 1e-4


def test_onnx_without_its_extra_names_it(run, tmp_path, monkeypatch):
    from cgan_kit.inference import export

    monkeypatch.setattr(export, "_importable", lambda name: False)
    with pytest.raises(CganError, match=r"pip install 'cgan-kit\[export\]'"):
        export.export(run, "onnx", tmp_path / "g.onnx")
    assert not list(tmp_path.iterdir())


def test_export_errors_are_one_line(run, tmp_path):
    one_error(invoke("export", str(run), "--format", "torchscript", "--out", str(tmp_path / "no" / "g.pt")),
              "does not exist")
    one_error(invoke("export", str(tmp_path / "missing"), "--format", "torchscript", "--out", str(tmp_path / "g.pt")),
              "does not exist")


def test_an_export_that_differs_from_pytorch_is_refused(run, tmp_path, monkeypatch):
    from cgan_kit.inference import export

    real = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: (lambda x: real(*a, **k)(x) + 1e-3))
    with pytest.raises(CganError, match="differs from PyTorch"):
        export.export(run, "torchscript", tmp_path / "g.pt")
    assert not list(tmp_path.iterdir())
