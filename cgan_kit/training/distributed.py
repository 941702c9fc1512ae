"""Data-parallel training across processes started by ``torchrun`` (one per GPU, or gloo on CPUs).

Every process holds full copies of both networks and trains on its own slice of each global
batch; after every backward pass the gradients are averaged across processes, so each process
takes the same update that one process would take on the whole global batch. Averaging
explicitly (one flattened all-reduce per network per update) rather than wrapping the networks
in ``DistributedDataParallel`` keeps the loop free to call the critic several times per step and
to differentiate through it for gradient penalties, which DDP's hooks do not allow.
Only rank 0 writes: logs, samples, evaluations and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` processes (1 without torchrun).
    ``host_group`` is the gloo group the processes' host loops vote in (None in a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    host_group: Any = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True inside a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start() -> tuple[Context, torch.device | None]:
    """Join the process group torchrun set up; returns the context and, under torchrun, this
    process's device: its own GPU (LOCAL_RANK) with NCCL where there are GPUs, else the CPU with gloo."""
    if not launched():
        return Context(), None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    # NCCL reduces device tensors: reading the result would wait for every kernel queued before it.
    # Votes on host facts (a stop request) go through a gloo group of their own on CPU tensors instead
    # (made under gloo too, so that the CPU tests take the same path).
    host_group = dist.new_group(backend="gloo")
    return Context(rank, world, local_rank, host_group), device


def stop(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def wait_for_all(context: Context) -> None:
    """Block until every process gets here. Runs end with it so that no process tears down its
    process group while rank 0 still evaluates and writes: destroying the group is meant to be
    done by all processes together, and a rank that left early has been seen to abort in gloo."""
    if context.active:
        dist.barrier()


def share(value: Any, context: Context) -> Any:
    """Rank 0's ``value`` on every process (a run folder's path, say)."""
    if not context.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def same_start(module: torch.nn.Module, context: Context) -> None:
    """Give every process rank 0's weights and buffers."""
    if context.active:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: Any, context: Context) -> None:
    """Average the gradients of ``parameters`` across processes, in one collective."""
    if not context.active:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= context.world
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def device_max(value: torch.Tensor, context: Context) -> torch.Tensor:
    """The largest ``value`` over all processes, left on the device: no wait for it."""
    if context.active:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def anywhere(flag: bool, context: Context) -> bool:
    """Whether a host-side ``flag`` holds on at least one process (a stop request seen by one of
    them), so that all of them act alike. Voted on the host: asking never waits for a GPU."""
    if not context.active:
        return flag
    vote = torch.tensor([int(flag)])
    dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=context.host_group)
    return bool(vote.item())
