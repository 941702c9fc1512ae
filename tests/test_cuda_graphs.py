"""`train.cuda_graphs`: what a captured step relies on, checked on the CPU.

Capture itself needs a GPU, and no test here replays a graph. What a replay relies on is tested
through the real loop and the real step: the static-buffer step trains exactly like the eager one;
nothing in the step waits for the device or takes data from the host (a replay drops all host
work); every piece of state is updated in place (a replay repeats the same work on the same
memory); and what cannot be captured is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cgan_kit.runs import checkpoint
from cgan_kit.training import distributed
from cgan_kit.plugin_api import plugins
from cgan_kit.config.build import build_models
from cgan_kit.training.cuda_graph import CapturedStep
from cgan_kit.errors import CganError
from cgan_kit.config.recipe import load
from cgan_kit.training.kit import Kit
from cgan_kit.training.updates import NonFiniteLosses, build_optimizers
from conftest import cgan, one_error

# Every capturable built-in stabilizer, with the step-dependent settings that a frozen step
# number would get wrong: decaying flips and noise, and an average that starts late.
CAPTURABLE = """
[[stabilizers]]
type = "label_smoothing"
real = [0.8, 1.0]

[[stabilizers]]
type = "label_flipping"
probability = 0.3
decay = "linear"

[[stabilizers]]
type = "instance_noise"
sigma = 0.2
decay = "linear"

[[stabilizers]]
type = "ema"
decay = 0.9
start_step = 3

[[stabilizers]]
type = "spectral_norm"
target = "critic"
"""
# Augmentation, whose random draws a replay must repeat on the device. Compared with the eager loop
# on its own: with all of the above too, six steps amplify the one allowed difference (the rate's
# float32 rounding, below) past the tolerance, as any chaotic trajectory would.
AUGMENTED = """
[[stabilizers]]
type = "diffaugment"
"""


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))[0]


@pytest.mark.parametrize("stabilizers", [CAPTURABLE, AUGMENTED], ids=["stabilizers", "diffaugment"])
def test_the_capture_ready_step_trains_like_the_eager_loop(tiny_recipe, tmp_path, stabilizers):
    tiny_recipe.write_text(tiny_recipe.read_text() + stabilizers)
    # A decaying learning rate from the first step: the tensor rates must follow it.
    common = ["--set", "optim.schedule=linear_decay", "--set", "optim.decay_start=0.0", "--set", "train.log_every=1",
              "--set", "train.critic_steps=2"]
    cgan("run", str(tiny_recipe), *common, "--set", "train.name=eager", check=True)
    captured = cgan("run", str(tiny_recipe), *common, "--set", "train.name=graph", "--set", "train.cuda_graphs=true",
                    check=True)
    assert "train.cuda_graphs on cpu" in captured.stderr

    eager, graph = final_tensors(tmp_path / "runs" / "eager"), final_tensors(tmp_path / "runs" / "graph")
    assert eager.keys() == graph.keys()
    # The only difference allowed: fused Adam reads a captured rate as float32, the eager one as float64.
    for key in eager:
        assert torch.allclose(eager[key].double(), graph[key].double(), rtol=1e-5, atol=1e-6), key
    rows = {name: [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("eager", "graph")}
    logged = [r for r in rows["graph"] if "loss/critic" in r]
    assert len(logged) == 6 and all("grad_norm/critic" in r and "grad_norm/generator" in r for r in logged)
    for mine, theirs in zip(logged, [r for r in rows["eager"] if "loss/critic" in r]):
        assert mine["lr/generator"] == theirs["lr/generator"]
        assert mine["grad_norm/generator"] == pytest.approx(theirs["grad_norm/generator"], rel=1e-4)
        assert mine["loss/critic"] == pytest.approx(theirs["loss/critic"], rel=1e-4)
    # A resume of a graph run (its saved rates were device tensors) continues like any other.
    cgan("run", "--resume", str(tmp_path / "runs" / "graph"), "--set", "train.steps=8", check=True)
    assert checkpoint.saved_steps(tmp_path / "runs" / "graph" / "checkpoints")[-1][0] == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="capturing and replaying a CUDA graph needs a GPU")
@pytest.mark.parametrize("compiled", ["false", '"default"'])
def test_a_replayed_graph_trains_like_the_eager_loop_on_a_gpu(tiny_recipe, tmp_path, compiled):
    """The replay itself, where there is a GPU: captured at step 4, then the same weights as eager up to
    kernel rounding (cuDNN may choose other algorithms in another process)."""
    tiny_recipe.write_text(tiny_recipe.read_text() + CAPTURABLE)
    common = ["--set", "train.device=cuda", "--set", "train.steps=10", "--set", f"train.compile={compiled}",
              "--set", "optim.schedule=linear_decay", "--set", "optim.decay_start=0.0", "--set", "train.log_every=1"]
    cgan("run", str(tiny_recipe), *common, "--set", "train.name=eager", check=True, timeout=600)
    captured = cgan("run", str(tiny_recipe), *common, "--set", "train.name=graph", "--set", "train.cuda_graphs=true",
                    check=True, timeout=600)
    assert "captured the training step as a CUDA graph at step 4" in captured.stderr, captured.stderr
    eager, graph = final_tensors(tmp_path / "runs" / "eager"), final_tensors(tmp_path / "runs" / "graph")
    for key in eager:
        torch.testing.assert_close(graph[key].double(), eager[key].double(), rtol=1e-3, atol=1e-5, msg=key)


class HostReads(TorchDispatchMode):
    """Records every operation that hands a tensor's value to the host (on a GPU, a wait for the device)
    or makes a tensor from host data (a copy from pageable memory): a CUDA graph can hold neither."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
                    torch.ops.aten.equal.default):
            self.seen.append(str(func))
        if func is torch.ops.aten.lift_fresh.default:  # torch.tensor(host data): a host-to-device copy on a GPU
            self.seen.append("a tensor made from host data")
        if func is torch.ops.aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.seen.append("boolean mask indexing")
        return func(*args, **kwargs)


def built_step(tiny_recipe: Path, stabilizers: str) -> tuple[Kit, Any, list[dict[str, torch.Tensor]]]:
    """The method's real step for a recipe, built as `cgan run` builds it, and one batch per critic update."""
    tiny_recipe.write_text(tiny_recipe.read_text() + stabilizers)
    kit = built_kit(tiny_recipe)
    batch = {"input": torch.rand(2, 3, 32, 32) * 2 - 1, "target": torch.rand(2, 3, 32, 32) * 2 - 1}
    return kit, kit.models.method.train_step, [batch]


def built_kit(path: Path) -> Kit:
    """The Kit `cgan run` hands a recipe's method, on the CPU, with rates as a captured step holds them."""
    registry = plugins.registry()
    recipe = load(path, [], registry)
    torch.manual_seed(0)
    models = build_models(recipe, registry)
    models.setup_stabilizers(recipe.train.steps)
    device, context = torch.device("cpu"), distributed.Context()
    optimizers = build_optimizers(models, recipe.optim, device)
    for optimizer in optimizers.values():  # as the captured step holds them
        optimizer.param_groups[0]["lr"] = torch.tensor(2e-4)
    scalers = {name: torch.amp.GradScaler("cpu", enabled=False) for name in optimizers}
    kit = Kit(models, models.networks, optimizers, scalers, NonFiniteLosses(device, context, tuple(optimizers)),
              torch.autocast("cpu", enabled=False), 1, context)
    models.method.setup(kit)
    return kit


def state_tensors(kit: Kit) -> dict[str, torch.Tensor]:
    """Everything a step changes and the next one reads: it must stay where it is."""
    found = {}
    for role, network in kit.networks.items():
        found.update({f"{role}.{k}": v for k, v in network.state_dict(keep_vars=True).items()})
    for name, optimizer in kit.optimizers.items():
        for i, state in enumerate(optimizer.state.values()):
            found.update({f"optim.{name}.{i}.{k}": v for k, v in state.items()})
        found[f"optim.{name}.lr"] = optimizer.param_groups[0]["lr"]
    for i, stabilizer in enumerate(kit.models.stabilizers):
        average = stabilizer.eval_generator("generator")
        if average is not None:
            found.update({f"stabilizers.{i}.{k}": v for k, v in average.state_dict(keep_vars=True).items()})
    found.update({f"nonfinite.{k}": v for k, v in vars(kit.nonfinite).items() if isinstance(v, torch.Tensor)})
    return found


def test_the_step_never_waits_for_the_device_and_keeps_its_state_in_place(tiny_recipe):
    kit, step, batches = built_step(tiny_recipe, CAPTURABLE + AUGMENTED)
    number = torch.tensor(1)
    step(batches, number)  # the first step creates Adam's state and the average
    before = {k: (v.data_ptr(), v.clone()) for k, v in state_tensors(kit).items()}
    with HostReads() as reads:
        for n in (2, 3, 4):
            number.fill_(n)
            step(batches, number)
    assert reads.seen == []
    after = state_tensors(kit)
    assert after.keys() == before.keys()
    moved = [k for k, (address, _) in before.items() if after[k].data_ptr() != address]
    assert moved == []
    # ...and it did change: weights, moments, the average, the step counters.
    changed = {k.split(".")[0] for k, (_, value) in before.items() if not torch.equal(value, after[k])}
    assert {"generator", "critic", "optim", "stabilizers"} <= changed


def test_the_history_buffer_reads_the_host_and_is_refused(tiny_recipe):
    # The check above can fail: the history buffer's host-side draws are seen.
    _, step, batches = built_step(tiny_recipe, '[[stabilizers]]\ntype = "history_buffer"\nsize = 1\n')
    step(batches, torch.tensor(1))
    with HostReads() as reads:
        step(batches, torch.tensor(2))
    assert "aten._local_scalar_dense.default" in reads.seen
    result = cgan("run", str(tiny_recipe), "--set", "train.cuda_graphs=true")
    one_error(result, "train.cuda_graphs", 'stabilizers[0] ("history_buffer")', "cuda_graphs = false")


@pytest.mark.parametrize("setting, fragment", [
    ("train.precision=fp16", 'train.precision = "fp16"'),
    ("train.compile=reduce-overhead", 'train.compile = "reduce-overhead"'),
])
def test_what_cannot_be_captured_is_refused_in_one_line(tiny_recipe, tmp_path, setting, fragment):
    result = cgan("run", str(tiny_recipe), "--set", "train.cuda_graphs=true", "--set", setting)
    one_error(result, "train.cuda_graphs = true", fragment)
    assert not (tmp_path / "runs" / "tiny").exists()  # nothing left behind to push the rerun to tiny-2


def test_a_batch_of_another_shape_is_named_not_broadcast():
    """The static buffers take the first batch's shape; copy_ would silently broadcast a batch of 1."""
    model = torch.nn.Linear(4, 4)
    optimizers = {"model": torch.optim.Adam(model.parameters(), lr=1e-3)}

    def step(batches, number):
        return model(batches[0]["input"]).sum()

    captured = CapturedStep(step, optimizers, torch.device("cpu"))
    captured([{"input": torch.ones(2, 4), "target": torch.ones(2, 4)}], 1)
    with pytest.raises(CganError, match=r"train.cuda_graphs = true: a batch of input shaped \(1, 4\) after batches "
                                        r"of \(2, 4\)"):
        captured([{"input": torch.ones(1, 4), "target": torch.ones(1, 4)}], 2)


def test_the_cyclegan_step_is_capture_ready_too(tmp_path):
    """A second method, four networks and two pools-free critics: no host reads, state in place."""
    from test_cyclegan import TINY

    recipe = tmp_path / "cyc.toml"
    without_pool = TINY.replace('[[stabilizers]]\ntype = "history_buffer"\nsize = 3\n', "")
    recipe.write_text(without_pool + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    models = built_kit(recipe).models
    batches = [{"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}]
    number = torch.tensor(1)
    models.method.train_step(batches, number)
    found = {f"{role}.{k}": v for role, network in models.networks.items()
             for k, v in network.state_dict(keep_vars=True).items()}
    before = {k: v.data_ptr() for k, v in found.items()}
    with HostReads() as reads:
        for n in (2, 3):
            number.fill_(n)
            models.method.train_step(batches, number)
    assert reads.seen == []
    assert all(found[k].data_ptr() == address for k, address in before.items())
