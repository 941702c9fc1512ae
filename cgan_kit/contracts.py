"""What the components of each kind must be: the contracts between plugins and the training loop.

Factories return plain objects; the loop only relies on the methods below. Generators, critics
and activations are ordinary ``torch.nn.Module`` objects and need no base class:

- a generator maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` for any ``H, W``;
- a critic maps the concatenated pair ``(B, in_channels, H, W)`` to raw scores (logits) of shape
  ``(B, 1, h, w)``, one per patch; it may expose ``receptive_field`` (pixels) for ``cgan check``;
- an activation factory returns a fresh module each time it is called.

This module imports no torch, so that the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn


class Norm:
    """A normalization as the architectures use it, around each convolution.

    ``conv_bias`` says whether the convolution before the norm needs its own bias (a norm with an
    affine shift makes that bias redundant); ``layer(channels)`` builds the layer placed after the
    convolution; ``wrap(conv)`` may reparametrize the convolution itself (spectral norm does).
    """

    conv_bias: bool = True

    def layer(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def wrap(self, conv: nn.Module) -> nn.Module:
        return conv


class AdversarialLoss:
    """A GAN objective. Scores are the critic's raw outputs; targets are label tensors shaped
    like the scores (1 for real and 0 for fake unless a stabilizer changed them)."""

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor, real_target: Tensor,
                    fake_target: Tensor) -> Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def penalty(self, critic: nn.Module, real_pair: Tensor, fake_pair: Tensor) -> Tensor | None:
        """An extra critic term computed from the critic itself (a gradient penalty), or None."""
        return None

    def realness(self, scores: Tensor) -> Tensor:
        """Scores mapped to [0, 1], 0 judged fake and 1 judged real, for the critic heat maps of
        samples and reports. This default reads scores as logits."""
        return scores.float().sigmoid()


class ReconstructionLoss:
    """A loss between the generator's output and the target image (both in [-1, 1])."""

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError


class Stabilizer:
    """A training trick applied by the loop at fixed points. Every hook is a no-op here;
    override the ones a stabilizer needs. Stabilizers run in the order the recipe lists them.

    ``step`` is the iteration's 1-based number: an int, or, when the loop captures its step as a
    CUDA graph (``train.cuda_graphs``), a 0-dim int64 tensor on the training device. A stabilizer
    that sets ``capturable = True`` promises hooks that work with either: ``step`` used only in
    tensor arithmetic, state changed in place, and no value read back to the host (no ``.item()``,
    no Python ``if`` on a tensor). The loop refuses ``cuda_graphs`` with any other stabilizer.
    """

    capturable: bool = False

    def setup(self, generator: nn.Module, critic: nn.Module, total_steps: int) -> None:
        """Called once after the models are built and before the optimizers exist."""

    def targets(self, real_target: Tensor, fake_target: Tensor, step: int | Tensor) -> tuple[Tensor, Tensor]:
        """Change the labels the critic is trained toward (smoothing, flipping)."""
        return real_target, fake_target

    def critic_inputs(self, real_pair: Tensor, fake_pair: Tensor, step: int | Tensor) -> tuple[Tensor, Tensor]:
        """Change what the critic sees in its own step (noise, a pool of past fakes)."""
        return real_pair, fake_pair

    def after_generator_step(self, generator: nn.Module, step: int | Tensor) -> None:
        """Called after every generator update (a moving average updates here)."""

    def eval_generator(self) -> nn.Module | None:
        """A generator to use for samples and evaluation instead of the trained one, or None."""
        return None

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint; everything needed to resume exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what ``state_dict`` returned."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state to checkpoint beside the tensors."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""
