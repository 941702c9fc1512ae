"""Model folders: a trained model to share, as ``cgan export --format safetensors`` writes it.

A folder that a model hub takes as it is::

    model.safetensors   the generators' weights alone (the EMA copy where the run had one), each
                        tensor named <role>.<parameter> (pix2pix: generator.*, CycleGAN: a_to_b.*
                        and b_to_a.*); its metadata names the format and the cgan-kit version
    config.json         what rebuilds them: the method's directions (which generator, the batch
                        keys, the channels), each generator's recipe table, the preprocessing (the
                        size trained at, values in [-1, 1]), the recipe's [data] table (for
                        ``cgan eval``) and where the weights came from (run, step, EMA)
    README.md           a model card for people

Generators are rebuilt through the registry from their tables, so a model whose generator comes
from a third-party plugin needs that plugin installed. Every field of config.json is checked
before anything is built, and every tensor against the generators built from it before any is
loaded: a damaged or hostile folder is one line naming the file and the key. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgan_kit import __version__
from cgan_kit.config.build import INFERENCE_BYTES_PER_PARAMETER, build, elements, on_meta
from cgan_kit.config.recipe import Component, validate_component
from cgan_kit.errors import CganError, RecipeError
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import checkpoint
from cgan_kit.runs.folder import RECIPE_FILE
from cgan_kit.runs.validation import is_count, printable

FORMAT = "cgan-kit model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; more is no config
MAX_SIDE = 16384  # pixels, the largest training size a config may name (the datasets' crop bound)
VALUE_RANGE = [-1.0, 1.0]


@dataclass(frozen=True)
class DirectionSpec:
    """One way the model translates: the generator (role) that does it, the batch keys of its
    inputs and targets in the data, and its channels."""

    generator: str
    source: str
    target: str
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class ModelSpec:
    """What config.json says, checked."""

    method: dict[str, Any]            # the recipe's [method] table (type and arguments)
    measures: str                     # "paired" or "unpaired", as the method measures its outputs
    directions: dict[str, DirectionSpec]
    generators: dict[str, dict[str, Any]]  # role -> the generator's recipe table
    data: dict[str, Any]              # the recipe's [data] table
    size: tuple[int, int]             # (height, width) the model was trained at
    provenance: dict[str, Any] = field(default_factory=dict)  # run, checkpoint, step, ema, versions
    version: str = __version__        # the cgan-kit that wrote it

    @property
    def step(self) -> int:
        return int(self.provenance.get("step", 0))

    @property
    def ema(self) -> bool:
        return bool(self.provenance.get("ema", False))

    def only(self, direction: str | None) -> ModelSpec:
        """The spec of one direction and its generator alone (all of them for None)."""
        if direction is None:
            return self
        chosen = self.directions[direction]
        return ModelSpec(self.method, self.measures, {direction: chosen},
                         {chosen.generator: self.generators[chosen.generator]}, self.data, self.size,
                         self.provenance, self.version)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cgan_kit_version": self.version,
            "method": self.method, "measures": self.measures,
            "directions": {name: vars(d).copy() for name, d in self.directions.items()},
            "generators": self.generators,
            "preprocessing": {"size": list(self.size), "value_range": VALUE_RANGE, "layout": "NCHW",
                              "note": "the size trained at; images of any size run. Inputs in [0, 1] are scaled "
                                      "to [-1, 1] (x * 2 - 1), outputs back ((y + 1) / 2)"},
            "data": self.data,
            "provenance": self.provenance,
        }


def trained_size(data_args: dict[str, Any]) -> tuple[int, int]:
    """The size a recipe's data trains at: its crop_size (or size), else 256."""
    for key in ("crop_size", "size"):
        value = data_args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, value
    return 256, 256


def spec_of(recipe: Any, method: Any, provenance: dict[str, Any]) -> ModelSpec:
    """The spec of every direction of a checkpoint's method, from its validated recipe."""
    cls = type(method)
    in_channels, out_channels = int(recipe.data.args["in_channels"]), int(recipe.data.args["out_channels"])
    directions, generators = {}, {}
    for name, direction in cls.directions.items():
        channels = method.channels(direction.role, in_channels, out_channels)
        directions[name] = DirectionSpec(direction.role, direction.source, direction.target,
                                         int(channels["in_channels"]), int(channels["out_channels"]))
        generators[direction.role] = recipe.networks[cls.networks[direction.role].table].to_toml()
    return ModelSpec(recipe.method.to_toml(), cls.measures, directions, generators, recipe.data.to_toml(),
                     trained_size(recipe.data.args), provenance)


# ---------------------------------------------------------------------------------------------
# Finding and reading a model folder


def find(target: str | Path) -> Path | None:
    """The model.safetensors a target names (a model folder, its config.json or its weights), or
    None when it is something else (a run folder, a checkpoint)."""
    path = Path(target)
    try:
        if path.is_dir():
            if any((path / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE)) \
                    and not (path / RECIPE_FILE).exists():
                return path / WEIGHTS_FILE
            return None
        if path.name == CONFIG_FILE and path.is_file():
            return path.with_name(WEIGHTS_FILE)
        if path.suffix == ".safetensors" and path.is_file():
            if (path.name == WEIGHTS_FILE and path.with_name(CONFIG_FILE).is_file()) or _file_format(path) == FORMAT:
                return path
    except OSError:
        return None
    return None


def _file_format(path: Path) -> str | None:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None


class Bad(CganError):
    """A field of a model folder's file that cannot be what it claims."""

    def __init__(self, path: Path, key: str, problem: str):
        super().__init__(printable(f"{path}: {key} {problem}; the model folder is damaged or was not written by "
                                   "`cgan export --format safetensors` (export it again)"))


def read_config(path: Path) -> ModelSpec:
    """config.json, every field checked by type and bounds (the generator tables by their plugin)."""
    try:
        # One opened file checked, then read: a FIFO (opened without waiting for a writer) or a device
        # is refused before a byte is read, and nothing can swap the file in between.
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise CganError(f"{path} is not a plain file; the model folder is damaged")
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise CganError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes, no model config is as large; the model "
                            "folder is damaged")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise CganError(f"{path} does not exist; a model folder holds {CONFIG_FILE} beside {WEIGHTS_FILE} "
                        "(written by `cgan export --format safetensors`)") from None
    except UnicodeDecodeError as error:
        raise CganError(f"{path}: not UTF-8 text (byte {error.start}); the model folder is damaged") from None
    except OSError as error:
        raise CganError(f"{path} cannot be read ({error.strerror or error})") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError, as are over-long integers
        detail = " ".join(str(error).split())[:200] if not isinstance(error, RecursionError) else "nested too deeply"
        raise CganError(f"{path}: not valid JSON ({detail}); the model folder is damaged") from None
    if not isinstance(raw, dict):
        raise Bad(path, "the document", "is not a JSON object")
    if raw.get("format") != FORMAT:
        raise Bad(path, "key format", f"is {_shown(raw.get('format'))}, not {json.dumps(FORMAT)}")
    version = raw.get("format_version")
    if not is_count(version) or version < 1:
        raise Bad(path, "key format_version", f"is {_shown(version)}, not a version number")
    if version > FORMAT_VERSION:
        raise CganError(f"{path} is a model of format {version}, newer than this cgan-kit reads ({FORMAT_VERSION}); "
                        "upgrade cgan-kit")
    written_by = raw.get("cgan_kit_version", "?")
    method, data = _table(path, raw, "method"), _table(path, raw, "data")
    measures = raw.get("measures")
    if measures not in ("paired", "unpaired"):
        raise Bad(path, "key measures", f'is {_shown(measures)}, not "paired" or "unpaired"')
    generators = raw.get("generators")
    if not isinstance(generators, dict) or not generators:
        raise Bad(path, "key generators", f"is {_shown(generators)}, not an object of generator tables by role")
    for role, table in generators.items():
        if not _is_name(role):
            raise Bad(path, f"generators key {_shown(role)}", "is no role name (1 to 64 printable characters, "
                      "no dot)")
        _table(path, generators, role, f"generators.{role}")
    directions = _directions(path, raw.get("directions"), generators)
    size = _size(path, raw.get("preprocessing"))
    provenance = raw.get("provenance", {})
    if not isinstance(provenance, dict):
        raise Bad(path, "key provenance", f"is {_shown(provenance)}, not an object")
    if not is_count(provenance.get("step", 0)):
        raise Bad(path, "key provenance.step", f"is {_shown(provenance.get('step'))}, not a step number")
    if not isinstance(provenance.get("ema", False), bool):
        raise Bad(path, "key provenance.ema", f"is {_shown(provenance.get('ema'))}, not true or false")
    return ModelSpec(method, measures, directions, generators, data, size, provenance,
                     written_by if isinstance(written_by, str) else "?")


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _is_name(value: Any) -> bool:
    """A role, direction or batch key: 1 to 64 printable characters, no dot (a role prefixes its tensors)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() and "." not in value


def _table(path: Path, raw: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    table = raw.get(key)
    if not isinstance(table, dict) or not isinstance(table.get("type"), str):
        raise Bad(path, f"key {where or key}", f"is {_shown(table)}, not a table with a type (as in a recipe)")
    return table


def _directions(path: Path, raw: Any, generators: dict[str, Any]) -> dict[str, DirectionSpec]:
    if not isinstance(raw, dict) or not raw:
        raise Bad(path, "key directions", f"is {_shown(raw)}, not an object of directions by name")
    found = {}
    for name, item in raw.items():
        where = f"key directions.{name}"
        if not _is_name(name):
            raise Bad(path, f"directions key {_shown(name)}", "is no direction name (1 to 64 printable "
                      "characters, no dot)")
        if not isinstance(item, dict) or set(item) != {"generator", "source", "target", "in_channels", "out_channels"}:
            raise Bad(path, where, "is not {generator, source, target, in_channels, out_channels}")
        if item["generator"] not in generators:
            raise Bad(path, f"{where}.generator", f"is {_shown(item['generator'])}, which is not in generators")
        for key in ("source", "target"):
            if not _is_name(item[key]):
                raise Bad(path, f"{where}.{key}", f"is {_shown(item[key])}, not a batch key")
        for key in ("in_channels", "out_channels"):
            if not is_count(item[key]) or not 1 <= item[key] <= 4:
                raise Bad(path, f"{where}.{key}", f"is {_shown(item[key])}, not 1 to 4 (image channels)")
        found[name] = DirectionSpec(**item)
    unused = sorted(set(generators) - {d.generator for d in found.values()})
    if unused:
        raise Bad(path, f"key generators.{unused[0]}", "is the generator of no direction")
    return found


def _size(path: Path, raw: Any) -> tuple[int, int]:
    if not isinstance(raw, dict):
        raise Bad(path, "key preprocessing", f"is {_shown(raw)}, not an object")
    size = raw.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(is_count(s) and 1 <= s <= MAX_SIDE for s in size)):
        raise Bad(path, "key preprocessing.size", f"is {_shown(size)}, not [height, width]")
    if raw.get("value_range", VALUE_RANGE) != VALUE_RANGE:
        raise CganError(f"{path}: preprocessing.value_range is {_shown(raw.get('value_range'))}; this cgan-kit runs "
                        "models on values in [-1, 1] only")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------------------------
# Building the generators and loading their weights


def component(path: Path, table: dict[str, Any], where: str, kind: str) -> Component:
    """A table of config.json validated as the recipe's would be, in one line."""
    try:
        return validate_component(table, where, kind, str(path), plugins.registry())
    except RecipeError as error:
        first = error.problems[0]
        more = f" (and {len(error.problems) - 1} more problems)" if len(error.problems) > 1 else ""
        hint = (f"; this model needs the plugin that provides it: install it (`cgan list {kind}s` shows those "
                "installed)") if first.path.endswith(".type") and "unknown " in first.message else ""
        raise CganError(printable(f"{path}: {first}{more}{hint}")) from None


def build_generators(path: Path, spec: ModelSpec, device: torch.device) -> dict[str, nn.Module]:
    """Every generator of ``spec``, built from its table (refused when it would not fit ``device``)."""
    registry = plugins.registry()
    channels = {d.generator: d for d in spec.directions.values()}
    tables = {role: (component(path, table, f"generators.{role}", "generator"),
                     {"in_channels": channels[role].in_channels, "out_channels": channels[role].out_channels})
              for role, table in spec.generators.items()}
    _check_memory(path, registry, tables, device)
    built = {}
    for role, (spec_table, context) in tables.items():
        module = build(registry, spec_table, f"{path}: generators.{role}", **context)
        if not isinstance(module, nn.Module):
            raise CganError(f"{path}: generators.{role}: generator \"{spec_table.type}\" built a "
                            f"{type(module).__name__}, not a torch.nn.Module; its plugin is broken")
        built[role] = module
    return built


def _check_memory(path: Path, registry: Any, tables: dict[str, tuple[Component, dict[str, int]]],
                  device: torch.device) -> None:
    """Refuse generators whose weights alone, together, would not fit (counted on the meta device)."""
    from cgan_kit.device import memory_bytes

    available = memory_bytes(device)
    built = None if available is None else on_meta(
        lambda: {role: build(registry, table, f"generators.{role}", **context) for role, (table, context)
                 in tables.items()})
    if built is None:
        return
    counts, buffers = elements(built)
    needed = (sum(counts.values()) + buffers) * INFERENCE_BYTES_PER_PARAMETER
    if needed > available:
        raise CganError(f"{path}: the generators have {sum(counts.values()):.3g} parameters ("
                        + ", ".join(f"{role} {count:.3g}" for role, count in counts.items())
                        + f"), {needed / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB of {device}; "
                        "the model folder is damaged or too large for this machine")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors' tensors (never a pickle), the file's format checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        raise CganError(f"{path} does not exist; a model folder holds {WEIGHTS_FILE} beside {CONFIG_FILE}")
    if checkpoint.is_pickle(path):
        raise CganError(f"{path} is a pickle (as torch.save writes), not safetensors; cgan-kit never loads pickles, "
                        "which can run code")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = {key: value.clone() for key, value in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        detail = " ".join(str(error).split()).removeprefix("Error while deserializing header: ")[:200]
        raise CganError(f"{path} is not a readable safetensors file ({detail}); it is truncated or damaged") from None
    if checkpoint.META_KEY in meta:
        raise CganError(f"{path} is a training checkpoint, not a model's weights; make a model folder of it with "
                        "`cgan export CHECKPOINT --format safetensors --out FOLDER`")
    if meta.get("format") != FORMAT:
        raise Bad(path, "metadata key format", f"is {_shown(meta.get('format'))}, not {json.dumps(FORMAT)}")
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit()):
        raise Bad(path, "metadata key format_version", f"is {_shown(version)}, not a version number")
    if int(version) > FORMAT_VERSION:
        raise CganError(f"{path} is a model of format {int(version)}, newer than this cgan-kit reads "
                        f"({FORMAT_VERSION}); upgrade cgan-kit")
    return tensors


def load_weights(path: Path, tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module]) -> None:
    """Check every tensor against the generator it belongs to (name, shape, dtype), then load them."""
    for key in sorted(tensors):
        role = key.split(".", 1)[0]
        if role not in modules or "." not in key:
            raise Bad(path, f"tensor {key}", f"belongs to no generator of {CONFIG_FILE} ({', '.join(modules)})")
    for role, module in modules.items():
        expected = module.state_dict()
        saved = checkpoint.split(tensors, role)
        missing = [key for key in expected if key not in saved]
        unexpected = [key for key in saved if key not in expected]
        if missing or unexpected:
            detail = f"missing {role}.{missing[0]}" if missing else f"unexpected {role}.{unexpected[0]}"
            raise CganError(printable(f"{path}: the weights do not fit the generator {role} that {CONFIG_FILE} "
                                      f"describes ({detail}; {len(missing)} missing, {len(unexpected)} unexpected); "
                                      "the two files do not belong together"))
        for key, value in expected.items():
            found = saved[key]
            if tuple(found.shape) != tuple(value.shape) or found.dtype != value.dtype:
                raise CganError(f"{path}: tensor {role}.{key} is {found.dtype} {list(found.shape)}, the generator "
                                f"{CONFIG_FILE} describes holds {value.dtype} {list(value.shape)}; the two files do "
                                "not belong together")
        module.load_state_dict(saved)


def load(weights: Path, spec: ModelSpec, device: torch.device, overrides: dict[str, dict[str, Any]] | None = None
         ) -> tuple[dict[str, nn.Module], ModelRecipe]:
    """A model folder's generators (weights loaded, eval mode, on ``device``) and the recipe part it
    keeps (for ``cgan eval``); ``spec`` is its ``read_config``."""
    config = weights.with_name(CONFIG_FILE)
    modules = build_generators(config, spec, device)
    load_weights(weights, read_weights(weights), modules)
    modules = {role: module.to(device).eval().requires_grad_(False) for role, module in modules.items()}
    return modules, ModelRecipe(config, spec.data, overrides)


class ModelRecipe:
    """The part of a recipe a model folder keeps: its [data] table, checked when first used (by
    ``cgan eval``; translating needs no dataset plugin)."""

    def __init__(self, source: Path, data: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None):
        self.source, self._data = str(source), dict(data)
        for table, values in (overrides or {}).items():
            for key, value in values.items():
                if table != "data" or key not in self._data:
                    flag = " (--data)" if (table, key) == ("data", "root") else ""
                    raise CganError(f"{table}.{key}{flag}: the [data] table saved in {source} (type "
                                    f"{_shown(self._data.get('type'))}) has no {key} to replace")
                self._data[key] = value

    @property
    def data(self) -> Component:
        return component(Path(self.source), self._data, "data", "dataset")


# ---------------------------------------------------------------------------------------------
# Writing


def write(out: Path, spec: ModelSpec, tensors: dict[str, torch.Tensor]) -> None:
    """Write the folder whole: into a temporary folder beside ``out``, then renamed to it. ``out``
    must not exist or be an empty folder."""
    from safetensors.torch import save_file

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    flat = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "cgan_kit_version": __version__}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(flat, str(tmp / WEIGHTS_FILE), metadata=meta)
        (tmp / CONFIG_FILE).write_text(json.dumps(spec.to_json(), indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
        (tmp / CARD_FILE).write_text(model_card(spec), encoding="utf-8")
        mode = _file_mode()
        for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
            os.chmod(tmp / name, mode)  # safetensors writes its file for the owner alone: this is to share
            with open(tmp / name, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, out)  # a missing or empty folder is replaced whole
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            raise CganError(f"cannot write the model folder {out}: {error.strerror or error}") from None
        raise


def _file_mode() -> int:
    """The mode a new file gets here: 0o666 less the umask, read from /proc (setting the umask to
    read it would race with other threads creating files); 0o644 where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def model_card(spec: ModelSpec) -> str:
    """README.md of a model folder: what it is, how to use it, where it came from."""
    generators = ", ".join(f"{role}: {table.get('type')}" for role, table in spec.generators.items())
    directions = "\n".join(f"| {name} | {d.generator} | {d.in_channels} -> {d.out_channels} |"
                           for name, d in spec.directions.items())
    provenance = spec.provenance
    height, width = spec.size
    first = next(iter(spec.directions))
    return f"""---
library_name: cgan-kit
tags:
- image-to-image
- cgan-kit
- {spec.method.get("type")}
---

# {provenance.get("run") or "cgan-kit model"}

A {spec.method.get("type")} image-to-image translator trained with
[cgan-kit](https://pypi.org/project/cgan-kit/) (generators: {generators}), trained at {height}x{width}
pixels. Step {provenance.get("step", "?")}, {"EMA" if spec.ema else "trained"} weights.

| direction | generator | channels |
| --- | --- | --- |
{directions}

## Use

```python
import cgan_kit
from PIL import Image

translator = cgan_kit.load("path/to/this/folder", direction="{first}")
translator(Image.open("input.png")).save("output.png")
```

or `cgan translate path/to/this/folder photos/ --out translated/`. Images of any size are
translated at their own size. `model.safetensors` holds the weights, `config.json` the architecture
(rebuilt through cgan-kit's plugins) and the preprocessing: inputs scaled to [-1, 1].
"""
