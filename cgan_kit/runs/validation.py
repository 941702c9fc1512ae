"""What a checkpoint must hold before anything from it is used.

Checkpoints travel: people download them from strangers. A tensor of the wrong shape or dtype
loaded into an optimizer makes its fused kernel write past its buffers (a segfault on resume); a
metadata field of the wrong type is a traceback deep inside training. So every entry is checked
against what it will be loaded into (network weights, every optimizer moment and step, the
random-generator states, every metadata field) before the first of them is loaded, and anything
wrong is one line naming the checkpoint and the entry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from cgan_kit.errors import CganError

# The per-parameter state each optimizer class keeps; Adam with amsgrad adds max_exp_avg_sq.
_ADAM_STATE = {"step", "exp_avg", "exp_avg_sq"}
# A group's implementation flags describe this process (its device, a captured step), not the
# training state: they are checked for type but always taken from the optimizer built now.
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")
# Group keys an optimizer fills in itself when a saved group lacks them (Adam.__setstate__): groups
# saved by an older torch load without them.
_DEFAULTED = {"amsgrad", "maximize", "decoupled_weight_decay"}
_SCALER_KEYS = {"scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int,
                "_growth_tracker": int}


class Damaged(CganError):
    """A checkpoint entry that cannot be what it claims."""

    def __init__(self, path: Path, entry: str, problem: str):
        super().__init__(f"{path}: {printable(entry)} {printable(problem)}; the checkpoint is damaged or was "
                         "not written by this run's recipe (give another checkpoint, or move this one out of the "
                         "run folder)")


def printable(text: str) -> str:
    """``text`` with line breaks and other control characters escaped: names read from a file
    (tensor keys, metadata values) stay on the error's one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def entry_number(text: str) -> int | None:
    """The number an entry's name holds ("3" in optim.generator.3.step), or None. Only ASCII digits:
    str.isdigit() also accepts "²" and "٣", which int() refuses or reads."""
    return int(text) if text.isascii() and text.isdigit() else None


def is_count(value: Any) -> bool:
    """A step or batch count: a JSON integer, 0 up to 2**53 (what a float holds exactly; the loop
    seeds data order and schedules with it, and larger counts overflow them)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53


def is_number(value: Any) -> bool:
    """A finite JSON number (an integer too large for a float is not one: it overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_meta(path: Path, meta: dict[str, Any], resume: bool) -> None:
    """The metadata fields a load reads, by type. ``resume``: also what only a resume reads."""
    if not isinstance(meta.get("recipe"), str):
        raise Damaged(path, "metadata field recipe", f"is {_describe(meta.get('recipe'))}, not the recipe's text")
    if "step" in meta or resume:
        if not is_count(meta.get("step")):
            raise Damaged(path, "metadata field step", f"is {_describe(meta.get('step'))}, not a step number")
    for field, kind, needed in (("stabilizers", list, False), ("grad_scalers", dict, False),
                                ("versions", dict, False), ("best", dict, False),
                                ("optimizer_groups", dict, resume)):
        if (field in meta or needed) and not isinstance(meta.get(field), kind):
            raise Damaged(path, f"metadata field {field}",
                          f"is {_describe(meta.get(field))}, not a JSON {'array' if kind is list else 'object'}")
    best = meta.get("best")
    if best is not None and not (isinstance(best.get("metric"), str) and is_number(best.get("value"))):
        raise Damaged(path, "metadata field best", f"is {_describe(best)}, not {{\"metric\": NAME, \"value\": NUMBER}}")
    if not resume:
        return
    if not is_count(meta.get("batches")):
        raise Damaged(path, "metadata field batches", f"is {_describe(meta.get('batches'))}, not a count of batches")
    for name, scaler in meta.get("grad_scalers", {}).items():
        if not isinstance(scaler, dict) or set(scaler) != set(_SCALER_KEYS) or not all(
                is_number(scaler[key]) and (kind is float or isinstance(scaler[key], int))
                for key, kind in _SCALER_KEYS.items()):
            raise Damaged(path, f"metadata field grad_scalers.{name}",
                          f"is {_describe(scaler)}, not a loss scaler's state ({', '.join(_SCALER_KEYS)})")


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], models: Any, stabilizers: bool = True,
                  optimizers: dict[str, torch.optim.Optimizer] | None = None,
                  groups: dict[str, Any] | None = None) -> None:
    """Every tensor against what it will be loaded into, and no tensor that nothing reads."""
    known = set()
    for role, network in models.networks.items():
        known |= _check_module(path, tensors, f"networks.{role}", network.state_dict(), role)
    for name, optimizer in (optimizers or {}).items():
        if name in (groups or {}):
            known |= _check_optimizer(path, tensors, name, optimizer, groups[name])
    if stabilizers:
        count = len(models.stabilizers)
        known |= {key for key in tensors if key.startswith("stabilizers.")
                  and (i := entry_number(key.split(".", 2)[1])) is not None and i < count}
    known |= _check_rng(path, tensors)
    ignored = ("stabilizers.",) if not stabilizers else ()
    ignored += ("optim.",) if optimizers is None else ()
    unknown = sorted(key for key in tensors if key not in known and not key.startswith(ignored))
    if unknown:
        raise Damaged(path, f"tensor {unknown[0]}", f"belongs to nothing this recipe builds ({len(unknown)} such)")


def _check_module(path: Path, tensors: dict[str, torch.Tensor], prefix: str, expected: dict[str, torch.Tensor],
                  what: str) -> set[str]:
    cut = len(prefix) + 1
    saved = {key[cut:]: value for key, value in tensors.items() if key.startswith(prefix + ".")}
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {printable(unexpected[0])}"
        raise CganError(f"{path}: the {what} in this checkpoint does not fit the recipe's {what} ({detail}, "
                        f"{len(missing)} missing, {len(unexpected)} unexpected); was it saved by another recipe?")
    for key, value in expected.items():
        found = saved[key]
        if tuple(found.shape) != tuple(value.shape):
            raise CganError(f"{path}: {what} tensor {key} has shape {list(found.shape)} in the checkpoint but "
                            f"{list(value.shape)} in the recipe's {what}; was it saved by another recipe?")
        if found.dtype != value.dtype:
            raise Damaged(path, f"tensor {prefix}.{key}", f"is {found.dtype}, the {what} holds {value.dtype}")
    return {f"{prefix}.{key}" for key in saved}


def _check_optimizer(path: Path, tensors: dict[str, torch.Tensor], name: str, optimizer: torch.optim.Optimizer,
                     groups: Any) -> set[str]:
    """An optimizer's groups (metadata) and its per-parameter state (tensors ``optim.<name>.<i>.<key>``)."""
    entry = f"metadata field optimizer_groups.{name}"
    fresh = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh):
        raise Damaged(path, entry, f"is {_describe(groups)}, not a list of {len(fresh)} parameter group(s)")
    for index, (group, mine) in enumerate(zip(groups, fresh)):
        where = f"{entry}[{index}]"
        if not isinstance(group, dict) or group.get("params") != mine["params"]:
            raise Damaged(path, where, f"does not list this optimizer's parameters {mine['params'][:3]}...")
        for key, value in group.items():
            if key != "params" and key in mine and not _same_kind(value, mine[key]):
                raise Damaged(path, f"{where}.{key}", f"is {_describe(value)}, expected a value like {mine[key]!r}")
        # The step reads every hyperparameter from the group loaded (the flags aside, taken from the
        # optimizer built now): one missing is a KeyError in the middle of training.
        missing = [key for key in mine if key not in group and key not in IMPLEMENTATION_FLAGS
                   and key not in _DEFAULTED]
        if missing:
            raise Damaged(path, where, f"has no {missing[0]}")
        betas, eps = group.get("betas", [0.0, 0.0]), group.get("eps", 1.0)
        if not (all(0 <= beta < 1 for beta in betas) and eps > 0):  # else the first step is NaN
            raise Damaged(path, where, f"has betas {_describe(betas)} and eps {_describe(eps)}; Adam needs betas in "
                          "[0, 1) and eps > 0")
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    # Adam with amsgrad keeps max_exp_avg_sq too; the saved groups say which the step will use.
    amsgrad = any(isinstance(group, dict) and group.get("amsgrad") for group in groups)
    wanted = _ADAM_STATE | ({"max_exp_avg_sq"} if amsgrad else set()) \
        if isinstance(optimizer, torch.optim.Adam) else None
    prefix = f"optim.{name}."
    per_parameter: dict[int, set[str]] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        number, _, field = key[len(prefix):].partition(".")
        position = entry_number(number)
        if position is None or number != str(position) or position >= len(parameters) or not field:
            raise Damaged(path, f"tensor {key}", f"names no parameter of optimizer {name} (it has {len(parameters)})")
        parameter = parameters[position]
        # Only the step count is a scalar: a moment of any other shape (a scalar included) makes the
        # fused kernel read and write past its buffer, a segfault or silently corrupted memory.
        if field == "step":
            if value.dim() != 0 or not value.dtype.is_floating_point:
                raise Damaged(path, f"tensor {key}", f"is {value.dtype} {list(value.shape)}, expected a "
                              "floating-point scalar (the step count)")
            if not (math.isfinite(value.item()) and value.item() >= 0):
                raise Damaged(path, f"tensor {key}", f"is {value.item()}, not a step count")
        elif tuple(value.shape) != tuple(parameter.shape) or value.dtype != parameter.dtype:
            raise Damaged(path, f"tensor {key}", f"is {value.dtype} {list(value.shape)}, its parameter "
                          f"{parameter.dtype} {list(parameter.shape)}")
        elif not bool(torch.isfinite(value).all()) or (field.endswith("_sq") and bool((value < 0).any())):
            # Moments that are not finite, or negative squares, turn the first step's update into NaN.
            raise Damaged(path, f"tensor {key}", "holds values that are not finite" if field[-3:] != "_sq"
                          else "holds values that are not finite or are negative (a mean of squares)")
        per_parameter.setdefault(position, set()).add(field)
    expected = wanted if wanted is not None else next(iter(per_parameter.values()), set())
    for position, fields in per_parameter.items():
        if fields != expected:
            raise Damaged(path, f"tensors {prefix}{position}.*",
                          f"hold {sorted(fields)}, expected {sorted(expected)}")
    return {key for key in tensors if key.startswith(prefix)}


def _same_kind(saved: Any, mine: Any) -> bool:
    """Whether a saved hyperparameter can stand where the fresh optimizer has ``mine``."""
    if isinstance(mine, bool):  # the fused step takes nothing else (None was a TypeError there)
        return isinstance(saved, bool)
    if mine is None:  # foreach: None means "let torch choose"
        return saved is None or isinstance(saved, bool)
    if isinstance(mine, torch.Tensor):
        mine = mine.item()
    if isinstance(mine, (int, float)):
        return is_number(saved) and saved >= 0
    if isinstance(mine, (tuple, list)):
        return (isinstance(saved, list) and len(saved) == len(mine)
                and all(_same_kind(s, m) for s, m in zip(saved, mine)))
    return type(saved) is type(mine)


def _check_rng(path: Path, tensors: dict[str, torch.Tensor]) -> set[str]:
    found = {key for key in tensors if key.startswith("rng.")}
    for key in found:
        value = tensors[key]
        if key == "rng.cpu":
            reference = torch.get_rng_state()
        elif key.startswith("rng.cuda.") and (device := entry_number(key[9:])) is not None:
            reference = torch.cuda.get_rng_state(device) \
                if torch.cuda.is_available() and device < torch.cuda.device_count() else value
        else:
            raise Damaged(path, f"tensor {key}", "is no random-generator state this cgan-kit knows")
        if value.dtype != torch.uint8 or tuple(value.shape) != tuple(reference.shape) or value.dim() != 1:
            raise Damaged(path, f"tensor {key}", f"is {value.dtype} {list(value.shape)}, not a random-generator "
                          f"state (uint8 {list(reference.shape)})")
        if key == "rng.cpu":
            # The Mersenne Twister's position and flags must be in range: tried on a scratch generator.
            try:
                torch.Generator().set_state(value)
            except RuntimeError as error:
                raise Damaged(path, f"tensor {key}", f"is no valid random-generator state ({error})") from None
    return found
