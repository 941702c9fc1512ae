"""One training iteration: the critic's update(s), then the generator's, on batches already on the device.

The iteration is one function of its batches and its step number, with no wait for the device
anywhere inside. That is what lets ``train.cuda_graphs`` capture it once and replay it
(``cuda_graph.py``); without graphs the loop simply calls it each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from cgan_kit import distributed
from cgan_kit.build import Models
from cgan_kit.errors import CganError
from cgan_kit.settings import OptimSettings

Batch = tuple[Tensor, Tensor]  # (inputs, targets) on the training device


def build_optimizers(generator: torch.nn.Module, critic: torch.nn.Module, opt: OptimSettings,
                     device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Adam for both networks, fused (one pass over each tensor, no temporaries) where torch has
    the kernel: on the CPU it made a step of the paper's nets 17-20 % faster (``benchmarks/cpu_step.py``)."""
    fused = device.type in ("cpu", "cuda")
    return {
        "generator": torch.optim.Adam(generator.parameters(), lr=opt.lr, betas=opt.betas,
                                      weight_decay=opt.weight_decay, fused=fused),
        "critic": torch.optim.Adam(critic.parameters(), lr=opt.lr * opt.critic_lr_factor, betas=opt.betas,
                                   weight_decay=opt.weight_decay, fused=fused),
    }


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's rate: in place where it is a tensor (a captured step reads it from there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def grad_norms(models: Models) -> dict[str, float]:
    """The gradient norms of the last updates, read after a step (fp16's scaled gradients aside)."""
    return {"grad_norm/critic": grad_norm(models.critic), "grad_norm/generator": grad_norm(models.generator)}


class NonFiniteLosses:
    """Updates whose loss is NaN or infinite, skipped and tallied on the device without waiting
    for it: the fused Adam step leaves weights and moments untouched where its ``found_inf`` is 1,
    and the loop reads the tally only where it waits for the device anyway (log, sample, evaluation
    and checkpoint steps, the end). A host sync per update would drain a GPU's queue twice a step;
    a CUDA graph can hold none. The tally is updated in place, so a replayed graph carries it on."""

    WHAT = ("critic", "generator")

    def __init__(self, device: torch.device, context: distributed.Context):
        self.context = context
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
        self.first_what.copy_(torch.where(first, self.WHAT.index(what), self.first_what))
        self.first_value.copy_(torch.where(first, value, self.first_value))
        self.count.add_(bad.long())
        return bad

    def check(self, step: int, on_nonfinite: str, last_checkpoint: Callable[[], Any]) -> int:
        """The number of updates skipped so far; raises under on_nonfinite = "stop" if any were,
        naming ``last_checkpoint()``. Waits for the device: call it where the loop syncs anyway, on
        every process alike."""
        count = int(self.count.item())
        if count and on_nonfinite == "stop":
            first, what = int(self.first_step.item()), self.WHAT[int(self.first_what.item())]
            raise CganError(f"step {first}: the {what} loss is {self.first_value.item()}; that update was skipped "
                            f"and the run stopped at step {step}; the last good checkpoint is {last_checkpoint()}. "
                            f'Lower optim.lr, or set train.on_nonfinite = "skip"')
        return count


def update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: Tensor,
           module: torch.nn.Module, what: str, step: int | Tensor, context: distributed.Context,
           nonfinite: NonFiniteLosses, scalars: dict[str, float] | None) -> None:
    """One optimizer step on ``loss`` (gradients averaged across processes), skipped if the loss is
    not finite; records the gradient norm when logging."""
    optimizer.zero_grad(set_to_none=True)
    skip = nonfinite.flag(loss, what, step)
    scaler.scale(loss).backward()
    distributed.average_gradients(module, context)
    if scalars is not None:
        scaler.unscale_(optimizer)  # a true norm under fp16 loss scaling
        scalars[f"grad_norm/{what}"] = grad_norm(module)
    if scaler.is_enabled():  # fp16: the scaler skips a step whose gradients are not finite by itself
        scaler.step(optimizer)
        scaler.update()
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = skip  # read by the fused kernel, as GradScaler does: no host sync
        optimizer.step()
    elif not skip.item():  # an optimizer without the fused kernel: ask the host
        optimizer.step()


@dataclass
class StepResult:
    """What one iteration leaves for the log, as tensors on the device (read only when logging)."""

    critic_loss: Tensor
    generator_loss: Tensor
    terms: dict[str, Tensor]  # the generator loss's weighted parts, "loss/g_<name>"
    real_scores: Tensor
    fake_scores: Tensor


class AdversarialStep:
    """One iteration of adversarial training on the recipe's models, losses and stabilizers.

    ``run_generator`` and ``run_critic`` are the modules the forward passes call (compiled ones
    under ``train.compile``); updates, penalties and stabilizers act on the plain modules.
    """

    def __init__(self, models: Models, run_generator: torch.nn.Module, run_critic: torch.nn.Module,
                 optimizers: dict[str, torch.optim.Optimizer], scalers: dict[str, torch.amp.GradScaler],
                 nonfinite: NonFiniteLosses, autocast: torch.autocast, generator_steps: int,
                 context: distributed.Context):
        self.models, self.run_generator, self.run_critic = models, run_generator, run_critic
        self.optimizers, self.scalers, self.nonfinite = optimizers, scalers, nonfinite
        self.autocast, self.generator_steps, self.context = autocast, generator_steps, context

    def __call__(self, batches: list[Batch], step: int | Tensor,
                 scalars: dict[str, float] | None = None) -> StepResult:
        """Update the critic once per batch, then the generator on the last batch. ``step`` is the
        iteration's 1-based number (a device tensor when captured); ``scalars`` collects gradient
        norms on log steps."""
        models, autocast, critic = self.models, self.autocast, self.models.critic

        # --- critic: learn to tell real pairs from generated ones -------------------------------
        for k, (inputs, targets) in enumerate(batches):
            # Only the last fake feeds the generator update, so only it keeps its graph.
            with torch.set_grad_enabled(k == len(batches) - 1), autocast:
                fake = self.run_generator(inputs)
            real_pair = torch.cat([inputs, targets], 1)
            fake_pair = torch.cat([inputs, fake.detach()], 1)
            for stabilizer in models.stabilizers:
                real_pair, fake_pair = stabilizer.critic_inputs(real_pair, fake_pair, step)
            with autocast:
                real_scores, fake_scores = self.run_critic(real_pair).float(), self.run_critic(fake_pair).float()
            real_target, fake_target = torch.ones_like(real_scores), torch.zeros_like(fake_scores)
            for stabilizer in models.stabilizers:
                real_target, fake_target = stabilizer.targets(real_target, fake_target, step)
            critic_loss = real_scores.new_zeros(())
            for item in models.adversarial:
                critic_loss = critic_loss + item.weight * item.loss.critic_loss(
                    real_scores, fake_scores, real_target, fake_target)
                # The penalty differentiates through the critic twice: the plain module, in fp32.
                penalty = item.loss.penalty(critic, real_pair, fake_pair)
                if penalty is not None:
                    critic_loss = critic_loss + item.weight * penalty
            update(self.optimizers["critic"], self.scalers["critic"], critic_loss, critic, "critic", step,
                   self.context, self.nonfinite, scalars)

        # --- generator: fool the critic and stay close to the target ----------------------------
        critic.requires_grad_(False)  # no critic gradients needed here: saves their compute
        for k in range(self.generator_steps):
            with autocast:
                if k > 0:
                    fake = self.run_generator(inputs)  # the previous fake predates the last update
                fake_scores_g = self.run_critic(torch.cat([inputs, fake], 1)).float()
            fake = fake.float()
            terms = {f"loss/g_{item.name}": item.weight * item.loss.generator_loss(fake_scores_g)
                     for item in models.adversarial}
            terms.update({f"loss/g_{item.name}": item.weight * item.loss(fake, targets)
                          for item in models.reconstruction})
            generator_loss = sum(terms.values())
            update(self.optimizers["generator"], self.scalers["generator"], generator_loss, models.generator,
                   "generator", step, self.context, self.nonfinite, scalars)
        critic.requires_grad_(True)
        for stabilizer in models.stabilizers:
            stabilizer.after_generator_step(models.generator, step)
        return StepResult(critic_loss.detach(), generator_loss.detach(), {k: v.detach() for k, v in terms.items()},
                          real_scores.detach(), fake_scores.detach())
