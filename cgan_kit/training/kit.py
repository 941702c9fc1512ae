"""What a method's training step may use: the ``Kit`` the engine hands to ``Method.setup``.

A method calls the networks through ``forward`` (compiled ones under ``train.compile``), updates
them with ``update`` (gradients averaged across processes, non-finite losses skipped on the device,
gradient norms logged) and lets the recipe's stabilizers act through ``critic_inputs``,
``augment``, ``targets`` and ``after_generator_step``. Precision, compilation, CUDA graphs and distribution
stay the engine's: a method written against the Kit gets them all.
"""

from __future__ import annotations


import torch
from torch import Tensor

from cgan_kit.config.build import Models, WeightedLoss
from cgan_kit.plugin_api.contracts import Networks
from cgan_kit.training import distributed
from cgan_kit.training.updates import NonFiniteLosses, parameters, update


class Kit:
    """The parts of a run a method's step uses, and the engine's ways of updating them."""

    def __init__(self, models: Models, forward: Networks, optimizers: dict[str, torch.optim.Optimizer],
                 scalers: dict[str, torch.amp.GradScaler], nonfinite: NonFiniteLosses, autocast: torch.autocast,
                 generator_steps: int, context: distributed.Context):
        self.models = models
        self.networks: Networks = models.networks  # plain modules: updates, penalties, requires_grad
        self.forward: Networks = forward  # what forward passes call (compiled under train.compile)
        self.autocast = autocast  # enter it around forward passes: the run's precision
        self.generator_steps = generator_steps  # train.generator_steps
        self.optimizers, self.scalers, self.nonfinite, self.context = optimizers, scalers, nonfinite, context
        self.scalars: dict[str, float] | None = None  # set by the loop on log steps: gradient norms go here
        self._parameters = {name: parameters(optimizer) for name, optimizer in optimizers.items()}

    @property
    def adversarial(self) -> list[WeightedLoss]:
        return self.models.adversarial

    @property
    def reconstruction(self) -> list[WeightedLoss]:
        return self.models.reconstruction

    def update(self, optimizer: str, loss: Tensor, step: int | Tensor) -> None:
        """One step of the optimizer named ``optimizer`` (see ``Method.optimizers``) on ``loss``."""
        update(self.optimizers[optimizer], self.scalers[optimizer], loss, self._parameters[optimizer], optimizer,
               step, self.context, self.nonfinite, self.scalars)

    def critic_inputs(self, role: str, real: Tensor, fake: Tensor, step: int | Tensor) -> tuple[Tensor, Tensor]:
        """What the critic ``role`` sees in its update, after every stabilizer had its say."""
        for stabilizer in self.models.stabilizers:
            real, fake = stabilizer.critic_inputs(real, fake, step, role=role)
        return self.augment(role, real, step), self.augment(role, fake, step)

    def augment(self, role: str, images: Tensor, step: int | Tensor) -> Tensor:
        """What the critic ``role`` sees of generated images in a generator update: the stabilizers'
        augmentation, which ``critic_inputs`` applies in the critic's own update, so that the critic
        judges the same kind of input in both."""
        for stabilizer in self.models.stabilizers:
            images = stabilizer.augment(images, step, role=role)
        return images

    def targets(self, role: str, real_target: Tensor, fake_target: Tensor,
                step: int | Tensor) -> tuple[Tensor, Tensor]:
        """The labels the critic ``role`` is trained toward, after every stabilizer had its say."""
        for stabilizer in self.models.stabilizers:
            real_target, fake_target = stabilizer.targets(real_target, fake_target, step, role=role)
        return real_target, fake_target

    def after_generator_step(self, role: str, step: int | Tensor) -> None:
        """Tell the stabilizers that the generator ``role`` was updated (the moving average follows)."""
        for stabilizer in self.models.stabilizers:
            stabilizer.after_generator_step(self.networks[role], step, role=role)
