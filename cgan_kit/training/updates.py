"""Optimizer updates for a method's step: Adam per optimizer group, learning rates, gradient norms,
and non-finite losses skipped on the device.

Nothing here waits for the device inside a step. That is what lets ``train.cuda_graphs`` capture
a method's step once and replay it (``cuda_graph.py``).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch
from torch import Tensor

from cgan_kit.config.build import Models
from cgan_kit.config.settings import OptimSettings
from cgan_kit.errors import CganError
from cgan_kit.training import distributed


def build_optimizers(models: Models, opt: OptimSettings, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Adam for each of the method's optimizers, over the parameters of the roles it updates; one
    that updates critics only runs at ``lr * critic_lr_factor`` (TTUR). Fused (one pass over each
    tensor, no temporaries) where torch has the kernel: on the CPU it made a step of the paper's
    nets 17-20 % faster (``benchmarks/cpu_step.py``)."""
    fused = device.type in ("cpu", "cuda")
    networks, optimizers = models.networks, {}
    for name, roles in type(models.method).optimizers.items():
        critics_only = all(networks.kinds[role] == "critic" for role in roles)
        lr = opt.lr * (opt.critic_lr_factor if critics_only else 1.0)
        parameters = itertools.chain.from_iterable(networks[role].parameters() for role in roles)
        optimizers[name] = torch.optim.Adam(parameters, lr=lr, betas=opt.betas, weight_decay=opt.weight_decay,
                                            fused=fused)
    return optimizers


def parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's rate: in place where it is a tensor (a captured step reads it from there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def grad_norm(params: Any) -> float:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def grad_norms(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
    """The gradient norms of the last updates, read after a step (fp16's scaled gradients aside)."""
    return {f"grad_norm/{name}": grad_norm(parameters(optimizer)) for name, optimizer in optimizers.items()}


class NonFiniteLosses:
    """Updates whose loss is NaN or infinite, skipped and tallied on the device without waiting
    for it: the fused Adam step leaves weights and moments untouched where its ``found_inf`` is 1,
    and the loop reads the tally only where it waits for the device anyway (log, sample, evaluation
    and checkpoint steps, the end). A host sync per update would drain a GPU's queue twice a step;
    a CUDA graph can hold none. The tally is updated in place, so a replayed graph carries it on."""

    def __init__(self, device: torch.device, context: distributed.Context,
                 names: tuple[str, ...] = ("critic", "generator")):
        self.context, self.names = context, tuple(names)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_what = torch.zeros((), dtype=torch.int64, device=device)
        self.first_value = torch.zeros((), dtype=torch.float32, device=device)

    def flag(self, loss: Tensor, what: str, step: int | Tensor) -> Tensor:
        """1.0 (on the device) if this update must be skipped: its loss is not finite on some process."""
        value = loss.detach().float()
        bad = distributed.device_max((~torch.isfinite(value)).float(), self.context)
        first = (bad > 0) & (self.first_step < 0)
        self.first_step.copy_(torch.where(first, step, self.first_step))
        self.first_what.copy_(torch.where(first, self.names.index(what), self.first_what))
        self.first_value.copy_(torch.where(first, value, self.first_value))
        self.count.add_(bad.long())
        return bad

    def check(self, step: int, on_nonfinite: str, last_checkpoint: Callable[[], Any]) -> int:
        """The number of updates skipped so far; raises under on_nonfinite = "stop" if any were,
        naming ``last_checkpoint()``. Waits for the device: call it where the loop syncs anyway, on
        every process alike."""
        count = int(self.count.item())
        if count and on_nonfinite == "stop":
            first, what = int(self.first_step.item()), self.names[int(self.first_what.item())]
            raise CganError(f"step {first}: the {what} loss is {self.first_value.item()}; that update was skipped "
                            f"and the run stopped at step {step}; the last good checkpoint is {last_checkpoint()}. "
                            f'Lower optim.lr, or set train.on_nonfinite = "skip"')
        return count


def update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: Tensor,
           params: Any, what: str, step: int | Tensor, context: distributed.Context,
           nonfinite: NonFiniteLosses, scalars: dict[str, float] | None) -> None:
    """One optimizer step on ``loss`` (gradients averaged across processes), skipped if the loss is
    not finite; records the gradient norm when logging. ``params`` may be a module."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    optimizer.zero_grad(set_to_none=True)
    skip = nonfinite.flag(loss, what, step)
    scaler.scale(loss).backward()
    distributed.average_gradients(params, context)
    if scalars is not None:
        scaler.unscale_(optimizer)  # a true norm under fp16 loss scaling
        scalars[f"grad_norm/{what}"] = grad_norm(params)
    if scaler.is_enabled():  # fp16: the scaler skips a step whose gradients are not finite by itself
        scaler.step(optimizer)
        scaler.update()
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = skip  # read by the fused kernel, as GradScaler does: no host sync
        optimizer.step()
    elif not skip.item():  # an optimizer without the fused kernel: ask the host
        optimizer.step()
