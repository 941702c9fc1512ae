"""An example cgan-kit method, written from docs/plugins.md alone: paired translation both ways.

Two generators (A->B and B->A) and two critics (one judging A|B pairs, one B|A pairs) train
together on paired data; a cycle loss asks each generator to undo the other. Four networks, two
optimizers that each update two of them, and two directions for `cgan translate --direction`.
Everything else (precision, compilation, CUDA graphs, DDP, checkpoints, resume, samples, the
report, evaluation, export) comes from cgan-kit.
"""

from __future__ import annotations

from typing import Annotated

import torch

from cgan_kit import AdversarialLoss, Column, Direction, Method, Network, Range, hookimpl


class TwoWay(Method):
    """Paired translation both ways: two generators, two pair critics and a cycle loss.

    Args:
        cycle_weight: Weight of the cycle loss |B->A(A->B(a)) - a| + |A->B(B->A(b)) - b|; 0 turns it off.
    """

    networks = {
        "a_to_b": Network("generator", table="generator"),  # both generators from [generator]
        "b_to_a": Network("generator", table="generator"),
        "critic_b": Network("critic", table="critic"),      # judges a|b pairs
        "critic_a": Network("critic", table="critic"),      # judges b|a pairs
    }
    optimizers = {"generators": ("a_to_b", "b_to_a"), "critics": ("critic_b", "critic_a")}
    directions = {"AtoB": Direction("a_to_b", source="input", target="target"),
                  "BtoA": Direction("b_to_a", source="target", target="input")}
    measures = "paired"

    def __init__(self, cycle_weight: Annotated[float, Range(ge=0)] = 10.0):
        self.cycle_weight = cycle_weight

    def channels(self, role, in_channels, out_channels):
        return {"a_to_b": {"in_channels": in_channels, "out_channels": out_channels},
                "b_to_a": {"in_channels": out_channels, "out_channels": in_channels},
                "critic_b": {"in_channels": in_channels + out_channels},
                "critic_a": {"in_channels": in_channels + out_channels}}[role]

    def _critic_loss(self, role, real, fake, step):
        kit = self.kit
        real, fake = kit.critic_inputs(role, real, fake, step)
        with kit.autocast:
            real_scores, fake_scores = kit.forward[role](real).float(), kit.forward[role](fake).float()
        real_target, fake_target = kit.targets(role, torch.ones_like(real_scores), torch.zeros_like(fake_scores), step)
        return sum(item.weight * item.loss.critic_loss(real_scores, fake_scores, real_target, fake_target)
                   for item in kit.adversarial)

    def train_step(self, batches, step):
        kit = self.kit
        a_to_b, b_to_a = kit.forward["a_to_b"], kit.forward["b_to_a"]
        for k, batch in enumerate(batches):  # one critic update per batch; the generators learn on the last
            a, b = batch["input"], batch["target"]
            with torch.set_grad_enabled(k == len(batches) - 1), kit.autocast:
                fake_b, fake_a = a_to_b(a), b_to_a(b)
            critic_loss = (self._critic_loss("critic_b", torch.cat([a, b], 1), torch.cat([a, fake_b.detach()], 1), step)
                           + self._critic_loss("critic_a", torch.cat([b, a], 1), torch.cat([b, fake_a.detach()], 1),
                                               step))
            kit.update("critics", critic_loss, step)

        for role in ("critic_a", "critic_b"):
            kit.networks[role].requires_grad_(False)
        with kit.autocast:
            # kit.augment: what the critics' own update applies to their inputs (diffaugment), here too
            scores_b = kit.forward["critic_b"](kit.augment("critic_b", torch.cat([a, fake_b], 1), step)).float()
            scores_a = kit.forward["critic_a"](kit.augment("critic_a", torch.cat([b, fake_a], 1), step)).float()
            cycle_a, cycle_b = b_to_a(fake_b).float(), a_to_b(fake_a).float()
        fake_a, fake_b = fake_a.float(), fake_b.float()
        terms = {}
        for item in kit.adversarial:
            terms[f"loss/g_{item.name}"] = item.weight * (item.loss.generator_loss(scores_b)
                                                          + item.loss.generator_loss(scores_a))
        for item in kit.reconstruction:
            terms[f"loss/g_{item.name}"] = item.weight * (item.loss(fake_b, b) + item.loss(fake_a, a))
        terms["loss/g_cycle"] = self.cycle_weight * ((cycle_a - a).abs().mean() + (cycle_b - b).abs().mean())
        generator_loss = sum(terms.values())
        kit.update("generators", generator_loss, step)
        for role in ("critic_a", "critic_b"):
            kit.networks[role].requires_grad_(True)
        kit.after_generator_step("a_to_b", step)
        kit.after_generator_step("b_to_a", step)
        return {"loss/critic": critic_loss.detach(), "loss/generator": generator_loss.detach(),
                **{key: value.detach() for key, value in terms.items()}}

    def samples(self, networks, losses, batch):
        realness = next(item.loss.realness for item in losses if isinstance(item.loss, AdversarialLoss))
        a, b = batch["input"], batch["target"]
        fake_b, fake_a = networks["a_to_b"](a).float(), networks["b_to_a"](b).float()
        judged = realness(networks["critic_b"](torch.cat([a, fake_b.to(a.dtype)], 1)))
        return [Column("A", a), Column("A->B", fake_b), Column("B", b), Column("B->A", fake_a),
                Column("critic_b: A->B", judged, "critic")]


@hookimpl
def register_methods(register):
    register("two_way", TwoWay)
