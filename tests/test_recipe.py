"""Recipe validation, overrides and round trips, on real TOML files and a registry of small factories."""

from __future__ import annotations

import dataclasses
import string
import sys
from typing import Annotated, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgan_kit import Direction, Method, Network, Range, ref
from cgan_kit.errors import CganError, RecipeError
from cgan_kit.config.recipe import apply_overrides, dump_toml, load, read, validate
from cgan_kit.plugin_api.registry import Provider, Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def relu():
    """Rectifier."""


def leaky_relu(slope: Annotated[float, Range(ge=0)] = 0.2):
    """Leaky rectifier.

    Args:
        slope: Slope for negative inputs.
    """


def unet(in_channels: int, out_channels: int, depth: Annotated[int, Range(ge=1, le=10)] = 8,
         upsample: Literal["transpose", "resize_conv"] = "transpose", activation: ref("activation") = "relu",
         attention: list[int] = ()):
    """A U-Net.

    Args:
        depth: Downsamplings.
        upsample: How to upsample.
        activation: Activation.
        attention: Levels with attention.
    """


def patchgan(in_channels: int, n_layers: int = 3):
    """A PatchGAN.

    Args:
        n_layers: Layers.
    """


def bce():
    """BCE."""


def folder(split: str, augment: bool, root: str, in_channels: int = 3, out_channels: int = 3,
           direction: Literal["AtoB", "BtoA"] = "AtoB"):
    """Images in a folder.

    Args:
        root: Where.
        in_channels: Input channels.
        out_channels: Output channels.
        direction: Which half is the input.
    """


def ema(decay: Annotated[float, Range(ge=0, le=1)] = 0.999):
    """EMA.

    Args:
        decay: Decay.
    """


def plain_logger():
    """A logger."""


class Paired(Method):
    """A paired method: one generator, one critic."""

    networks = {"generator": Network("generator", "generator"), "critic": Network("critic", "critic")}
    optimizers = {"generator": ("generator",), "critic": ("critic",)}
    directions = {"AtoB": Direction("generator")}


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    provider = Provider("test", "test-dist", "1.0")
    for kind, name, factory in [("method", "pix2pix", Paired),
                                ("activation", "relu", relu), ("activation", "leaky_relu", leaky_relu),
                                ("generator", "unet", unet), ("critic", "patchgan", patchgan),
                                ("loss", "bce", bce), ("loss", "l1", bce), ("dataset", "folder", folder),
                                ("stabilizer", "ema", ema), *[("logger", name, plain_logger) for name in
                                                              ("jsonl", "tensorboard", "report")]]:
        reg.add(kind, name, factory, provider)
    return reg


GOOD = """
[data]
type = "folder"
root = "data/x"
direction = "BtoA"

[generator]
type = "unet"
depth = 7
activation = { type = "leaky_relu", slope = 0.1 }

[critic]
type = "patchgan"

[[losses]]
type = "bce"

[[losses]]
type = "l1"
weight = 100

[[stabilizers]]
type = "ema"

[train]
steps = 10
batch_size = 2

[optim]
lr = 1e-3
betas = [0.5, 0.99]
"""


def write(tmp_path, text: str):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_good_recipe_resolves_defaults_and_references(tmp_path, registry):
    recipe = load(write(tmp_path, GOOD), registry=registry)
    assert recipe.generator.args["depth"] == 7
    assert recipe.generator.args["upsample"] == "transpose"
    assert recipe.generator.args["activation"].type == "leaky_relu"
    assert recipe.generator.args["activation"].args == {"slope": 0.1}
    assert recipe.losses[1].weight == 100.0 and isinstance(recipe.losses[1].weight, float)
    assert recipe.optim.betas == (0.5, 0.99)
    assert recipe.train.steps == 10 and recipe.train.seed == 0
    assert recipe.data.args == {"root": "data/x", "in_channels": 3, "out_channels": 3, "direction": "BtoA"}


def test_resolved_recipe_round_trips(tmp_path, registry):
    recipe = load(write(tmp_path, GOOD), registry=registry)
    again = validate(tomllib.loads(recipe.to_toml()), "elsewhere/recipe.toml", registry)
    assert again.to_toml() == recipe.to_toml()
    assert again.run_name == recipe.run_name == "recipe"  # the saved name, not the new file's
    assert dataclasses.replace(again, source=recipe.source) == dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, name=recipe.run_name))


def test_typo_in_type_suggests_the_name(tmp_path, registry):
    with pytest.raises(RecipeError) as info:
        load(write(tmp_path, GOOD.replace('type = "unet"', 'type = "unett"')), registry=registry)
    (line,) = info.value.lines()
    assert "generator.type" in line and 'did you mean "unet"' in line and "cgan list generators" in line


def test_every_problem_is_reported_together_with_its_path(tmp_path, registry):
    text = (GOOD.replace("depth = 7", "depht = 7").replace("steps = 10", "steps = 0")
            .replace("lr = 1e-3", 'lr = "fast"').replace('direction = "BtoA"', 'direction = "sideways"')
            .replace("slope = 0.1", "slope = -1") + "\n[trian]\nx = 1\n")
    with pytest.raises(RecipeError) as info:
        load(write(tmp_path, text), registry=registry)
    text = str(info.value)
    assert 'generator.depht: unknown key for generator "unet"; did you mean "depth"?' in text
    assert "train.steps: must be >= 1, found integer 0" in text
    assert 'optim.lr: expected float, found string "fast"' in text
    assert "data.direction" in text and '"AtoB" | "BtoA"' in text
    assert "generator.activation.slope: must be >= 0" in text
    assert 'trian: unknown table; did you mean "train"?' in text
    assert len(info.value.problems) == 6


def test_missing_tables_and_required_arguments(tmp_path, registry):
    with pytest.raises(RecipeError) as info:
        load(write(tmp_path, '[data]\ntype = "folder"\n'), registry=registry)
    text = str(info.value)
    assert "data.root: missing" in text
    for table in ("generator", "critic", "losses"):
        assert f"{table}: missing table" in text


def test_engine_supplied_arguments_cannot_be_set(tmp_path, registry):
    with pytest.raises(RecipeError, match="generator.in_channels: is set by cgan-kit itself"):
        load(write(tmp_path, GOOD.replace("depth = 7", "in_channels = 4")), registry=registry)


def test_overrides_are_typed_and_checked(tmp_path, registry):
    path = write(tmp_path, GOOD)
    recipe = load(path, ["generator.depth=5", "data.root=../elsewhere", "losses[1].weight=10",
                         "train.device=cuda", "optim.betas=[0.9, 0.9]"], registry=registry)
    assert recipe.generator.args["depth"] == 5
    assert recipe.data.args["root"] == "../elsewhere"
    assert recipe.losses[1].weight == 10.0
    assert recipe.train.device == "cuda"
    with pytest.raises(RecipeError, match="generator.depth: must be <= 10"):
        load(path, ["generator.depth=11"], registry=registry)
    with pytest.raises(RecipeError, match="train.batch_size: expected int"):
        load(path, ["train.batch_size=big"], registry=registry)
    with pytest.raises(CganError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(CganError, match="has no item 5"):
        apply_overrides(tomllib.loads(GOOD), ["losses.5=1"])


def test_syntax_errors_name_the_file_line_and_column(tmp_path):
    path = write(tmp_path, "[generator]\ntype = \n")
    with pytest.raises(CganError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "\n" not in message


def test_missing_recipe_file(tmp_path):
    with pytest.raises(CganError, match="does not exist"):
        read(tmp_path / "nope.toml")


def test_dump_toml_writes_valid_toml():
    document = {"a": {"s": 'quote " and \\ and \n', "f": 1e-4, "i": 3, "b": True, "l": [1, 2],
                      "t": {"type": "x", "v": 0.5}},
                "items": [{"type": "one"}, {"type": "two", "weight": 2.0}]}
    assert tomllib.loads(dump_toml(document)) == document


toml_keys = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
toml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(toml_keys, inner, max_size=3),
    max_leaves=12,
)
table_names = st.sampled_from(["data", "generator", "critic", "losses", "stabilizers", "train", "optim", "other"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(table_names, toml_values, max_size=6))
def test_fuzzed_documents_only_raise_recipe_errors(registry, document):
    try:
        validate(document, "fuzz.toml", registry)
    except RecipeError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_fuzzed_text_only_raises_cgan_errors(tmp_path, registry, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if text.isprintable() else path.write_bytes(
        text.encode("utf-8", errors="replace"))
    try:
        load(path, registry=registry)
    except CganError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=30), max_size=3))
def test_fuzzed_overrides_only_raise_cgan_errors(tmp_path, registry, overrides):
    path = write(tmp_path, GOOD)
    try:
        load(path, overrides, registry=registry)
    except CganError:
        pass
