"""Built-in losses: the adversarial objectives (BCE, least squares, hinge, WGAN-GP) and the reconstruction
losses (L1, focal frequency)."""

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgan_kit import AdversarialLoss, Range, ReconstructionLoss, hookimpl


class BinaryCrossEntropy(AdversarialLoss):
    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor, real_target: Tensor,
                    fake_target: Tensor) -> Tensor:
        # Halved, as the paper slows the critic relative to the generator.
        return 0.5 * (F.binary_cross_entropy_with_logits(real_scores, real_target)
                      + F.binary_cross_entropy_with_logits(fake_scores, fake_target))

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        # Non-saturating: maximize log D(fake) rather than minimize log(1 - D(fake)).
        return F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores))


class LeastSquares(AdversarialLoss):
    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor, real_target: Tensor,
                    fake_target: Tensor) -> Tensor:
        return 0.5 * (F.mse_loss(real_scores, real_target) + F.mse_loss(fake_scores, fake_target))

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        return F.mse_loss(fake_scores, torch.ones_like(fake_scores))

    def realness(self, scores: Tensor) -> Tensor:
        return scores.float().clamp(0, 1)  # trained toward 1 for real and 0 for fake


class Hinge(AdversarialLoss):
    uses_targets = False

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor, real_target: Tensor,
                    fake_target: Tensor) -> Tensor:
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean()

    def realness(self, scores: Tensor) -> Tensor:
        return (scores.float().clamp(-1, 1) + 1) / 2  # the margins are at -1 (fake) and +1 (real)


class WassersteinGP(AdversarialLoss):
    uses_targets = False

    def __init__(self, gp_weight: float):
        self.gp_weight = gp_weight

    def critic_loss(self, real_scores: Tensor, fake_scores: Tensor, real_target: Tensor,
                    fake_target: Tensor) -> Tensor:
        return fake_scores.mean() - real_scores.mean()

    def generator_loss(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean()

    def penalty(self, critic: nn.Module, real_pair: Tensor, fake_pair: Tensor) -> Tensor:
        alpha = torch.rand(real_pair.shape[0], 1, 1, 1, device=real_pair.device, dtype=real_pair.dtype)
        mixed = torch.lerp(fake_pair.detach(), real_pair.detach(), alpha).requires_grad_(True)
        # The loss sees an image's patch scores through their mean, so that mean is the function
        # whose gradient is held to norm 1.
        scores = critic(mixed).flatten(1).mean(1)
        # create_graph: the penalty must itself be differentiated with respect to the critic's weights.
        (gradient,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
        return self.gp_weight * ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()


class L1(ReconstructionLoss):
    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(output, target)


class FocalFrequency(ReconstructionLoss):
    def __init__(self, alpha: float):
        self.alpha = alpha

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        # In float32 whatever the autocast: the FFT has no bf16 kernels, and spectra span a wide range.
        difference = torch.fft.fft2(output.float() - target.float(), norm="ortho")
        distance = difference.real**2 + difference.imag**2  # per image, channel and frequency
        with torch.no_grad():
            # Each frequency weighs by how far it is off, relative to the worst of its image and
            # channel, so the frequencies the generator finds hard (fine detail) dominate; constant.
            # Normalized before the power, so that a large alpha on small errors cannot underflow.
            magnitude = distance.sqrt()
            weight = (magnitude / magnitude.flatten(-2).amax(-1).clamp_min(1e-30)[..., None, None]) ** self.alpha
        return (weight * distance).mean()


def bce() -> AdversarialLoss:
    """The paper's GAN loss: binary cross-entropy on the critic's logits (non-saturating for the generator).

    The critic's loss is the mean of its real and fake terms (the paper halves it); its targets are
    the loop's (1 real, 0 fake, or what a stabilizer made of them).
    """
    return BinaryCrossEntropy()


def lsgan() -> AdversarialLoss:
    """Least-squares GAN: squared distance of the scores to their targets (the generator's target is 1).

    The critic's loss is the mean of its real and fake terms, as for "bce".
    """
    return LeastSquares()


def hinge() -> AdversarialLoss:
    """Hinge loss (SAGAN): the critic pushes real scores above 1 and fake ones below -1.

    Critic: mean(relu(1 - real)) + mean(relu(1 + fake)); generator: -mean(fake). The critic's
    targets are ignored, so label smoothing or flipping has no effect.
    """
    return Hinge()


def wgan_gp(gp_weight: Annotated[float, Range(ge=0)] = 10.0) -> AdversarialLoss:
    """Wasserstein loss with gradient penalty (WGAN-GP): critic mean(fake) - mean(real), generator -mean(fake).

    The penalty draws one point per image on the line between its real and fake pairs and pushes the
    norm of the critic's gradient there (of the image's mean patch score) toward 1. The critic's
    targets are ignored. Prefer a critic without batch norm ("instance", "none" or "spectral"): batch
    statistics make one image's score depend on the others'.

    Args:
        gp_weight: Weight of the gradient penalty in the critic's loss (the paper's lambda).
    """
    return WassersteinGP(gp_weight)


def l1() -> ReconstructionLoss:
    """L1 reconstruction: mean absolute difference between output and target (the paper's, weight 100)."""
    return L1()


def focal_frequency(alpha: Annotated[float, Range(ge=0)] = 1.0) -> ReconstructionLoss:
    """Focal frequency loss (Jiang et al., 2021): the spectra of output and target compared, hard frequencies first.

    Both images go through a 2-D Fourier transform (orthonormal, per channel); each frequency's squared
    distance is weighted by its own distance to the power ``alpha``, divided by the largest of its image
    and channel, so the frequencies the generator misses most (often the fine detail that L1 blurs)
    count most. The weights are constants. At ``alpha = 0`` it is the mean squared pixel error
    (Parseval). Use it beside L1: its values are small (squared errors, most weighted near 0), so a
    gradient of the same size as L1's takes a weight several times L1's.

    Args:
        alpha: How sharply the weights favour the worst frequencies (0: all alike).
    """
    return FocalFrequency(alpha)


@hookimpl
def register_losses(register):
    register("bce", bce)
    register("lsgan", lsgan)
    register("hinge", hinge)
    register("wgan_gp", wgan_gp)
    register("l1", l1)
    register("focal_frequency", focal_frequency)
