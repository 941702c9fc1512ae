"""The CycleGAN method (Zhu et al., 2017): unpaired translation between two image domains.

Two generators translate A->B and B->A; two critics judge single images, one per domain. Each
iteration, as the reference code's ``optimize_parameters``, first updates both generators
together: fool both critics, undo each other (the cycle losses) and, with ``identity`` > 0, leave
an image of their target domain alone; then both critics together, on real images against
generated ones (through the recipe's history pool, one per critic). Any generator, critic, GAN
loss and stabilizer composes with it; precision, compilation, CUDA graphs and DDP are the engine's.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import Tensor

from cgan_kit import AdversarialLoss, Column, Direction, Method, Network, Networks, Range, hookimpl
from cgan_kit.errors import CganError

CRITICS = ("critic_a", "critic_b")


class CycleGAN(Method):
    """Unpaired translation: two generators, a critic per domain, cycle and identity losses.

    Both generators are built from [generator] and both critics from [critic] (each role has its
    own weights); a critic sees one image, not a pair. Data items hold "A" and "B" images.

    Args:
        cycle_a: Weight of the cycle loss A -> B -> A (L1).
        cycle_b: Weight of the cycle loss B -> A -> B (L1).
        identity: Weight of the identity losses as a fraction of the cycle weights: the A->B
            generator fed a B image should return it (and B->A an A image); 0 turns them off.
    """

    networks = {
        "a_to_b": Network("generator", table="generator"),
        "b_to_a": Network("generator", table="generator"),
        "critic_a": Network("critic", table="critic"),  # judges domain A images: real A against B->A
        "critic_b": Network("critic", table="critic"),  # judges domain B images: real B against A->B
    }
    optimizers = {"generators": ("a_to_b", "b_to_a"), "critics": CRITICS}
    directions = {"AtoB": Direction("a_to_b", source="A", target="B"),
                  "BtoA": Direction("b_to_a", source="B", target="A")}
    measures = "unpaired"

    def __init__(self, cycle_a: Annotated[float, Range(ge=0)] = 10.0, cycle_b: Annotated[float, Range(ge=0)] = 10.0,
                 identity: Annotated[float, Range(ge=0)] = 0.5):
        self.cycle_a, self.cycle_b, self.identity = cycle_a, cycle_b, identity

    def channels(self, role: str, in_channels: int, out_channels: int) -> dict[str, int]:
        if self.identity > 0 and in_channels != out_channels:
            raise CganError(f"method.identity: the identity loss feeds each generator an image of its target domain, "
                            f"but domain A has {in_channels} channels and B {out_channels}; set identity = 0")
        return {"a_to_b": {"in_channels": in_channels, "out_channels": out_channels},
                "b_to_a": {"in_channels": out_channels, "out_channels": in_channels},
                "critic_a": {"in_channels": in_channels},
                "critic_b": {"in_channels": out_channels}}[role]

    def setup(self, kit: Any) -> None:
        super().setup(kit)
        for item in kit.reconstruction:
            raise CganError(f'losses: "{item.name}" compares an output with its paired target, which unpaired data '
                            "does not have; remove it (the cycle and identity terms are the [method] settings "
                            "cycle_a, cycle_b and identity)")

    def _critic_loss(self, role: str, real: Tensor, fake: Tensor, step: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kit = self.kit
        real, fake = kit.critic_inputs(role, real, fake.detach(), step)  # the history pool acts here
        with kit.autocast:
            real_scores, fake_scores = kit.forward[role](real).float(), kit.forward[role](fake).float()
        real_target, fake_target = kit.targets(role, torch.ones_like(real_scores), torch.zeros_like(fake_scores), step)
        loss = sum(item.weight * item.loss.critic_loss(real_scores, fake_scores, real_target, fake_target)
                   for item in kit.adversarial)
        for item in kit.adversarial:
            penalty = item.loss.penalty(kit.networks[role], real, fake)
            if penalty is not None:
                loss = loss + item.weight * penalty
        # The built-in GAN losses halve a critic's loss themselves, as the reference does.
        return loss, real_scores.detach().mean(), fake_scores.detach().mean()

    def train_step(self, batches: list[dict[str, Tensor]], step: int | Tensor) -> dict[str, Tensor]:
        kit = self.kit
        a_to_b, b_to_a = kit.forward["a_to_b"], kit.forward["b_to_a"]
        real_a, real_b = batches[0]["A"], batches[0]["B"]

        # --- generators: fool both critics, undo each other, leave the other domain alone ------
        for role in CRITICS:
            kit.networks[role].requires_grad_(False)  # no critic gradients needed here
        with kit.autocast:
            fake_b, fake_a = a_to_b(real_a), b_to_a(real_b)
            rec_a, rec_b = b_to_a(fake_b), a_to_b(fake_a)
            scores_b = kit.forward["critic_b"](kit.augment("critic_b", fake_b, step)).float()
            scores_a = kit.forward["critic_a"](kit.augment("critic_a", fake_a, step)).float()
        terms = {f"loss/g_{item.name}": item.weight * (item.loss.generator_loss(scores_b)
                                                       + item.loss.generator_loss(scores_a))
                 for item in kit.adversarial}
        terms["loss/g_cycle_a"] = self.cycle_a * (rec_a.float() - real_a).abs().mean()
        terms["loss/g_cycle_b"] = self.cycle_b * (rec_b.float() - real_b).abs().mean()
        if self.identity > 0:
            with kit.autocast:
                same_b, same_a = a_to_b(real_b), b_to_a(real_a)
            terms["loss/g_identity"] = self.identity * (self.cycle_b * (same_b.float() - real_b).abs().mean()
                                                        + self.cycle_a * (same_a.float() - real_a).abs().mean())
        generator_loss = sum(terms.values())
        kit.update("generators", generator_loss, step)
        for role in CRITICS:
            kit.networks[role].requires_grad_(True)
        kit.after_generator_step("a_to_b", step)
        kit.after_generator_step("b_to_a", step)

        # --- critics: real images against generated ones, once per batch ------------------------
        for k, batch in enumerate(batches):
            if k > 0:  # further critic updates (train.critic_steps) see fresh fakes of their own batch
                real_a, real_b = batch["A"], batch["B"]
                with torch.no_grad(), kit.autocast:
                    fake_b, fake_a = a_to_b(real_a), b_to_a(real_b)
            loss_a, real_score_a, fake_score_a = self._critic_loss("critic_a", real_a, fake_a.float(), step)
            loss_b, real_score_b, fake_score_b = self._critic_loss("critic_b", real_b, fake_b.float(), step)
            critic_loss = loss_a + loss_b
            kit.update("critics", critic_loss, step)
        return {"loss/critic": critic_loss.detach(), "loss/generator": generator_loss.detach(),
                **{key: value.detach() for key, value in terms.items()},
                "critic/real_score": (real_score_a + real_score_b) / 2,
                "critic/fake_score": (fake_score_a + fake_score_b) / 2}

    def samples(self, networks: Networks, losses: list[Any], batch: dict[str, Tensor]) -> list[Column]:
        realness = next(item.loss.realness for item in losses if isinstance(item.loss, AdversarialLoss))
        real_a, real_b = batch["A"], batch["B"]
        fake_b, fake_a = networks["a_to_b"](real_a), networks["b_to_a"](real_b)
        rec_a, rec_b = networks["b_to_a"](fake_b), networks["a_to_b"](fake_a)
        return [Column("real A", real_a), Column("fake B", fake_b.float()), Column("reconstructed A", rec_a.float()),
                Column("real B", real_b), Column("fake A", fake_a.float()), Column("reconstructed B", rec_b.float()),
                Column("critic B: fake B", realness(networks["critic_b"](fake_b)), "critic"),
                Column("critic A: fake A", realness(networks["critic_a"](fake_a)), "critic")]


@hookimpl
def register_methods(register: Any) -> None:
    register("cyclegan", CycleGAN)
