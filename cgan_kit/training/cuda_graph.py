"""``train.cuda_graphs``: the training iteration captured once as a CUDA graph, then replayed.

A replay launches all of a method's iteration's kernels (hundreds for the paper's nets) with one call, so
a small step no longer waits on Python and kernel launches. A graph repeats exactly the work it
recorded, on exactly the memory it recorded; so, for the captured iteration:

- each step's batch is copied into the same input tensors;
- what changes from step to step reaches it through device tensors: the step number (read by
  stabilizers and the non-finite tally) and the learning rates (fused Adam reads a tensor rate);
- every piece of state is updated in place: weights, Adam's moments, norm statistics, the moving
  average, the non-finite tally;
- nothing inside waits for the device: the non-finite check and Adam's skip stay on the device,
  and gradient norms are read from the gradients after the replay, on log steps only.

The first steps run eagerly on the capture stream (cuDNN picks its algorithms, Adam creates its
state); the graph is captured at the next step and replayed from then on. On a device without
CUDA graphs the same static-buffer step runs each time without capture, so a recipe stays
portable. The CPU tests run that step; the side-stream warm-up, the capture and the replays
themselves run only on a GPU.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from cgan_kit.config.build import Models
from cgan_kit.config.recipe import Recipe
from cgan_kit.errors import CganError
from cgan_kit.training import distributed

Batch = dict[str, torch.Tensor]  # a batch's tensors on the training device, by the dataset's keys

WARMUP_STEPS = 3  # eager steps before capture, as torch's own whole-network example does

KEY = "train.cuda_graphs"


def check_capturable(recipe: Recipe, models: Models, amp_dtype: torch.dtype | None, device: torch.device,
                     context: distributed.Context) -> None:
    """Refuse, in one line naming the setting, what a captured step cannot hold."""
    if amp_dtype == torch.float16:
        raise CganError(f'{KEY} = true with train.precision = "fp16": the fp16 loss scaler is not captured; '
                        'use precision = "bf16" (same speed, no scaler) or cuda_graphs = false')
    if recipe.train.compile == "reduce-overhead":
        raise CganError(f'{KEY} = true with train.compile = "reduce-overhead": both capture CUDA graphs; keep one '
                        '(compile = "default" or "max-autotune" combine with cuda_graphs)')
    for i, (spec, stabilizer) in enumerate(zip(recipe.stabilizers, models.stabilizers)):
        if not stabilizer.capturable:
            raise CganError(f'{KEY} = true: stabilizers[{i}] ("{spec.type}") cannot run inside a CUDA graph (it '
                            f'decides on the host, or does not say it can); remove it or set cuda_graphs = false')
    if device.type == "cuda" and context.active:
        raise CganError(f"{KEY} = true with {context.world} processes: a captured step does not yet average "
                        "gradients across GPUs; train on one GPU, or set cuda_graphs = false")


def captures(cuda_graphs: bool, device: torch.device) -> bool:
    """Whether a run with this ``train.cuda_graphs`` on ``device`` really captures a graph (CUDA
    only; elsewhere the same step runs uncaptured)."""
    return cuda_graphs and device.type == "cuda"


def compile_mode(mode: str, device: torch.device) -> str:
    """The torch.compile mode to use inside a captured step: "max-autotune" would capture graphs
    of its own, which cannot nest in ours."""
    return "max-autotune-no-cudagraphs" if mode == "max-autotune" and device.type == "cuda" else mode


class CapturedStep:
    """Runs a training step from static input buffers: captured as a CUDA graph after ``warmup``
    eager steps on CUDA, eagerly from the same buffers elsewhere. ``step(batches, number)`` must
    meet the rules above; ``number`` is the step's number as a 0-dim int64 tensor on the device."""

    def __init__(self, step: Callable[[list[Batch], torch.Tensor], Any], optimizers: dict[str, torch.optim.Optimizer],
                 device: torch.device, announce: Callable[[str], None] = lambda message: None,
                 warmup: int = WARMUP_STEPS):
        self.step, self.optimizers, self.device, self.announce, self.warmup = step, optimizers, device, announce, warmup
        self.inputs: list[Batch] | None = None  # made like the first batches
        self.number = torch.zeros((), dtype=torch.int64, device=device)
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:  # fused Adam reads a float32 tensor rate on the device
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.result: Any = None
        self.eager_steps = 0

    def __call__(self, batches: list[Batch], number: int) -> Any:
        """One step on ``batches`` as step ``number``; returns what the step returned (for a
        replay: the tensors its capture returned, now holding this step's values)."""
        if self.inputs is None:
            self.inputs = [{key: torch.empty_like(tensor) for key, tensor in batch.items()} for batch in batches]
        for static, batch in zip(self.inputs, batches):
            for key, tensor in batch.items():
                if static[key].shape != tensor.shape:  # copy_ would broadcast or fail obscurely
                    raise CganError(f"{KEY} = true: a batch of {key} shaped {tuple(tensor.shape)} after batches of "
                                    f"{tuple(static[key].shape)}; a captured step takes one shape: make the dataset "
                                    "give one image size, or set cuda_graphs = false")
                static[key].copy_(tensor, non_blocking=True)
        self.number.fill_(number)
        if self.stream is None:
            return self.step(self.inputs, self.number)
        if self.graph is not None:
            self.graph.replay()
            return self.result
        if self.eager_steps < self.warmup:
            return self._eager()
        return self._capture(number)

    def _eager(self) -> Any:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = self.step(self.inputs, self.number)
        current.wait_stream(self.stream)
        self.eager_steps += 1
        return result

    def _capture(self, number: int) -> Any:
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                # Adam's capture check wants it; the fused kernel is the same. Adam also warns when a
                # capturable group steps uncaptured, which never happens: from here on it only replays.
                group["capturable"] = True
        graph = torch.cuda.CUDAGraph()
        try:
            # "thread_local": a DataLoader's pin-memory thread may call CUDA while this thread captures.
            # A compiled network that recompiled here would make host calls the capture cannot hold: the
            # warm-up steps must have compiled every variant, so a recompile is an error, not a surprise.
            with torch._dynamo.config.patch(error_on_recompile=True), \
                    torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self.result = self.step(self.inputs, self.number)
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CganError(f"{KEY} = true: the training step could not be captured as a CUDA graph "
                            f"({first_line}); a network, loss or stabilizer waits for the device or "
                            "recompiles; set cuda_graphs = false (run with --debug for the trace)") from error
        self.graph = graph
        self.graph.replay()  # capture records the work without doing it
        self.announce(f"captured the training step as a CUDA graph at step {number}; replaying it from here")
        return self.result
