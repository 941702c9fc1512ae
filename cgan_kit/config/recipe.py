"""Recipes: TOML files that compose registered components, validated whole before anything is built.

A component is a table with ``type`` (a registered name) and that component's keyword arguments::

    [method]
    type = "pix2pix"      # the default when there is no [method] table

    [generator]
    type = "unet"
    depth = 8

    [[losses]]
    type = "l1"
    weight = 100.0

``[method]`` names the training algorithm, and the method says from which tables its networks
are built (pix2pix: ``[generator]`` and ``[critic]``); ``[data]`` names a dataset the same way;
``[train]`` and ``[optim]`` hold the engine's settings (see ``cgan_kit.config.settings``);
``train.loggers`` names the run's loggers and a ``[loggers.NAME]`` table holds one logger's keys.
Every problem is collected with its dotted path and reported together; ``--set key.path=value``
overrides are checked the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgan_kit.errors import CganError, Problem, RecipeError
from cgan_kit.plugin_api.params import Param, params_of
from cgan_kit.plugin_api.registry import KINDS, Registry, did_you_mean
from cgan_kit.config.settings import OptimSettings, TrainSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_METHOD = "pix2pix"  # a recipe without a [method] table (every recipe before methods existed)
# Component tables: recipe table -> kind. Lists hold several components of the kind. The networks'
# tables are the method's to name (``Method.networks``).
COMPONENT_TABLES = {"method": "method", "data": "dataset"}
COMPONENT_LISTS = {"losses": "loss", "stabilizers": "stabilizer"}
SETTINGS_TABLES = {"train": TrainSettings, "optim": OptimSettings}
LOGGERS_TABLE = "loggers"  # [loggers.NAME]: one logger's settings; train.loggers chooses the loggers
TABLES = [*COMPONENT_TABLES, *COMPONENT_LISTS, *SETTINGS_TABLES, LOGGERS_TABLE]
REQUIRED_LOGGER = "jsonl"  # metrics.jsonl: the record the report and `cgan bench` read
REQUIRED_TABLES = ("data", "losses")
MAX_DEPTH = 32  # tables and arrays inside each other; deeper is no recipe, and Python would run out of stack
# Keys that belong to the recipe rather than to a component's factory.
RESERVED = {"loss": {"weight": 1.0}}


@dataclass(frozen=True)
class Component:
    """A validated component: its kind, registered type, and every argument (defaults filled in).

    Arguments that refer to other components hold a nested ``Component``.
    """

    kind: str
    type: str
    args: dict[str, Any]
    weight: float = 1.0

    def to_toml(self) -> dict[str, Any]:
        table: dict[str, Any] = {"type": self.type}
        if self.kind in RESERVED:
            table["weight"] = self.weight
        for key, value in self.args.items():
            table[key] = value.to_toml() if isinstance(value, Component) else value
        return table


@dataclass(frozen=True)
class Recipe:
    """A recipe that passed validation; ``to_toml()`` gives the resolved recipe to save with a run."""

    source: str
    method: Component
    data: Component
    networks: dict[str, Component]  # the method's network tables (dotted names), in declaration order
    losses: tuple[Component, ...]
    stabilizers: tuple[Component, ...]
    train: TrainSettings
    optim: OptimSettings
    loggers: dict[str, Component] = dataclasses.field(default_factory=dict)  # [loggers.NAME], defaults filled

    @property
    def generator(self) -> Component | None:
        """The ``[generator]`` table, where the method has one (pix2pix)."""
        return self.networks.get("generator")

    @property
    def critic(self) -> Component | None:
        """The ``[critic]`` table, where the method has one (pix2pix)."""
        return self.networks.get("critic")

    def to_dict(self) -> dict[str, Any]:
        loggers = {name: {k: v for k, v in logger.to_toml().items() if k != "type"}
                   for name, logger in self.loggers.items() if logger.args}
        tables: dict[str, Any] = {}
        for name, component in self.networks.items():
            *parents, last = name.split(".")
            node = tables
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = component.to_toml()
        return {
            "method": self.method.to_toml(),
            "data": self.data.to_toml(),
            **tables,
            "losses": [c.to_toml() for c in self.losses],
            "stabilizers": [c.to_toml() for c in self.stabilizers],
            # The run's name is resolved too, so that running the saved recipe names runs alike.
            "train": _plain({**dataclasses.asdict(self.train), "name": self.run_name}),
            "optim": _plain(dataclasses.asdict(self.optim)),
            **({LOGGERS_TABLE: loggers} if loggers else {}),
        }

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    @property
    def run_name(self) -> str:
        """train.name, or the recipe file's name (bytes that are not UTF-8 in it replaced: TensorBoard
        and the recipe file need UTF-8 names)."""
        stem = Path(self.source).stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return self.train.name or stem


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# Reading


def shipped(name: str) -> Path:
    """The file of a ready recipe a plugin ships, by name (`cgan list recipes`)."""
    from cgan_kit.plugin_api import plugins

    recipes = plugins.load().recipes
    if name not in recipes:
        shown = ", ".join(recipes) or "none"
        raise CganError(f"no ready recipe named {name!r}{did_you_mean(name, recipes)} (ready recipes: {shown}; "
                        "`cgan list recipes`)")
    return recipes[name].path


def locate(path: str | Path) -> Path:
    """A recipe file: ``path`` where a file is there (a path always wins), else the ready recipe of
    that name when it is a bare name such as ``quickstart``."""
    path = Path(path)
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path
    from cgan_kit.plugin_api import plugins

    recipes = plugins.load().recipes
    return recipes[path.name].path if path.name in recipes else path


def read(path: str | Path) -> dict[str, Any]:
    """Parse a recipe file, turning every way it can fail into one line naming the file."""
    path = locate(path)
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise CganError(f"recipe {path} does not exist{hint}; pass the path of a .toml recipe or the name of a "
                        "ready one (`cgan list recipes`)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise CganError(f"{path}: not UTF-8 text (byte {error.start}); save the recipe as UTF-8") from None
    except OSError as error:
        raise CganError(f"{path}: cannot be read: {error.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CganError(f"{path}: TOML syntax error: {error}") from None
    except ValueError as error:  # an integer of over 4300 digits
        raise CganError(f"{path}: {error}") from None
    except RecursionError:
        raise CganError(f"{path}: values nested too deeply to read; a recipe nests at most {MAX_DEPTH} "
                        "levels") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; the value is read as TOML, or else taken as a string."""
    raw = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CganError(f'--set {override}: expected KEY.PATH=VALUE, e.g. --set train.steps=100')
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:  # a bare word such as cuda or ../data/facades is meant as a string
            value = text
        except ValueError as error:  # an integer of over 4300 digits
            raise CganError(f"--set {key}=...: {error}") from None
        except RecursionError:
            raise CganError(f"--set {key}=...: the value is nested too deeply; a recipe nests at most {MAX_DEPTH} "
                            "levels") from None
        parts = _split_path(key, override)
        node: Any = raw
        for depth, part in enumerate(parts[:-1]):
            nxt = parts[depth + 1]
            node = _child(node, part, want_list=isinstance(nxt, int), override=override)
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or not -len(node) <= last < len(node):
                raise CganError(f"--set {override}: {key} has no item {last}")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise CganError(f"--set {override}: {key} does not name a table key")
    return raw


def _split_path(key: str, override: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in key.replace("[", ".").replace("]", "").split("."):
        if not piece:
            raise CganError(f"--set {override}: empty part in key path {key!r}")
        parts.append(int(piece) if piece.lstrip("-").isdigit() else piece)
    return parts


def _child(node: Any, part: str | int, want_list: bool, override: str) -> Any:
    if isinstance(part, int):
        if isinstance(node, list) and -len(node) <= part < len(node):
            return node[part]
        raise CganError(f"--set {override}: no item {part} there")
    if not isinstance(node, dict):
        raise CganError(f"--set {override}: {part} is not inside a table")
    if part not in node:
        node[part] = [] if want_list else {}
    return node[part]


def load(path: str | Path, overrides: list[str] | None = None, registry: Registry | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    raw = apply_overrides(read(path), overrides or [])
    if registry is None:
        from cgan_kit.plugin_api import plugins

        registry = plugins.registry()
    return validate(raw, str(locate(path)), registry)


# ---------------------------------------------------------------------------------------------
# Validation


SMOKE_STEPS = 10
SMOKE_EVAL_IMAGES = 8
SMOKE_SIZE = 128  # pixels, the crop (or image) side at most


def smoke_overrides(recipe: Recipe) -> list[str]:
    """The ``--set`` values that make a smoke run of ``recipe``: everything it does (data, models,
    evaluation, samples, checkpoints, report) in minutes, to find a mistake before hours of
    training. At most 10 steps and 8 evaluation images, crops of at most 128 px (the load size
    scaled alike), in a folder of its own (``<name>-smoke``)."""
    train = recipe.train
    steps = min(train.steps, SMOKE_STEPS)
    overrides = [f"train.steps={steps}", f"train.eval_images={min(train.eval_images, SMOKE_EVAL_IMAGES)}",
                 f"train.log_every={min(train.log_every, max(1, steps // 5))}", f"train.checkpoint_every={steps}",
                 f"train.sample_every={steps}", "train.eval_every=0",
                 f"train.name={toml_value(recipe.run_name + '-smoke')}"]
    data = recipe.data.args
    side = next((key for key in ("crop_size", "size") if _whole(data.get(key))), None)
    if side is not None and data[side] > SMOKE_SIZE:
        overrides.append(f"data.{side}={SMOKE_SIZE}")
        if side == "crop_size" and _whole(data.get("load_size")):  # the same margin for the random crop
            overrides.append(f"data.load_size={max(SMOKE_SIZE, round(data['load_size'] * SMOKE_SIZE / data[side]))}")
    return overrides


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate(raw: Any, source: str, registry: Registry) -> Recipe:
    """Check a parsed recipe whole; raise ``RecipeError`` listing every problem found."""
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise RecipeError(source, [Problem("", "a recipe must be a TOML document of tables")])
    shape = _shape_problems(raw)
    if shape:
        raise RecipeError(source, shape)
    components: dict[str, Any] = {}
    components["method"] = method = _component(raw.get("method", {"type": DEFAULT_METHOD}), "method", "method",
                                               registry, problems)
    # The method names its networks' tables; an unknown method leaves them unchecked.
    network_kinds: dict[str, str] = {}
    if method is not None:
        for network in registry.get("method", method.type).factory.networks.values():
            network_kinds.setdefault(network.table, network.kind)
    tables = [*TABLES, *dict.fromkeys(name.split(".")[0] for name in network_kinds)]
    for key in raw:
        if key not in tables and method is not None:
            problems.append(Problem(key, f"unknown table{did_you_mean(key, tables)} "
                                         f"(recipe tables: {', '.join(tables)})"))
    for key in REQUIRED_TABLES:
        if key not in raw:
            problems.append(Problem(key, _missing_table(key)))
    components["networks"] = {}
    for name, kind in network_kinds.items():
        found = _lookup(raw, name)
        if found is None:
            problems.append(Problem(name, f"missing table [{name}] with a type (see `cgan list {KINDS[kind].plural}`); "
                                          f'method "{method.type}" builds its {kind} from it'))
        else:
            components["networks"][name] = _component(found, name, kind, registry, problems)

    for table, kind in COMPONENT_TABLES.items():
        if table in raw and table != "method":
            components[table] = _component(raw[table], table, kind, registry, problems)
    for table, kind in COMPONENT_LISTS.items():
        if table not in raw:
            components[table] = ()
            continue
        items = raw[table]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            problems.append(Problem(table, f"expected an array of tables ([[{table}]]), found {_found(items)}"))
            continue
        if table == "losses" and not items:
            problems.append(Problem(table, "needs at least one loss"))
        components[table] = tuple(_component(item, f"{table}[{i}]", kind, registry, problems)
                                  for i, item in enumerate(items))
    settings = {table: _settings(raw.get(table, {}), table, cls, problems)
                for table, cls in SETTINGS_TABLES.items()}
    if settings["train"] is not None:
        problems.extend(_folder_problems(settings["train"]))
    components["loggers"] = _loggers(raw.get(LOGGERS_TABLE, {}), settings["train"], registry, problems)
    if problems:
        raise RecipeError(source, problems)
    return Recipe(source=source, **components, **settings)


def validate_component(raw: Any, path: str, kind: str, source: str, registry: Registry) -> Component:
    """Check one component table on its own (a model file's generator) as a recipe's would be;
    raise ``RecipeError`` listing its problems."""
    problems = [Problem(f"{path}.{p.path}".rstrip("."), p.message) for p in _shape_problems(raw)]
    found = None if problems else _component(raw, path, kind, registry, problems)
    if problems or found is None:
        raise RecipeError(source, problems or [Problem(path, f"is no {kind}")])
    return found


def _shape_problems(raw: Any) -> list[Problem]:
    """Values no recipe can hold, found in one walk: nesting deeper than MAX_DEPTH tables or arrays,
    and text with bytes that are not UTF-8 (from a command line or a file name), which no recipe
    file could be written with."""
    pending: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while pending:
        node, path, depth = pending.pop()
        if depth > MAX_DEPTH:
            return [Problem(path, f"nested more than {MAX_DEPTH} levels deep; no component takes values like that")]
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                shown = node.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
                return [Problem(path, f"'{shown}' holds bytes that are not UTF-8 text; use UTF-8")]
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            if isinstance(key, str):
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return [Problem(path, "a key holds bytes that are not UTF-8 text; use UTF-8")]
            pending.append((child, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."),
                            depth + 1))
    return []


def _folder_problems(train: TrainSettings) -> list[Problem]:
    """The run folder is <train.out_dir>/<train.name>: the name must be one plain folder name, so
    that a run writes inside train.out_dir only."""
    problems = []
    name = train.name
    if name and (name in (".", "..") or any(c in name for c in "/\\\0") or Path(name).is_absolute()):
        problems.append(Problem("train.name", f"{_found(name)} is not a plain folder name (the run folder is "
                                              "train.out_dir/train.name); choose where runs go with train.out_dir"))
    if "\0" in train.out_dir:
        problems.append(Problem("train.out_dir", "contains a NUL character, which no path can hold"))
    return problems


def _loggers(raw: Any, train: TrainSettings | None, registry: Registry, problems: list[Problem]) -> dict[str, Any]:
    """``train.loggers`` (registered names, each once, "jsonl" among them) and the ``[loggers.NAME]``
    tables: the settings of each chosen logger, and of each configured one (checked, kept for the
    runs that choose it), defaults filled in."""
    names = registry.names("logger")
    chosen = list(train.loggers) if train is not None else []
    for i, name in enumerate(chosen):
        if registry.find("logger", name) is None:
            problems.append(Problem(f"train.loggers[{i}]", f'"{name}" is not a logger{did_you_mean(name, names)} '
                                                          "(see `cgan list loggers`)"))
        elif name in chosen[:i]:
            problems.append(Problem(f"train.loggers[{i}]", f'"{name}" is listed twice'))
    if train is not None and REQUIRED_LOGGER not in chosen:
        problems.append(Problem("train.loggers", f'must include "{REQUIRED_LOGGER}": metrics.jsonl is the run\'s own '
                                                 "record, which the report and `cgan bench` read (found "
                                                 f"{toml_value(chosen)})"))
    if not isinstance(raw, dict):
        problems.append(Problem(LOGGERS_TABLE, f"expected tables [loggers.NAME], found {_found(raw)}"))
        raw = {}
    loggers: dict[str, Any] = {}
    for name, table in raw.items():
        where = f"{LOGGERS_TABLE}.{name}"
        if registry.find("logger", name) is None:
            problems.append(Problem(where, f'"{name}" is not a logger{did_you_mean(name, names)} '
                                           "(see `cgan list loggers`)"))
        elif not isinstance(table, dict):
            problems.append(Problem(where, f'expected a table of logger "{name}"\'s keys, found {_found(table)}'))
        elif "type" in table:
            problems.append(Problem(f"{where}.type", "unknown key: the table's name says which logger it sets up"))
        else:
            loggers[name] = _component({**table, "type": name}, where, "logger", registry, problems)
    for name in chosen:
        if name not in loggers and registry.find("logger", name) is not None:
            loggers[name] = _component({"type": name}, f"{LOGGERS_TABLE}.{name}", "logger", registry, problems)
    return {name: logger for name, logger in loggers.items() if logger is not None}


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted table name (``generators.a_to_b``), or None."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _missing_table(key: str) -> str:
    kind = COMPONENT_TABLES.get(key) or COMPONENT_LISTS.get(key)
    header = f"[[{key}]]" if key in COMPONENT_LISTS else f"[{key}]"
    return f"missing table {header} with a type (see `cgan list {KINDS[kind].plural}`)"


def _found(value: Any) -> str:
    return {dict: "a table", list: "an array", str: f'"{value}"'}.get(type(value), repr(value))


def _component(raw: Any, path: str, kind: str, registry: Registry, problems: list[Problem]) -> Any:
    """Validate one component table (or a reference given by name); None if it is unusable."""
    plural = KINDS[kind].plural
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        problems.append(Problem(path, f"expected a {kind} name or a table with a type, found {_found(raw)}"))
        return None
    name = raw.get("type")
    if name is None:
        problems.append(Problem(f"{path}.type", f"missing; name a registered {kind} (see `cgan list {plural}`)"))
        return None
    if not isinstance(name, str):
        problems.append(Problem(f"{path}.type", f"expected a {kind} name, found {_found(name)}"))
        return None
    entry = registry.find(kind, name)
    if entry is None:
        problems.append(Problem(f"{path}.type", registry.unknown(kind, name)))
        return None
    reserved = RESERVED.get(kind, {})
    context = {p.name for p in entry.context}
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "type" or key in reserved:
            continue
        where = f"{path}.{key}"
        if key in context:
            problems.append(Problem(where, f"is set by cgan-kit itself for every {kind}; remove it"))
            continue
        param = entry.param(key)
        if param is None:
            choices = [p.name for p in entry.params] + list(reserved)
            problems.append(Problem(where, f'unknown key for {kind} "{name}"{did_you_mean(key, choices)} '
                                           f"(see `cgan describe {kind} {name}`)"))
            continue
        args[key] = _argument(param, value, where, registry, problems)
    for param in entry.params:
        if param.name in raw:
            continue
        if param.required:
            problems.append(Problem(f"{path}.{param.name}", f"missing; {kind} \"{name}\" needs it"
                                                            f"{': ' + param.doc if param.doc else ''}"))
        elif param.ref_kind:
            args[param.name] = _component(param.default, f"{path}.{param.name}", param.ref_kind, registry, problems)
        else:
            args[param.name] = _plain(param.default)
    weight = 1.0
    if "weight" in reserved:
        weight, error = Param("weight", float).check(raw.get("weight", reserved["weight"]))
        if error is None and weight < 0:
            error = f"must be >= 0, found {weight:g}"
        if error:
            problems.append(Problem(f"{path}.weight", error))
    ordered = {p.name: args[p.name] for p in entry.params if p.name in args}
    return Component(kind, name, ordered, weight)


def _argument(param: Param, value: Any, where: str, registry: Registry, problems: list[Problem]) -> Any:
    if param.ref_kind:
        return _component(value, where, param.ref_kind, registry, problems)
    converted, error = param.check(value)
    if error:
        problems.append(Problem(where, error))
    return converted


def _settings(raw: Any, table: str, cls: type, problems: list[Problem]) -> Any:
    if not isinstance(raw, dict):
        problems.append(Problem(table, f"expected a table, found {_found(raw)}"))
        return None
    params = {p.name: p for p in params_of(cls)}
    values = {}
    for key, value in raw.items():
        param = params.get(key)
        if param is None:
            problems.append(Problem(f"{table}.{key}", f"unknown key{did_you_mean(key, params)} "
                                                      f"(see `cgan describe {table}`)"))
            continue
        converted, error = param.check(value)
        if error:
            problems.append(Problem(f"{table}.{key}", error))
        values[key] = tuple(converted) if isinstance(converted, list) else converted
    try:
        return cls(**values)
    except TypeError:
        return None


# ---------------------------------------------------------------------------------------------
# Writing


def dump_toml(document: dict[str, Any]) -> str:
    """Write a recipe-shaped document (tables, arrays of tables, inline values) as TOML."""
    lines: list[str] = []
    for key, value in document.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in value.items())
            lines.append("")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"[[{key}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
                lines.append("")
        elif isinstance(value, list) and not value:
            continue  # an empty array of tables is the same as none
        else:
            lines.insert(0, f"{key} = {toml_value(value)}")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (an override on the command line, a line of a recipe)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
