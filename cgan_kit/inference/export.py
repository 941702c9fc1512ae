"""``cgan export``: a checkpoint's generator alone, as TorchScript or ONNX, checked against PyTorch.

The exported graph takes (1, in_channels, H, W) images in [-1, 1] and returns (1, out_channels,
H, W) in [-1, 1], at the fixed size it was exported for (``--size H W``; by default the recipe's
crop size); it is the evaluation-mode generator, using the EMA weights when the checkpoint has
them. Before the file is kept, it is loaded back (TorchScript with torch.jit.load, ONNX with
onnxruntime) and run on a fresh random input next to the PyTorch generator: the largest absolute
difference is reported and a difference above 1e-4 is an error (the file is then not written).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from cgan_kit.errors import CganError
from cgan_kit.safe_output import check_target

Format = Literal["torchscript", "onnx"]
TOLERANCE = 1e-4
EXPORT_EXTRA = "pip install 'cgan-kit[export]'"


def default_size(recipe: Any) -> tuple[int, int]:
    """The size the recipe trains at: its data's crop_size (or size), else 256."""
    for key in ("crop_size", "size"):
        value = recipe.data.args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, value
    return 256, 256


def _random_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _quiet():
    """Silence the exporters' progress prints and tracer warnings (shape arithmetic is expected)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    logger = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping torchvision::nms" and the like
    level = logger.level
    logger.setLevel(logging.ERROR)
    stack.callback(logger.setLevel, level)
    return stack


def _torchscript(generator: torch.nn.Module, example: torch.Tensor, tmp: Path,
                 check: torch.Tensor) -> tuple[torch.Tensor, str]:
    with _quiet():
        traced = torch.jit.trace(generator, example, check_trace=False)
        torch.jit.save(traced, str(tmp))
        reloaded = torch.jit.load(str(tmp), map_location="cpu")
        with torch.no_grad():
            return reloaded(check), "torch.jit.load"


def _onnx(generator: torch.nn.Module, example: torch.Tensor, tmp: Path,
          check: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    import onnx

    try:
        with _quiet():
            program = torch.onnx.export(generator, (example,), dynamo=True, input_names=["input"],
                                        output_names=["output"])
            program.save(str(tmp), external_data=False)
    except Exception as error:  # the exporter's many failure types: a network it cannot express
        raise CganError(f"the ONNX exporter failed on this generator ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:300]}); try --format torchscript") from None
    onnx.checker.check_model(str(tmp))
    if not _importable("onnxruntime"):
        return None, "onnx.checker only (onnxruntime is not installed)"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: check.numpy()})[0]), "onnxruntime"


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def export(target: str | Path, fmt: Format, out: str | Path, size: tuple[int, int] | None = None,
           ema: bool | None = None, which: str = "latest", direction: str | None = None) -> dict[str, Any]:
    """Export a checkpoint's (or a run's checkpoint ``which``: latest, best or a step) generator;
    returns a report."""
    from cgan_kit.inference.translate import load_generator, read_folders

    if fmt not in ("torchscript", "onnx"):
        raise CganError(f'--format: "{fmt}" is not a format; use torchscript or onnx')
    if fmt == "onnx":  # before loading anything
        missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
        if missing:
            raise CganError(f"ONNX export needs {' and '.join(missing)}, which "
                            f"{'is' if len(missing) == 1 else 'are'} not installed: {EXPORT_EXTRA}")
    out = Path(out)
    if out.is_dir():
        suffix = "pt" if fmt == "torchscript" else "onnx"
        raise CganError(f"--out {out} is a folder; name the file to write (e.g. {out / ('generator.' + suffix)})")
    if not out.parent.is_dir():
        raise CganError(f"--out {out}: the folder {out.parent} does not exist")
    loaded = load_generator(target, ema=ema, device="cpu", which=which, direction=direction)
    protected = [loaded.path] + [p for folder in read_folders(loaded.path) if folder.is_dir()
                                 for p in folder.iterdir() if p.is_file()]
    check_target(out, protected, "--out")
    generator = loaded.generator.eval()
    height, width = size or default_size(loaded.recipe)
    if height < 1 or width < 1:
        raise CganError(f"--size {height} {width}: sides must be at least 1")
    shape = (1, loaded.in_channels, height, width)
    example, check = _random_input(shape, 0), _random_input(shape, 1)
    with torch.no_grad():
        expected = generator(check).float()
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        if fmt == "torchscript":
            got, checked_with = _torchscript(generator, example, tmp, check)
        else:
            got, checked_with = _onnx(generator, example, tmp, check)
        if got is None:
            difference = None
        else:
            if tuple(got.shape) != tuple(expected.shape):
                raise CganError(f"the exported generator's output has shape {list(got.shape)}, PyTorch's "
                                f"{list(expected.shape)}; the export is wrong and was not written")
            difference = (got.float() - expected).abs().max().item()
            if not difference <= TOLERANCE:
                raise CganError(f"the exported generator differs from PyTorch by up to {difference:.3g} (more than "
                                f"{TOLERANCE:g}) on a random {height}x{width} input; not written")
        os.replace(tmp, out)
    except OSError as error:
        raise CganError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"format": fmt, "out": str(out), "checkpoint": str(loaded.path), "step": loaded.step, "ema": loaded.ema,
            "input_shape": list(shape), "output_shape": list(expected.shape), "max_abs_diff": difference,
            "checked_with": checked_with, "bytes": out.stat().st_size}
