"""Hostile checkpoints (issue "hostile inputs", item 10): a fuzz test of checkpoint files.

Real checkpoints of two tiny runs (one with the moving-average and history-buffer stabilizers),
trained once through the real `cgan` command, are mutated by hypothesis: their tensors (shape,
dtype, contents, dropped, renamed, extra ones), their metadata (any field, nested ones too, and the
recipe text inside) and their raw bytes (flipped header bytes, truncation, junk appended). Each
mutated file is loaded the two ways cgan-kit loads a checkpoint, in this process:

- for inference, ``state.load_models`` (then a forward pass of the generator it would use);
- to resume, the training objects built as the training loop's ``setup()`` builds them, then
  ``state.restore`` and one real optimizer step of every optimizer (fused Adam on the CPU) and one
  call of every stabilizer hook, so that whatever was loaded is shown to be usable.

Each must either work or raise ``CganError`` naming the checkpoint in one line; anything else (a
traceback, a segfault of the fused Adam kernel, which kills the worker) fails the test. Examples
are derandomized, so CI runs the same ones every time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from safetensors.torch import save_file

from cgan_kit.config.build import build_models
from cgan_kit.config.recipe import load as load_recipe
from cgan_kit.errors import CganError
from cgan_kit.plugin_api import plugins
from cgan_kit.runs import checkpoint, state
from cgan_kit.training.updates import build_optimizers
from conftest import TINY_RECIPE
from conftest import cgan_one_thread as cgan

CPU = torch.device("cpu")
STEP = "step_00000003.safetensors"
STABILIZED = TINY_RECIPE.replace(
    "[train]", '[[stabilizers]]\ntype = "ema"\n\n[[stabilizers]]\ntype = "history_buffer"\nsize = 4\n\n[train]')


class Trained:
    """One tiny run trained to step 3 by the real CLI, never modified, and its step-3 checkpoint read."""

    def __init__(self, run: Path):
        self.run = run
        self.path = run / "checkpoints" / STEP
        self.data = self.path.read_bytes()
        self.tensors, self.meta = checkpoint.load(self.path)
        self.keys = sorted(self.tensors)
        self.shapes = sorted({tuple(value.shape) for value in self.tensors.values()})
        self.recipe = load_recipe(run / "recipe.toml")  # what `cgan run --resume` trains with


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Trained]:
    folder = tmp_path_factory.mktemp("fuzz_runs")
    runs = {}
    for name, text in (("tiny", TINY_RECIPE), ("stab", STABILIZED)):
        recipe = folder / f"{name}.toml"
        recipe.write_text(text + f'out_dir = "{(folder / "runs").as_posix()}"\n')
        cgan("run", str(recipe), "--until", "3", check=True)
        runs[name] = Trained(folder / "runs" / name)
    assert any(key.startswith("optim.generator.") for key in runs["tiny"].keys)
    assert any(key.startswith("stabilizers.1.") for key in runs["stab"].keys), "no history-buffer state saved"
    return runs


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_files") / "mutated.safetensors"


# ---------------------------------------------------------------------------------------------
# The harness: load a checkpoint both ways and use what came back


def clean(error: CganError, path: Path) -> None:
    """A user error about a checkpoint: one line naming it. A recipe that no longer validates is
    reported as RecipeError always is, one line per problem, each naming the checkpoint."""
    lines = str(error).splitlines()
    assert lines and all(str(path) in line for line in lines), f"does not name {path} on every line: {error!s}"
    if len(lines) > 1:
        assert all(line.startswith(f"{path} (its recipe): ") for line in lines[:-1]), f"more than one line: {error!s}"


def inference(path: Path) -> None:
    recipe, meta, models = state.load_models(path, CPU)
    generator = models.eval_networks()[models.networks.roles("generator")[0]]
    with torch.no_grad():
        generator(torch.zeros(1, 3, 32, 32))


def resume(path: Path, run: Trained) -> None:
    """``training.loop.setup`` on the CPU, in its order, then one update of everything."""
    recipe, registry = run.recipe, plugins.registry()
    models = build_models(recipe, registry)
    models.setup_stabilizers(recipe.train.steps)
    optimizers = build_optimizers(models, recipe.optim, CPU)
    scalers = {name: torch.amp.GradScaler(CPU.type, enabled=False) for name in optimizers}  # fp32
    step, batches = state.restore(path, models, optimizers, scalers)
    assert isinstance(step, int) and isinstance(batches, int)

    networks = models.networks
    for network in networks.values():
        network.train()
    loss = sum((p * p).sum() for network in networks.values() for p in network.parameters())
    loss.backward()
    for name, optimizer in optimizers.items():
        scalers[name].step(optimizer)  # the fused Adam kernel over every loaded moment
        scalers[name].update()
    real, fake = torch.randn(2, 6, 32, 32), torch.randn(2, 6, 32, 32)
    for stabilizer in models.stabilizers:
        for role in networks.roles("critic"):
            for _ in range(3):  # the history buffer fills its pool of 4, then swaps fakes
                stabilizer.targets(torch.ones(2, 1, 6, 6), torch.zeros(2, 1, 6, 6), step + 1, role)
                stabilizer.critic_inputs(real, fake, step + 1, role)
        for role in networks.roles("generator"):
            stabilizer.after_generator_step(networks[role], step + 1, role)
    with torch.no_grad():
        for role in networks.roles("generator"):
            models.eval_networks()[role].eval()(torch.zeros(1, 3, 32, 32))
    state.state_tensors(models, optimizers)  # what the next checkpoint would save


def tally(outcome: str) -> None:
    if currently_in_test_context():
        event(outcome)


def attempt(path: Path, run: Trained) -> list[str]:
    """Load ``path`` for inference and to resume: each works or is a clean CganError. Returns the
    errors. (``--hypothesis-show-statistics`` shows how often each stage loaded or was refused.)"""
    errors = []
    for name, stage in (("inference", lambda: inference(path)), ("resume", lambda: resume(path, run))):
        with torch.random.fork_rng(devices=[]):  # restore sets the CPU generator's state
            try:
                stage()
            except CganError as error:
                clean(error, path)
                errors.append(str(error))
                tally(f"{name}: " + re.sub(r"\d+", "N", str(error).replace(str(path), "FILE"))[:70])
            else:
                tally(f"{name}: loaded")
    return errors


def write(path: Path, tensors: dict[str, torch.Tensor], meta: Any) -> None:
    save_file(tensors, str(path), metadata={checkpoint.META_KEY: json.dumps(meta)})


def test_the_unmutated_checkpoints_load_both_ways(trained):
    for run in trained.values():
        assert attempt(run.path, run) == []


# ---------------------------------------------------------------------------------------------
# Regressions


def with_bad_moment(run: Trained) -> dict[str, torch.Tensor]:
    return {**run.tensors, "optim.generator.0.exp_avg": torch.zeros(3)}


def test_a_moment_of_the_wrong_shape_is_refused_before_the_fused_step(trained, tmp_path):
    """The fused Adam step wrote past a moment of the wrong shape (a segfault on resume)."""
    run = trained["tiny"]
    path = tmp_path / STEP
    write(path, with_bad_moment(run), run.meta)
    with pytest.raises(CganError, match=re.escape("optim.generator.0.exp_avg")) as caught:
        resume(path, run)
    clean(caught.value, path)
    assert attempt(path, run) == [str(caught.value)]  # inference does not read optimizer state
    # Through the CLI: test_hostile_inputs.py::test_optimizer_moments_of_the_wrong_shape_are_refused_not_a_segfault


def scrambled_rng(run: Trained) -> dict[str, torch.Tensor]:
    state = run.tensors["rng.cpu"]  # random bytes: the Mersenne Twister's position and flags out of range
    scrambled = torch.randint(0, 256, state.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return {**run.tensors, "rng.cpu": scrambled}


def group_edit(run: Trained, key: str, value: Any = None, delete: bool = False) -> dict[str, Any]:
    return replace(run.meta, ("optimizer_groups", "generator", 0, key), value, delete)


# What the fuzzer found (each a traceback or a crash before cgan_kit/runs/validation.py checked it):
# (the checkpoint's tensors, its metadata, the text the one error line holds, and whether inference refuses it too).
FOUND = {
    "a moment that is a scalar (segfault)": (lambda r: {**r.tensors, "optim.generator.10.exp_avg": torch.zeros(())},
                                             None, "optim.generator.10.exp_avg", False),
    "an invalid generator state": (scrambled_rng, None, "rng.cpu", True),
    "a line break in a tensor's name": (lambda r: {**r.tensors, "stabilizers.7\nx": torch.zeros(1)}, None,
                                        "stabilizers.7\\nx", True),
    "a superscript digit as a parameter": (lambda r: {**r.tensors, "optim.generator.\u00b2.step": torch.zeros(())},
                                           None, "optim.generator.\u00b2.step", False),
    "a superscript digit as a stabilizer": (lambda r: {**r.tensors, "stabilizers.\u00b2.x": torch.zeros(1)}, None,
                                            "stabilizers.\u00b2.x", True),
    "a superscript digit as a device": (lambda r: {**r.tensors, "rng.cuda.\u00b2": torch.zeros(1)}, None,
                                        "rng.cuda.\u00b2", True),
    "a group without its learning rate": (None, lambda r: group_edit(r, "lr", delete=True), "has no lr", False),
    "a learning rate too large for a float": (None, lambda r: group_edit(r, "lr", 10**400), "generator[0].lr", False),
    "amsgrad without its moments": (None, lambda r: group_edit(r, "amsgrad", True), "max_exp_avg_sq", False),
    "a batch count too large to seed with": (None, lambda r: {**r.meta, "batches": 10**30}, "batches", False),
}


@pytest.mark.parametrize("case", FOUND)
def test_what_the_fuzzer_found_is_one_error_line(trained, tmp_path, case):
    tensors, meta, fragment, inference_too = FOUND[case]
    run = trained["tiny"]
    path = tmp_path / STEP
    write(path, tensors(run) if tensors else run.tensors, meta(run) if meta else run.meta)
    errors = attempt(path, run)
    assert len(errors) == (2 if inference_too else 1), errors
    assert all(fragment in error for error in errors), errors


# ---------------------------------------------------------------------------------------------
# Strategies

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8,
          torch.bool]
HUGE = [2**31, 2**53 + 1, 2**63, 2**64, 10**30, 10**400, -1, -(2**63), -(10**400)]
PREFIXES = ["networks.generator.", "networks.critic.", "optim.generator.", "optim.critic.", "optim.generator.0.",
            "optim.critic.0.", "stabilizers.0.", "stabilizers.1.", "stabilizers.1.critic.", "rng.", "rng.cuda."]
PLAUSIBLE_KEYS = ["networks.generator.x", "optim.generator.0.foo", "optim.generator.999.exp_avg",
                  "optim.generator.-1.exp_avg", "optim.generator.00.exp_avg", "optim.generator.\u00b2.exp_avg",
                  "optim.generator.\u0663.exp_avg", "optim.generator.0.", "optim.generator.0.max_exp_avg_sq",
                  "optim.critic.0.step", "stabilizers.0.x", "stabilizers.9.x", "stabilizers.\u00b2.x",
                  "stabilizers.1.critic.pool", "stabilizers.1.pool", "stabilizers.1.generator.pool",
                  "rng.cuda.0", "rng.cuda.\u00b2", "rng.cuda.99", "rng.cpu", "rng.mps", "generator.x"]

numbers = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(HUGE),
                    st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6)
shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
keys = st.one_of(st.sampled_from(PLAUSIBLE_KEYS), st.builds(lambda p, s: p + s, st.sampled_from(PREFIXES),
                                                              st.text(max_size=12)),
                 st.text(max_size=20)).filter(lambda key: key != "__metadata__")


def tensor_of(draw: Any, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor with arbitrary bytes (bools that are not 0 or 1, NaNs, infinities, denormals...)."""
    count = 1
    for size in shape:
        count *= size
    seed = draw(st.integers(0, 2**32 - 1), label="bytes seed")
    width = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (count * width,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return raw.view(dtype).reshape(shape).clone()


def mutate_tensors(data: st.DataObject, run: Trained) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with one or two of them changed (each choice shown if a test fails)."""
    draw = data.draw
    tensors = dict(run.tensors)
    for _ in range(draw(st.integers(1, 2), label="mutations")):
        key = draw(st.sampled_from(sorted(tensors) or ["rng.cpu"]), label="key")
        value = tensors.get(key, torch.zeros(1))
        kind = draw(st.sampled_from(["shape", "shape", "dtype", "contents", "fill", "drop", "rename", "add"]),
                    label="mutation")
        if kind == "shape":
            shape = draw(st.one_of(shapes, st.sampled_from(run.shapes),
                                   st.builds(lambda i, d: tuple(max(0, s + d) if j == i else s
                                                                for j, s in enumerate(value.shape)),
                                             st.integers(0, 3), st.sampled_from([-1, 1]))), label="shape")
            tensors[key] = torch.zeros(shape, dtype=value.dtype)
        elif kind == "dtype":
            tensors[key] = value.to(draw(st.sampled_from(DTYPES), label="dtype"))
        elif kind == "contents":
            tensors[key] = tensor_of(draw, tuple(value.shape), value.dtype)
        elif kind == "fill" and value.dtype.is_floating_point:
            tensors[key] = torch.full_like(value, draw(st.sampled_from([float("nan"), float("inf"), -1.0, 1e38, 0.0]),
                                                       label="fill"))
        elif kind == "drop":
            del tensors[key]
        elif kind == "rename":
            tensors[draw(keys, label="new key")] = tensors.pop(key)
        elif kind == "add":
            tensors[draw(keys, label="new key")] = tensor_of(draw, draw(shapes, label="shape"),
                                                             draw(st.sampled_from(DTYPES), label="dtype"))
    return tensors


def meta_paths(meta: dict[str, Any]) -> list[tuple]:
    """Every field the loaders read, nested ones included, and a few that are not there."""
    paths = [(field,) for field in sorted(meta)] + [("best",), ("versions",), ("format_version",)]
    for name, groups in sorted(meta["optimizer_groups"].items()):
        paths += [("optimizer_groups", name), ("optimizer_groups", name, 0), ("optimizer_groups", name, 1)]
        paths += [("optimizer_groups", name, 0, field) for field in sorted(groups[0])]
        paths += [("optimizer_groups", name, 0, "betas", 1), ("optimizer_groups", name, 0, "params", 0),
                  ("optimizer_groups", name, 0, "initial_lr")]
    paths += [("optimizer_groups", "ghost"), ("stabilizers", 0), ("stabilizers", 1), ("stabilizers", 2),
              ("grad_scalers", "generator"), ("best", "metric"), ("best", "value"), ("versions", "torch")]
    return paths


def replace(meta: Any, path: tuple, value: Any, delete: bool) -> Any:
    """A copy of ``meta`` with the entry at ``path`` replaced (or deleted); missing parents are made."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(meta) if isinstance(meta, list) else []
        if head >= len(items):
            if delete and not rest:
                return items
            items += [None] * (head + 1 - len(items))
        if delete and not rest:
            del items[head]
        else:
            items[head] = replace(items[head], rest, value, delete)
        return items
    mapping = dict(meta) if isinstance(meta, dict) else {}
    if delete and not rest:
        mapping.pop(head, None)
    else:
        mapping[head] = replace(mapping.get(head), rest, value, delete)
    return mapping


def mutate_recipe(draw: Any, text: str) -> str:
    kind = draw(st.sampled_from(["number", "number", "insert", "delete line"]), label="recipe mutation")
    if kind == "number":
        found = list(re.finditer(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?", text))
        match = draw(st.sampled_from(found), label="number")
        new = draw(st.one_of(numbers.map(lambda n: str(n).lower() if n == n else "nan"),
                             st.sampled_from(["0", "-1", "1e308", "inf", "-inf", "nan", "3.5", "true", '"x"'])),
                   label="new number")
        return text[:match.start()] + new + text[match.end():]
    if kind == "insert":
        at = draw(st.integers(0, len(text)), label="at")
        return text[:at] + draw(st.text(max_size=20), label="inserted") + text[at:]
    lines = text.splitlines()
    del lines[draw(st.integers(0, len(lines) - 1), label="deleted line")]
    return "\n".join(lines)


def mutate_meta(data: st.DataObject, run: Trained) -> Any:
    """The checkpoint's metadata with one field replaced or deleted, or its recipe text changed."""
    draw, meta = data.draw, run.meta
    if draw(st.integers(0, 3), label="recipe if 0") == 0:
        return {**meta, "recipe": mutate_recipe(draw, meta["recipe"])}
    path = draw(st.sampled_from(meta_paths(meta)), label="field")
    delete = draw(st.booleans(), label="delete")
    return replace(meta, path, None if delete else draw(json_values, label="value"), delete)


def mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    """The checkpoint file with bytes of its header flipped, its header length changed, cut short or
    with junk appended."""
    draw = data.draw
    header = 8 + int.from_bytes(raw[:8], "little")
    kind = draw(st.sampled_from(["flip", "flip", "flip", "length", "truncate", "append"]), label="mutation")
    if kind == "flip":
        out = bytearray(raw)
        for _ in range(draw(st.integers(1, 4), label="flips")):
            at = draw(st.one_of(st.integers(0, min(2048, len(raw)) - 1), st.integers(0, header - 1)), label="at")
            out[at] ^= draw(st.integers(1, 255), label="xor")
        return bytes(out)
    if kind == "length":
        length = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(max(0, header - 24), header + 8)),
                      label="header length")
        return length.to_bytes(8, "little") + raw[8:]
    if kind == "truncate":
        return raw[:draw(st.integers(0, len(raw) - 1), label="length")]
    return raw + draw(st.binary(min_size=1, max_size=64), label="junk")


# ---------------------------------------------------------------------------------------------
# The fuzz tests

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("name", ["tiny", "stab"])
@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_fuzzed_tensors_load_cleanly_or_not_at_all(trained, scratch, name, data):
    run = trained[name]
    write(scratch, mutate_tensors(data, run), run.meta)
    attempt(scratch, run)


@pytest.mark.parametrize("name", ["tiny", "stab"])
@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_fuzzed_metadata_loads_cleanly_or_not_at_all(trained, scratch, name, data):
    run = trained[name]
    meta = mutate_meta(data, run)
    try:
        write(scratch, run.tensors, meta)
    except (ValueError, OverflowError):  # json.dumps: a value JSON cannot hold
        assume(False)
    attempt(scratch, run)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_fuzzed_bytes_load_cleanly_or_not_at_all(trained, scratch, data):
    run = trained["stab"]
    scratch.write_bytes(mutate_bytes(data, run.data))
    attempt(scratch, run)
