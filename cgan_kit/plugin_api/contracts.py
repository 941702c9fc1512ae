"""What the components of each kind must be: the contracts between plugins and the engine.

Factories return plain objects; the engine only relies on the methods below. Generators, critics
and activations are ordinary ``torch.nn.Module`` objects and need no base class:

- a generator maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)`` for any ``H, W``;
- a critic maps ``(B, in_channels, H, W)`` (what it sees is its method's choice: pix2pix shows
  it the input|output pair) to raw scores (logits) of shape ``(B, 1, h, w)``, one per patch; it
  may expose ``receptive_field`` (pixels) for ``cgan check``;
- an activation factory returns a fresh module each time it is called.

A ``Method`` is the training algorithm itself: which networks exist (by role), how they are
optimized, one training iteration, what its samples show and how it translates. A ``Logger``
receives what a run records (scalars, sample grids, the resolved recipe) for one destination.

This module imports no torch, so that the CLI starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

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

    uses_targets: bool = True
    """False where ``critic_loss`` ignores its targets (hinge, Wasserstein): a stabilizer that only
    changes the targets (label smoothing) then has no effect, which ``cgan check`` and ``cgan run`` say."""

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


class Networks(dict):
    """The networks of a run by role (``{"generator": ..., "critic": ...}`` for pix2pix), with the
    kind of each role ("generator" or "critic")."""

    def __init__(self, modules: dict[str, Any], kinds: dict[str, str]):
        super().__init__(modules)
        self.kinds = dict(kinds)

    def roles(self, kind: str) -> list[str]:
        """The roles of one kind, in declaration order."""
        return [role for role in self if self.kinds[role] == kind]


class Stabilizer:
    """A training trick applied by a method's step at fixed points. Every hook is a no-op here;
    override the ones a stabilizer needs. Stabilizers run in the order the recipe lists them.

    ``role`` names the network a hook is called for (a method with two critics calls
    ``critic_inputs`` once per critic); a stabilizer keeps separate state per role where it has any.
    ``step`` is the iteration's 1-based number: an int, or, when the loop captures its step as a
    CUDA graph (``train.cuda_graphs``), a 0-dim int64 tensor on the training device. A stabilizer
    that sets ``capturable = True`` promises hooks that work with either: ``step`` used only in
    tensor arithmetic, state changed in place, and no value read back to the host (no ``.item()``,
    no Python ``if`` on a tensor). The loop refuses ``cuda_graphs`` with any other stabilizer.
    """

    capturable: bool = False

    def setup(self, networks: Networks, total_steps: int) -> None:
        """Called once after the networks are built and before the optimizers exist."""

    def targets(self, real_target: Tensor, fake_target: Tensor, step: int | Tensor,
                role: str) -> tuple[Tensor, Tensor]:
        """Change the labels the critic ``role`` is trained toward (smoothing, flipping)."""
        return real_target, fake_target

    def critic_inputs(self, real: Tensor, fake: Tensor, step: int | Tensor, role: str) -> tuple[Tensor, Tensor]:
        """Change what the critic ``role`` sees in its own update (noise, a pool of past fakes)."""
        return real, fake

    def augment(self, images: Tensor, step: int | Tensor, role: str) -> Tensor:
        """Transform every batch the critic ``role`` scores in training, real and generated alike, in its
        own update (after ``critic_inputs``) and in the generators' (differentiable augmentation): the
        generators learn through the transform, so it must be differentiable."""
        return images

    def after_generator_step(self, generator: nn.Module, step: int | Tensor, role: str) -> None:
        """Called after every update of the generator ``role`` (a moving average updates here)."""

    def eval_generator(self, role: str) -> nn.Module | None:
        """A network to use for samples, evaluation and inference instead of the trained generator
        ``role`` (the moving average), or None."""
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


# ---------------------------------------------------------------------------------------------
# Methods: the training algorithm


@dataclass(frozen=True)
class Network:
    """A network a method trains: its component kind and the recipe table it is built from.
    Several roles may share one table (each gets its own weights)."""

    kind: Literal["generator", "critic"]
    table: str


@dataclass(frozen=True)
class Direction:
    """How a method translates: the generator role that does it, the batch key it reads, and the
    batch key of the images its outputs are measured against."""

    role: str
    source: str = "input"
    target: str = "target"


def inverse(directions: dict[str, Direction], direction: Direction) -> Direction | None:
    """The direction that translates ``direction``'s outputs back to its inputs, if the method has one."""
    return next((d for d in directions.values() if (d.source, d.target) == (direction.target, direction.source)),
                None)


@dataclass(frozen=True)
class Column:
    """One column of the sample grid: images (B, C, H, W) in [-1, 1], or with ``kind = "critic"``
    a critic's per-patch realness (B, 1, h, w) in [0, 1] drawn as a heat map."""

    title: str
    images: Tensor
    kind: Literal["image", "critic"] = "image"


class Method:
    """A training algorithm, registered with ``register_methods`` and chosen by ``[method] type``.

    The class declares what the engine builds and saves; an instance (made from the recipe's
    ``[method]`` table: the constructor's parameters are its keys) trains:

    - ``networks``: role -> ``Network(kind, table)``; the engine builds each from its recipe
      table, with the channels ``channels(role, ...)`` returns, and saves it under its role;
    - ``optimizers``: optimizer name -> the roles it updates (Adam, ``[optim]``; an optimizer that
      updates critics only runs at ``optim.lr * optim.critic_lr_factor``);
    - ``directions``: name -> ``Direction``; the first is the default of ``cgan translate``;
    - ``measures``: "paired" (L1, PSNR, SSIM, FID, KID against the target) or "unpaired" (FID, KID).

    ``setup(kit)`` receives the engine's ``cgan_kit.training.kit.Kit``; ``train_step`` is one
    iteration and must not wait for the device (no ``.item()``), so that ``train.cuda_graphs``
    can capture it; ``samples`` draws the sample grid's columns.
    """

    networks: ClassVar[dict[str, Network]] = {}
    optimizers: ClassVar[dict[str, tuple[str, ...]]] = {}
    directions: ClassVar[dict[str, Direction]] = {}
    measures: ClassVar[Literal["paired", "unpaired"]] = "paired"

    def channels(self, role: str, in_channels: int, out_channels: int) -> dict[str, int]:
        """The channel arguments of role's factory, from the dataset's ``in_channels`` and
        ``out_channels``: ``{"in_channels": ..., "out_channels": ...}`` for a generator,
        ``{"in_channels": ...}`` for a critic."""
        raise NotImplementedError

    def setup(self, kit: Any) -> None:
        """Called once before training with what a step may use (networks, losses, updates)."""
        self.kit = kit

    def train_step(self, batches: list[dict[str, Tensor]], step: int | Tensor) -> dict[str, Tensor]:
        """One iteration on ``train.critic_steps`` batches already on the device; returns scalars
        for the log as 0-dim device tensors ("loss/critic", ...), read only on log steps."""
        raise NotImplementedError

    def samples(self, networks: Networks, losses: list[Any], batch: dict[str, Tensor]) -> list[Column]:
        """The sample grid's columns for a batch of fixed held-out examples. ``networks`` are in
        evaluation form (generators in eval mode, the moving average where there is one; critics
        normalize with batch statistics); ``losses`` are the recipe's weighted losses."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Loggers: where a run's records go


@dataclass(frozen=True)
class RunInfo:
    """What a logger is told when a run starts or resumes.

    ``saved`` is what this logger's ``start`` returned the last time the run started (the run
    folder keeps it in ``loggers.json``), so that a resumed run continues the same tracker run;
    ``{}`` for a new run. ``message`` shows one line to the user (above the progress bar).
    """

    folder: Path  # the run folder
    name: str  # the run's name (the folder's)
    recipe: dict[str, Any]  # the resolved recipe, as recipe.toml holds it
    recipe_toml: str
    start_step: int  # 0 for a new run; the checkpoint's step when resuming
    total_steps: int  # train.steps
    resumed: bool
    saved: dict[str, Any] = field(default_factory=dict)
    message: Callable[[str], None] = print


Outcome = Literal["finished", "interrupted", "failed"]


class Logger:
    """A destination for what a run records, registered with ``register_loggers`` and chosen by
    ``train.loggers``; the factory's parameters are the keys of ``[loggers.NAME]``.

    Only the training process of rank 0 logs. The engine calls ``start`` once before the first
    step, then ``scalars`` and ``image`` as the run goes, ``flush`` where the run folder is up to
    date (after a step that drew samples or evaluated, its checkpoint included, and at the end),
    and ``close`` once at the end, however the run ends. ``scalars`` of a step already logged may come again after a resume (steps after
    the last checkpoint of a killed run are trained again).

    Errors: raise ``CganError`` for what must stop the run (a full disk under the run folder: the
    user frees space and resumes). Anything else raised by ``start`` stops the run before training
    too; raised later, it costs a warning and this logger is left out for the rest of the run.
    """

    def start(self, run: RunInfo) -> dict[str, Any] | None:
        """Open the destination. Return JSON-serialisable state to get back as ``run.saved`` when
        the run resumes (a tracker's run id), or None."""
        return None

    def scalars(self, step: int, values: dict[str, float], epoch: int) -> None:
        """Record the scalars of a step ("loss/critic", "eval/ssim", "lr/generator", ...)."""

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Record an image: a (3, H, W) float tensor in [0, 1] on the CPU ("samples/grid")."""

    def flush(self, step: int, running: bool) -> None:
        """The run folder is up to date at ``step``; ``running`` is False at the last call."""

    def close(self, outcome: Outcome) -> None:
        """The run ended: "finished" (reached its last step, or ``--until``), "interrupted" (Ctrl-C
        or SIGTERM, saved to resume) or "failed"."""
