"""Which tokens carry loss in instruction tuning: IT, IM and their interpolation.

Shi, Yang, Wu, Aitchison, Yilmaz, Lipani. "Instruction Tuning With Loss Over Instructions" (NeurIPS 2024,
arXiv:2405.14394). For a rendered conversation x_1..x_T with template tokens T (role tags, separators):

    IT  (output_only):             L = -sum_t 1[x_t in output] log p(x_t | x_<t)
    IM  (instruction_and_output):  L = -sum_t 1[x_t not in T]  log p(x_t | x_<t)            (paper, Eq. 4)
    weighted:                      w_t = 1 (output), lambda (instruction), 0 (template);  lambda = prompt_loss_weight

and the optimised quantity is the weighted mean  sum_t w_t * nll_t / sum_t w_t  over the tokens of an optimizer
step (``reduction: token_mean``), or the per-example weighted mean averaged over the step's examples
(``reduction: example_mean``, what the IM code's batch size 1 + gradient accumulation computes).

``im_mask: reference_code`` reproduces the released IM code, which (by matching "<s> <|user|>\\n" with BOS
included) masks only the leading template prefix (BOS + first role tag); every later role tag is trained on.
``all_tokens`` trains on everything, template included (first token excepted: nothing predicts it).
"""

from __future__ import annotations

from ..config import LossConfig
from ..data.chat import INSTRUCTION, OUTPUT, TEMPLATE


def token_weights(segments: list[int], loss: LossConfig) -> list[float]:
    """Per-token loss weight (the weight of *predicting* token t) for one rendered example."""
    if loss.mode == "output_only":
        return [1.0 if s == OUTPUT else 0.0 for s in segments]
    if loss.mode == "all_tokens":
        return [1.0] * len(segments)
    # instruction_and_output
    instruction_weight = loss.prompt_loss_weight
    if loss.im_mask == "paper":
        return [1.0 if s == OUTPUT else instruction_weight if s == INSTRUCTION else 0.0 for s in segments]
    # reference_code: only the template prefix before the first content token is masked
    first_content = next((i for i, s in enumerate(segments) if s != TEMPLATE), len(segments))
    return [
        0.0 if i < first_content else instruction_weight if s == INSTRUCTION else 1.0 for i, s in enumerate(segments)
    ]


def labels_and_weights(input_ids: list[int], segments: list[int], loss: LossConfig) -> tuple[list[int], list[float]]:
    """HF-style ``labels`` (-100 where untrained) and matching weights; position 0 is never a target."""
    weights = token_weights(segments, loss)
    if weights:
        weights[0] = 0.0
    labels = [tok if w > 0 else -100 for tok, w in zip(input_ids, weights)]
    return labels, weights


def describe(loss: LossConfig) -> dict:
    """What the run metadata records about the loss choice."""
    return {
        "loss_mode": loss.mode,
        "im_mask": loss.im_mask if loss.mode == "instruction_and_output" else None,
        "prompt_loss_weight": loss.prompt_loss_weight if loss.mode == "instruction_and_output" else None,
        "reduction": loss.reduction,
        "paper": "Shi et al. 2024, Instruction Tuning With Loss Over Instructions (arXiv:2405.14394)",
    }
