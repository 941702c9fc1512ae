"""``cgan export``: a trained model to share (safetensors), or its generator alone as a graph
(torch.export's .pt2, or ONNX), every file checked against PyTorch before it is kept.

- ``safetensors``: a model folder (``model_folder``): model.safetensors (the generators' weights,
  EMA where the run has them), config.json (architecture, preprocessing, provenance) and README.md,
  which ``translate``, ``eval``, ``export`` and ``cgan_kit.load`` take without the run folder.
- ``pt2`` and ``onnx``: the generator of one direction as a graph that takes (N, C, H, W) images in
  [-1, 1] and returns (N, C', H, W) in [-1, 1]. A generator that says its size multiple (an int
  ``stride`` attribute: the U-Net's 2**depth, the ResNet's 2**downsamplings) is exported for
  every batch size and every height and width that are multiples of it (from the smallest one it
  runs at); otherwise, or with ``dynamic=False``, or when ``--size`` is no multiple, for one image
  of the export size only. The rule is in the report and in the file's metadata.

Before a file is kept it is loaded back (a model folder through the same checked loader as
``cgan translate``, .pt2 with torch.export.load, ONNX with onnxruntime) and run on fresh random
inputs next to the PyTorch generator (at the export size, and at a second size and batch when the
graph is dynamic): a largest absolute difference above 1e-4 is an error and nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cgan_kit import __version__
from cgan_kit.errors import CganError, one_line
from cgan_kit.inference import model_folder
from cgan_kit.safe_output import check_target

FORMATS = ("safetensors", "pt2", "onnx")
TOLERANCE = 1e-4
COMPARE_SIDE = 512  # pixels: a model folder is checked at its training size, or this much of it
EXPORT_EXTRA = "pip install 'cgan-kit[export]'"
META_NAME = "cgan_kit.json"  # the .pt2 archive's extra file, and the ONNX metadata key, holding SizeRule


@dataclass(frozen=True)
class SizeRule:
    """The inputs an exported graph takes: any batch and multiples of ``multiple`` from
    ``minimum`` (dynamic), or one (1, C, H, W) size (fixed)."""

    channels: int
    size: tuple[int, int]          # the export size (fixed: the only one)
    multiple: int | None = None    # dynamic: height and width are multiples of this
    minimum: int | None = None     # dynamic: from this side on

    @property
    def dynamic(self) -> bool:
        return self.multiple is not None

    def describe(self) -> str:
        if self.dynamic:
            return (f"(N, {self.channels}, H, W) with H and W multiples of {self.multiple} from {self.minimum} "
                    "(pad other sizes)")
        return f"(1, {self.channels}, {self.size[0]}, {self.size[1]}) only (a fixed size)"

    def check(self, shape: tuple[int, ...], name: str) -> None:
        """One line when an input of ``shape`` is not one the graph takes."""
        if len(shape) == 4 and shape[1] == self.channels:
            height, width = shape[2:]
            if self.dynamic and all(side % self.multiple == 0 and side >= self.minimum for side in (height, width)):
                return
            if not self.dynamic and tuple(shape) == (1, self.channels, *self.size):
                return
        raise CganError(f"{name} takes {self.describe()}, not {tuple(shape)}; export again with --size H W for "
                        "another size")

    def to_json(self) -> dict[str, Any]:
        return {"channels": self.channels, "size": list(self.size), "multiple": self.multiple,
                "minimum": self.minimum, "value_range": model_folder.VALUE_RANGE, "accepts": self.describe(),
                "cgan_kit_version": __version__}

    @classmethod
    def from_json(cls, raw: Any, name: str) -> SizeRule:
        try:
            return cls(int(raw["channels"]), (int(raw["size"][0]), int(raw["size"][1])),
                       None if raw["multiple"] is None else int(raw["multiple"]),
                       None if raw["minimum"] is None else int(raw["minimum"]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CganError(f"{name}: its {META_NAME} metadata is damaged; export it again") from None


def _random_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _quiet():
    """Silence the exporters' progress prints and tracer warnings (shape arithmetic is expected)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    for name in ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes"):
        logger = logging.getLogger(name)  # "torchvision is not installed. Skipping torchvision::nms" and the like
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def size_multiple(generator: torch.nn.Module) -> int | None:
    """The multiple a generator's height and width can vary by in an exported graph: its int
    ``stride`` (total downsampling), or None where it does not say."""
    stride = getattr(generator, "stride", None)
    return stride if isinstance(stride, int) and not isinstance(stride, bool) and stride >= 1 else None


# ---------------------------------------------------------------------------------------------
# Tracing with torch.export


def _size_oblivious():
    """torch.export without assuming that a dynamic side is never 1 (the U-Net's innermost map is
    1x1 at its stride), where this torch has the switch."""
    try:
        from torch.fx.experimental import _config

        return _config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError, TypeError):
        return contextlib.nullcontext()


def trace(generator: torch.nn.Module, channels: int, size: tuple[int, int], dynamic: bool
          ) -> tuple[Any, SizeRule, str | None]:
    """The generator as a torch.export program: (program, its size rule, why it is fixed or None)."""
    height, width = size
    multiple = size_multiple(generator) if dynamic else None
    reason = None
    if dynamic and multiple is None:
        reason = "the generator does not say its size multiple (no int stride attribute)"
    elif dynamic and (height % multiple or width % multiple):
        reason = f"--size {height} {width} is no multiple of the generator's {multiple}"
        multiple = None
    if multiple is not None:
        Dim = torch.export.Dim
        shapes = {"x": {0: Dim("batch", min=1), 2: multiple * Dim("height", min=1),
                        3: multiple * Dim("width", min=1)}}
        # Example sides of 2 and 3 multiples and a batch of 5: no side is 1 and no two are equal, so
        # torch.export ties none of them to a constant or to each other.
        example = _random_input((5, channels, 2 * multiple, 3 * multiple), 0)
        try:
            with _quiet(), _size_oblivious():
                program = torch.export.export(generator, (example,), dynamic_shapes=shapes)
            minimum = _smallest(program, generator, channels, multiple)
            if minimum is not None and min(height, width) >= minimum:
                return program, SizeRule(channels, size, multiple, minimum), None
            reason = (f"the dynamic graph runs from {minimum} pixels on, more than --size {height} {width}"
                      if minimum is not None else "the dynamic graph runs at no small size")
        except Exception as error:  # noqa: BLE001 - torch.export's many failure types: fall back to a fixed size
            reason = f"torch.export could not make the sizes dynamic ({one_line(error, 200)})"
    example = _random_input((1, channels, height, width), 0)
    try:
        with _quiet():
            program = torch.export.export(generator, (example,))
    except Exception as error:  # noqa: BLE001 - a network torch.export cannot express
        raise CganError(f"torch.export failed on this generator ({one_line(error)})") from None
    return program, SizeRule(channels, size), reason


def _smallest(program: Any, generator: torch.nn.Module, channels: int, multiple: int) -> int | None:
    """The smallest side (one or two multiples) the dynamic graph runs at like the generator."""
    module = program.module()
    for side in (multiple, 2 * multiple):
        x = _random_input((1, channels, side, side), 2)
        try:
            with torch.no_grad(), _quiet():
                got = module(x)
        except Exception:  # noqa: BLE001 - a guard of the graph: too small
            continue
        with torch.no_grad():
            expected = generator(x)
        if got.shape == expected.shape and (got - expected).abs().max().item() <= TOLERANCE:
            return side
    return None


# ---------------------------------------------------------------------------------------------
# Writing and running the graph files


def _save_pt2(program: Any, rule: SizeRule, tmp: Path) -> None:
    torch.export.save(program, str(tmp), extra_files={META_NAME: json.dumps(rule.to_json())})


def _save_onnx(program: Any, rule: SizeRule, tmp: Path) -> None:
    import onnx

    try:
        with _quiet():
            onnx_program = torch.onnx.export(program, dynamo=True, input_names=["input"], output_names=["output"])
            onnx_program.save(str(tmp), external_data=False)
    except Exception as error:  # noqa: BLE001 - the exporter's many failure types: a network it cannot express
        raise CganError(f"the ONNX exporter failed on this generator ({one_line(error)}); try --format pt2") from None
    model = onnx.load(str(tmp))
    if rule.dynamic:  # name the free dimensions as a reader expects them
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            for index, name in ((0, "batch"), (2, "height"), (3, "width")):
                if index < len(dims):
                    dims[index].dim_param = name
    onnx.helper.set_model_props(model, {META_NAME: json.dumps(rule.to_json())})
    model.doc_string = f"cgan-kit generator: input {rule.describe()} in [-1, 1]; output the same size in [-1, 1]"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))


class GraphFile:
    """An exported .pt2 or .onnx file, run as cgan-kit runs it (to check an export): inputs of
    other sizes than its size rule are refused in one line before they reach the runtime. Only for
    files cgan-kit wrote: torch.export.load trusts the file it reads."""

    def __init__(self, path: str | Path, fmt: str | None = None):
        self.path = Path(path)
        self.format = fmt or ("onnx" if self.path.suffix == ".onnx" else "pt2")
        if self.format == "pt2":
            extra = {META_NAME: ""}
            try:
                with _quiet():
                    self.program = torch.export.load(str(self.path), extra_files=extra)
            except Exception as error:  # noqa: BLE001 - whatever the file is, it is no program
                raise CganError(f"{self.path} is no readable .pt2 program ({one_line(error, 200)})") from None
            self.runner = self.program.module()
            raw = extra[META_NAME]
        else:
            import onnx
            import onnxruntime

            try:
                model = onnx.load(str(self.path), load_external_data=False)
                self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            except Exception as error:  # noqa: BLE001 - whatever the file is, it is no ONNX model
                raise CganError(f"{self.path} is no readable ONNX model ({one_line(error, 200)})") from None
            raw = {prop.key: prop.value for prop in model.metadata_props}.get(META_NAME, "")
        try:
            self.rule = SizeRule.from_json(json.loads(raw), str(self.path))
        except (ValueError, RecursionError):
            raise CganError(f"{self.path} has no {META_NAME} metadata: it was not exported by cgan-kit") from None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rule.check(tuple(x.shape), str(self.path))
        try:
            if self.format == "pt2":
                with _quiet():
                    return self.runner(x)
            name = self.session.get_inputs()[0].name
            return torch.from_numpy(self.session.run(None, {name: x.numpy()})[0])
        except Exception as error:  # noqa: BLE001 - the runtime's own failure, in one line
            raise CganError(f"{self.path} failed on an input of shape {tuple(x.shape)} ({one_line(error, 200)})") \
                from None


# ---------------------------------------------------------------------------------------------
# The command


def export(target: str | Path, fmt: str, out: str | Path, size: tuple[int, int] | None = None,
           ema: bool | None = None, which: str = "latest", direction: str | None = None,
           dynamic: bool = True) -> dict[str, Any]:
    """Export a checkpoint's, a run's (checkpoint ``which``: latest, best or a step) or a model
    folder's generator(s); returns a report."""
    from cgan_kit.inference.translate import load_generator, read_folders

    if fmt == "torchscript":
        raise CganError("--format torchscript was replaced by pt2 (torch.export; PyTorch deprecates TorchScript): "
                        "use --format pt2 and load the file with torch.export.load")
    if fmt not in FORMATS:
        raise CganError(f'--format: "{fmt}" is not a format; use {", ".join(FORMATS)}')
    if fmt == "onnx":  # before loading anything
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
        if missing:
            raise CganError(f"ONNX export needs {' and '.join(missing)}, which "
                            f"{'is' if len(missing) == 1 else 'are'} not installed: {EXPORT_EXTRA}")
    out = Path(out)
    if fmt == "safetensors":
        if out.suffix in (".safetensors", ".json"):
            raise CganError(f"--out {out}: name the folder to write the model into (e.g. {out.with_suffix('')}); "
                            f"it will hold {model_folder.WEIGHTS_FILE} and {model_folder.CONFIG_FILE}")
        if size is not None or not dynamic:
            option = "--size" if size is not None else "--fixed-size"
            raise CganError(f"{option}: a safetensors model runs at any size; {option} is for --format pt2 and onnx")
        if out.exists() and not (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
            raise CganError(f"--out {out}: it exists and is not an empty folder; name a new folder for the model "
                            f"({model_folder.WEIGHTS_FILE}, {model_folder.CONFIG_FILE} and {model_folder.CARD_FILE})")
    elif out.is_dir():
        raise CganError(f"--out {out} is a folder; name the file to write (e.g. {out / ('generator.' + fmt)})")
    if not out.parent.is_dir():
        raise CganError(f"--out {out}: the folder {out.parent} does not exist")
    loaded = load_generator(target, ema=ema, device="cpu", which=which, direction=direction)
    report: dict[str, Any] = {"format": fmt, "out": str(out), "checkpoint": str(loaded.path), "step": loaded.step,
                              "ema": loaded.ema}
    if fmt == "safetensors":
        return {**report, **_export_model(loaded, out, direction)}
    protected = [loaded.path] + [p for folder in read_folders(loaded.path) if folder.is_dir()
                                 for p in folder.iterdir() if p.is_file()]
    check_target(out, protected, "--out")
    generator = loaded.generator.eval()
    height, width = size or loaded.size
    if height < 1 or width < 1:
        raise CganError(f"--size {height} {width}: sides must be at least 1")
    program, rule, fixed_because = trace(generator, loaded.in_channels, (height, width), dynamic)
    shapes = [(1, loaded.in_channels, height, width)]
    if rule.dynamic:
        shapes.append((2, loaded.in_channels, height, width + rule.multiple))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{out.suffix}")
    try:
        tmp.unlink(missing_ok=True)
        (_save_pt2 if fmt == "pt2" else _save_onnx)(program, rule, tmp)
        difference = _compare(GraphFile(tmp, fmt), generator, shapes, f"the exported {fmt} file")
        os.replace(tmp, out)
    except OSError as error:
        raise CganError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)
    with torch.no_grad():
        output_shape = list(generator(_random_input(shapes[0], 1)).shape)
    return {**report, "direction": loaded.direction, "input_shape": list(shapes[0]), "output_shape": output_shape,
            "dynamic": rule.dynamic, "accepts": rule.describe(), "size_multiple": rule.multiple,
            "min_size": rule.minimum, "fixed_because": fixed_because if dynamic else None,
            "checked_shapes": [list(shape) for shape in shapes], "max_abs_diff": difference,
            "checked_with": "torch.export.load" if fmt == "pt2" else "onnxruntime", "bytes": out.stat().st_size}


def bare_weights(generator: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A generator's weights as its architecture alone holds them: parametrizations such as spectral
    norm (a stabilizer, not part of the model) computed into plain weights, as evaluation computes
    them. The generator itself is left as it was (removing a parametrization would change its class,
    which its copies share)."""
    from torch.nn.utils import parametrize

    state = generator.state_dict()
    parametrized = {name: module for name, module in generator.named_modules() if parametrize.is_parametrized(module)}
    if not parametrized:
        return state
    bare = {key: value for key, value in state.items()
            if ".parametrizations." not in f".{key}"}  # the originals and their estimates (spectral norm's u, v)
    training = generator.training
    generator.eval()  # eval: spectral norm divides by its stored estimate, no power iteration
    try:
        with torch.no_grad():
            for prefix, module in parametrized.items():
                for tensor_name in module.parametrizations:
                    bare[f"{prefix}.{tensor_name}" if prefix else tensor_name] = getattr(module, tensor_name).clone()
    finally:
        generator.train(training)
    return bare


def _compare(run: Any, generator: torch.nn.Module, shapes: list[tuple[int, ...]], what: str) -> float:
    """The largest difference between ``run`` and the generator on a random input of each shape;
    above TOLERANCE (or another output shape) is an error."""
    largest = 0.0
    for seed, shape in enumerate(shapes, start=1):
        try:
            x = _random_input(shape, seed)
            with torch.no_grad():
                expected, got = generator(x).float(), run(x)
        except (MemoryError, RuntimeError) as error:  # torch's allocators say "can't allocate memory"
            if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
                raise
            raise CganError(f"checking {what} on an input of shape {list(shape)}: out of memory ({one_line(error)}); "
                            "choose a smaller --size") from None
        if tuple(got.shape) != tuple(expected.shape):
            raise CganError(f"{what} gives an output of shape {list(got.shape)} for {list(shape)}, PyTorch "
                            f"{list(expected.shape)}; the export is wrong and was not written")
        difference = (got.float() - expected).abs().max().item()
        if not difference <= TOLERANCE:
            raise CganError(f"{what} differs from PyTorch by up to {difference:.3g} (more than {TOLERANCE:g}) on a "
                            f"random input of shape {list(shape)}; not written")
        largest = max(largest, difference)
    return largest


def _export_model(loaded: Any, out: Path, direction: str | None) -> dict[str, Any]:
    """The model folder: written to a temporary folder, loaded back through the checked loader and
    compared with the generators in memory, then renamed to ``out``."""
    from cgan_kit.inference.translate import load_generator

    spec = loaded.spec.only(direction)
    tensors = {f"{d.generator}.{key}": value for d in spec.directions.values()
               for key, value in bare_weights(loaded.networks[d.generator]).items()}
    staging = out.with_name(f".{out.name}.{os.getpid()}.check")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model_folder.write(staging, spec, tensors)
        largest = 0.0
        # At the training size, or a part of it: the generators take any size, and a config may name a large one.
        height, width = (min(side, COMPARE_SIDE) for side in spec.size)
        for name, chosen in spec.directions.items():
            again = load_generator(staging, device="cpu", direction=name)
            shape = (1, chosen.in_channels, height, width)
            largest = max(largest, _compare(again.generator, loaded.networks[chosen.generator], [shape],
                                            f"the exported generator {chosen.generator}"))
        try:
            os.replace(staging, out)
        except OSError as error:
            raise CganError(f"cannot write the model folder {out}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(path.name for path in out.iterdir())
    root = spec.data.get("root")
    local = isinstance(root, str) and Path(root).is_absolute()
    notes = [f"config.json keeps data.root {root!r}, a path of this machine: where the folder is shared, "
             "`cgan eval MODEL --data ROOT` names the data there"] if local else []
    return {"directions": list(spec.directions), "notes": notes, "generators": {role: table.get("type") for role, table
                                                                 in spec.generators.items()},
            "size": list(spec.size), "files": files, "max_abs_diff": largest, "checked_with": "cgan_kit.load",
            "bytes": sum((out / name).stat().st_size for name in files)}
