"""The pix2pix method (Isola et al., 2017): a generator translates an input image into an output
image; a critic judges input|output pairs against input|target pairs.

Each iteration updates the critic once per batch (``train.critic_steps``) on real and generated
pairs, then the generator (``train.generator_steps`` times) against the critic plus the
reconstruction losses. Any generator, critic, GAN loss and stabilizer of the recipe composes with
it; precision, compilation, CUDA graphs and data-parallel training are the engine's.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cgan_kit import AdversarialLoss, Column, Direction, Method, Network, Networks, Range, hookimpl
from cgan_kit.errors import CganError


class Pix2Pix(Method):
    """Paired image-to-image translation: a generator and a critic of input|output pairs (the default).

    The critic sees the input image beside the real or generated output; the generator learns to
    fool it and to stay close to the target under the recipe's reconstruction losses (L1 in the
    paper). Networks come from ``[generator]`` and ``[critic]``.

    Args:
        feature_matching: Weight of pix2pixHD's feature-matching loss (Wang et al., 2018): the L1
            distance between the critic's feature maps of the generated pair and of the real pair,
            averaged over its blocks (and scales), which gives the generator a signal at every
            depth of the critic. 0 (the paper's pix2pix) turns it off; needs a critic that shows its
            features (patchgan, pixelgan, multiscale_patchgan).
    """

    networks = {"generator": Network("generator", table="generator"), "critic": Network("critic", table="critic")}
    optimizers = {"generator": ("generator",), "critic": ("critic",)}
    directions = {"AtoB": Direction("generator", source="input", target="target")}
    measures = "paired"

    def __init__(self, feature_matching: Annotated[float, Range(ge=0)] = 0.0):
        self.feature_matching = feature_matching

    def setup(self, kit: Any) -> None:
        super().setup(kit)
        critic = kit.networks["critic"]
        if self.feature_matching > 0 and not callable(getattr(critic, "features", None)):
            raise CganError(f"method.feature_matching: the critic ({type(critic).__name__}) has no features(x) "
                            "method giving its feature maps; choose a critic that has one (patchgan, pixelgan, "
                            "multiscale_patchgan) or set feature_matching = 0")

    def channels(self, role: str, in_channels: int, out_channels: int) -> dict[str, int]:
        if role == "generator":
            return {"in_channels": in_channels, "out_channels": out_channels}
        return {"in_channels": in_channels + out_channels}  # the critic sees input|output pairs

    def train_step(self, batches: list[dict[str, Tensor]], step: int | Tensor) -> dict[str, Tensor]:
        kit = self.kit
        run_generator, run_critic, critic = kit.forward["generator"], kit.forward["critic"], kit.networks["critic"]

        # --- critic: learn to tell real pairs from generated ones -------------------------------
        for k, batch in enumerate(batches):
            inputs, targets = batch["input"], batch["target"]
            # Only the last fake feeds the generator update, so only it keeps its graph.
            with torch.set_grad_enabled(k == len(batches) - 1), kit.autocast:
                fake = run_generator(inputs)
            real_pair = torch.cat([inputs, targets], 1)
            fake_pair = torch.cat([inputs, fake.detach()], 1)
            real_pair, fake_pair = kit.critic_inputs("critic", real_pair, fake_pair, step)
            with kit.autocast:
                real_scores, fake_scores = run_critic(real_pair).float(), run_critic(fake_pair).float()
            real_target, fake_target = kit.targets("critic", torch.ones_like(real_scores),
                                                   torch.zeros_like(fake_scores), step)
            critic_loss = real_scores.new_zeros(())
            for item in kit.adversarial:
                critic_loss = critic_loss + item.weight * item.loss.critic_loss(
                    real_scores, fake_scores, real_target, fake_target)
                # The penalty differentiates through the critic twice: the plain module, in fp32.
                penalty = item.loss.penalty(critic, real_pair, fake_pair)
                if penalty is not None:
                    critic_loss = critic_loss + item.weight * penalty
            kit.update("critic", critic_loss, step)

        # --- generator: fool the critic and stay close to the target ----------------------------
        critic.requires_grad_(False)  # no critic gradients needed here: saves their compute
        for k in range(kit.generator_steps):
            with kit.autocast:
                if k > 0:
                    fake = run_generator(inputs)  # the previous fake predates the last update
                fake_scores_g = run_critic(kit.augment("critic", torch.cat([inputs, fake], 1), step)).float()
            fake = fake.float()
            terms = {f"loss/g_{item.name}": item.weight * item.loss.generator_loss(fake_scores_g)
                     for item in kit.adversarial}
            terms.update({f"loss/g_{item.name}": item.weight * item.loss(fake, targets)
                          for item in kit.reconstruction})
            if self.feature_matching > 0:
                terms["loss/g_feature_matching"] = self.feature_matching * self._feature_distance(
                    critic, torch.cat([inputs, targets], 1), torch.cat([inputs, fake], 1))
            generator_loss = sum(terms.values())
            kit.update("generator", generator_loss, step)
        critic.requires_grad_(True)
        kit.after_generator_step("generator", step)
        return {"loss/critic": critic_loss.detach(), "loss/generator": generator_loss.detach(),
                **{key: value.detach() for key, value in terms.items()},
                "critic/real_score": real_scores.detach().mean(), "critic/fake_score": fake_scores.detach().mean()}

    def _feature_distance(self, critic: Any, real_pair: Tensor, fake_pair: Tensor) -> Tensor:
        """Mean over the critic's feature maps of the L1 distance between the generated pair's and
        the real pair's (a fixed target: no gradient through the real side)."""
        with torch.no_grad(), self.kit.autocast:
            real_maps = critic.features(real_pair)
        with self.kit.autocast:
            fake_maps = critic.features(fake_pair.to(real_pair.dtype))
        distances = [F.l1_loss(fake.float(), real.float()) for fake, real in zip(fake_maps, real_maps)]
        return torch.stack(distances).mean()

    def samples(self, networks: Networks, losses: list[Any], batch: dict[str, Tensor]) -> list[Column]:
        realness = next(item.loss.realness for item in losses if isinstance(item.loss, AdversarialLoss))
        inputs, targets = batch["input"], batch["target"]
        generator, critic = networks["generator"], networks["critic"]
        outputs = generator(inputs).float()
        fake_map = realness(critic(torch.cat([inputs, outputs.to(inputs.dtype)], 1)))
        real_map = realness(critic(torch.cat([inputs, targets], 1)))
        return [Column("input", inputs), Column("output", outputs), Column("target", targets),
                Column("critic: output", fake_map, "critic"), Column("critic: target", real_map, "critic")]


@hookimpl
def register_methods(register: Any) -> None:
    register("pix2pix", Pix2Pix)
