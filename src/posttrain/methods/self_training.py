"""Self-training baselines on the prompt-based classifier: confidence-thresholded pseudo-labelling and FixMatch.

Pseudo-labelling: Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural
Networks", ICML-W 2013. FixMatch: Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020. Both as implemented in USB (Wang et al., NeurIPS 2022) and run by Shi et al.,
"Rethinking Semi-supervised Learning with Language Models" (ACL Findings 2023) and by PCP (Shi & Lipani, NeurIPS
2023) on the *same hard prompt-based classifier* as prompt-based fine-tuning (``task.objective: verbalizer``): the
label scores s(x) in R^C are the verbalizer words' scores at the template's slot (``prompt_ft``).

For a labelled micro-batch {(x_b, y_b)}, b = 1..B, and an unlabelled one {u_j}, j = 1..mu B (mu = ``uratio``),
with p(.|x) = softmax s(x), weak/strong views alpha(u) and A(u) (``text_augment``):

    q_j      = p(. | alpha(u_j))                       computed without gradient (stop-gradient)
    mask_j   = 1[max_c q_jc >= tau]                    tau = ``p_cutoff`` (0.95)
    yhat_j   = argmax_c q_jc                           (hard labels; soft: softmax(s(alpha(u_j)) / T))
    L_s      = 1/B      sum_b   CE(p(. | x_b), y_b)
    L_u      = 1/(mu B) sum_j   mask_j CE(p(. | v(u_j)), yhat_j)
    L        = L_s + lambda_u(t) L_u,   lambda_u(t) = lambda_u min(1, t / (unsup_warmup * T_max))  (1 if no warm-up)

with v(u) = alpha(u) for ``pseudo_label`` (the pseudo-label comes from the model on the same input, at the current
step, detached; USB's PseudoLabel) and v(u) = A(u) for ``fixmatch`` (the weak view's prediction is the target of the
strong view's). L_u is a mean over the whole unlabelled batch, masked examples included (USB's
``consistency_loss(..., mask).mean()``), so the mask ratio scales the unlabelled term. With gradient accumulation
each micro-batch's L is weighted by its share of the step's labelled examples.

The unlabelled batch of micro-step m (m = global_step x grad-accum + micro index, across processes) holds positions
m mu B .. (m+1) mu B - 1 of an endless stream of seeded permutations of the unlabelled set, and its views are seeded
by (seed, example, pass): it is a pure function of m, so ``--resume`` continues the same stream without saving it.
The Trainer's checkpoints, resume, logging and evaluation are unchanged; each log record adds ``mask_ratio`` (share of
unlabelled examples above tau), ``pseudo_label_acc`` (argmax of q vs the pool's gold label, where the pool has one;
SST-2's does: an oracle, never trained on) and ``pseudo_label_acc_masked`` (the same over the masked-in examples),
``sup_loss`` and ``unsup_loss``.

USB settings in the papers: p_cutoff 0.95, T 0.5, hard labels, uratio 1, lambda_u 1, batch 8, lr in {1e-5, 2e-5,
5e-5}, 25,600 iterations, strong view = back-translation (not available offline; see ``text_augment``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F

from ..config import help_field as _f
from ..config.fields import check_bounds
from ..errors import ConfigError
from .text_augment import AugmentConfig, augment_example





@dataclass
class SelfTrainingConfig:
    recipe: str = _f("", "RunConfig YAML of the classifier (task.objective: verbalizer, or classifier for the CLS "
                     "head), its labelled data, optimiser and steps (relative to the cwd, else to this file).")
    overrides: list = _f([], "section.key=value overrides of the recipe (command-line ones are applied after).")
    algorithm: Literal["pseudo_label", "fixmatch"] = _f(
        "fixmatch", "pseudo_label: the target and the trained prediction are both on the weak view (Lee 2013); "
        "fixmatch: the weak view's pseudo-label trains the strong view's prediction (Sohn et al. 2020).")
    p_cutoff: float = _f(0.95, "Confidence threshold tau: an unlabelled example counts when max_c p(c | weak view) "
                         ">= tau (USB: 0.95).", bounds="[0, 1]")
    lambda_u: float = _f(1.0, "Weight of the unlabelled loss (USB: 1.0).", bounds="[0, inf)")
    uratio: int = _f(1, "Unlabelled examples per labelled example in a batch (mu; USB text configs: 1).",
                     bounds="[1, inf)")
    hard_label: bool = _f(True, "Hard pseudo-labels (argmax, USB's use_hard_label); false: soft targets "
                          "softmax(s / temperature).")
    temperature: float = _f(0.5, "T of the soft targets (only with hard_label: false; USB: 0.5).", bounds="(0, inf)")
    unsup_warmup: float = _f(0.0, "Fraction of train.max_steps over which lambda_u ramps up linearly from 0 (0 = "
                             "none; USB's PseudoLabel uses 0.4, FixMatch none).", bounds="[0, 1]")
    unlabeled: str = _f("pool:train", "Unlabelled split as source:split of the recipe's task (gold labels, if any, "
                        "are only used to report pseudo-label accuracy).")
    max_unlabeled: Optional[int] = _f(None, "Use a seeded subset of at most N unlabelled examples (CPU runs).",
                                      bounds="[1, inf)")
    unlabeled_seed: int = _f(42, "Seed of that subset; the stream order and the views use train.seed.",
                             bounds="[0, 4294967295]")
    augment: AugmentConfig = field(default_factory=AugmentConfig,
                                   metadata={"help": "Weak/strong views (methods/text_augment.py; EDA-style, "
                                             "offline substitute for back-translation)."})
    output_dir: Optional[str] = _f(None, "Run directory (sets the recipe's train.output_dir; empty = keep it).")

    def __post_init__(self):
        if not self.recipe:
            raise ConfigError("recipe: required (a RunConfig YAML with task.objective: verbalizer)")
        check_bounds(self)
        if self.unlabeled.count(":") != 1:
            raise ConfigError(f"unlabeled: expected source:split such as pool:train, got {self.unlabeled!r}")


# ---------------------------------------------------------------------------------------------------------------
# the unlabelled loss


def unlabelled_loss(scores_weak: torch.Tensor, scores_trained: torch.Tensor, *, p_cutoff: float,
                    hard_label: bool = True, temperature: float = 0.5):
    """Per-example masked loss, mask and pseudo-labels (see the module docstring).

    ``scores_weak`` give the target q (no gradient flows into them); ``scores_trained`` are the scores whose
    gradient trains the model (the same tensor for pseudo-labelling, the strong view's for FixMatch).
    """
    weak = scores_weak.detach().float()
    probs = weak.softmax(-1)
    confidence, pseudo = probs.max(-1)
    mask = (confidence >= p_cutoff).to(scores_trained.dtype)
    logp = F.log_softmax(scores_trained.float(), -1)
    if hard_label:
        ce = F.nll_loss(logp, pseudo, reduction="none")
    else:
        ce = -((weak / temperature).softmax(-1) * logp).sum(-1)
    return ce * mask, mask, pseudo


class UnlabelledStream:
    """Micro-step m -> its unlabelled batch (weak and, for FixMatch, strong view), a pure function of m."""

    def __init__(self, examples: list[dict], gold: list[int], *, batch_size: int, seed: int, augment: AugmentConfig,
                 strong: bool, encode: Callable, collate: Callable):
        if not examples:
            raise ConfigError("unlabeled: the unlabelled split is empty")
        self.examples, self.gold, self.batch_size, self.seed = examples, gold, batch_size, seed
        self.augment, self.strong, self.encode, self.collate = augment, strong, encode, collate
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.examples), generator=gen).tolist()}
        return self._orders[epoch]

    def positions(self, m: int) -> list[tuple[int, int]]:
        """(index into the unlabelled set, pass over it) of the batch of micro-step m."""
        n, out = len(self.examples), []
        for p in range(m * self.batch_size, (m + 1) * self.batch_size):
            out.append((self.order(p // n)[p % n], p // n))
        return out

    def views(self, m: int, view: str) -> list[dict]:
        return [augment_example(self.examples[i], self.augment, view, seed=self.seed, epoch=e, key=i)
                for i, e in self.positions(m)]

    def batch(self, m: int) -> dict:
        where = self.positions(m)
        out = {"index": [i for i, _ in where], "gold": torch.tensor([self.gold[i] for i, _ in where]),
               "weak": self.collate(self.encode(self.views(m, "weak")))}
        if self.strong:
            out["strong"] = self.collate(self.encode(self.views(m, "strong")))
        for name in ("weak", "strong"):
            if name in out:
                out[name].pop("loss_normalizer", None)
        return out
