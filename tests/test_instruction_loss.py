"""data/instruction_loss.py: per-token weights of IT (output_only), IM (instruction_and_output, the paper's mask
and the released code's mask), all_tokens and the prompt_loss_weight interpolation, on a hand-built segment list;
labels (-100 exactly where the weight is 0, position 0 never a target); describe."""

from __future__ import annotations

import pytest

from posttrain.config import LossConfig
from posttrain.data.chat import INSTRUCTION as I
from posttrain.data.chat import OUTPUT as O
from posttrain.data.chat import TEMPLATE as T
from posttrain.data.instruction_loss import describe, labels_and_weights, token_weights

# BOS, <|user|>, instruction x2, <|assistant|> x2, output x2, <|user|>, instruction, <|assistant|>, output
SEGMENTS = [T, T, I, I, T, T, O, O, T, I, T, O]
IDS = [100 + i for i in range(len(SEGMENTS))]


def test_segment_constants_are_distinct():
    assert len({T, I, O}) == 3


def test_output_only_trains_the_output_tokens():
    w = token_weights(SEGMENTS, LossConfig(mode="output_only"))
    assert w == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1]


def test_all_tokens_trains_everything():
    assert token_weights(SEGMENTS, LossConfig(mode="all_tokens")) == [1.0] * 12


@pytest.mark.parametrize("lam", [1.0, 0.25])
def test_paper_mask_masks_every_template_token(lam):
    w = token_weights(SEGMENTS, LossConfig(mode="instruction_and_output", im_mask="paper", prompt_loss_weight=lam))
    assert w == [0, 0, lam, lam, 0, 0, 1, 1, 0, lam, 0, 1]


@pytest.mark.parametrize("lam", [1.0, 0.25])
def test_reference_code_mask_masks_only_the_leading_template_prefix(lam):
    loss = LossConfig(mode="instruction_and_output", im_mask="reference_code", prompt_loss_weight=lam)
    # later role tags (positions 4, 5, 8, 10) are trained on with weight 1, as in the released IM code
    assert token_weights(SEGMENTS, loss) == [0, 0, lam, lam, 1, 1, 1, 1, 1, lam, 1, 1]
    # a conversation starting with content has no prefix to mask
    assert token_weights([I, T, O], loss) == [lam, 1, 1]
    # nothing but template: everything is prefix
    assert token_weights([T, T, T], loss) == [0, 0, 0]
    assert token_weights([], loss) == []


def test_prompt_loss_weight_zero_is_it_and_one_is_im():
    it = token_weights(SEGMENTS, LossConfig(mode="output_only"))
    zero = token_weights(SEGMENTS, LossConfig(mode="instruction_and_output", prompt_loss_weight=0.0))
    assert zero == it
    one = token_weights(SEGMENTS, LossConfig(mode="instruction_and_output", prompt_loss_weight=1.0))
    assert one == [1.0 if s != T else 0.0 for s in SEGMENTS]
    # the interpolation is linear in lambda on instruction tokens and leaves the others alone
    half = token_weights(SEGMENTS, LossConfig(mode="instruction_and_output", prompt_loss_weight=0.5))
    assert half == [(a + b) / 2 for a, b in zip(zero, one)]


@pytest.mark.parametrize("loss", [
    LossConfig(mode="output_only"),
    LossConfig(mode="all_tokens"),
    LossConfig(mode="instruction_and_output", im_mask="paper", prompt_loss_weight=0.0),
    LossConfig(mode="instruction_and_output", im_mask="paper", prompt_loss_weight=0.3),
    LossConfig(mode="instruction_and_output", im_mask="reference_code", prompt_loss_weight=1.0),
], ids=lambda c: f"{c.mode}-{c.im_mask}-{c.prompt_loss_weight}")
def test_labels_are_ignored_exactly_where_the_weight_is_zero(loss):
    labels, weights = labels_and_weights(IDS, SEGMENTS, loss)
    expected = token_weights(SEGMENTS, loss)
    expected[0] = 0.0
    assert weights == expected
    assert labels == [tok if w > 0 else -100 for tok, w in zip(IDS, expected)]
    assert labels[0] == -100 and weights[0] == 0.0
    assert len(labels) == len(weights) == len(IDS)


def test_position_zero_is_never_a_target_even_when_it_is_output():
    labels, weights = labels_and_weights([7, 8, 9], [O, O, O], LossConfig(mode="output_only"))
    assert labels == [-100, 8, 9] and weights == [0.0, 1.0, 1.0]
    labels, weights = labels_and_weights([7, 8], [T, I], LossConfig(mode="all_tokens"))
    assert labels == [-100, 8] and weights == [0.0, 1.0]
    assert labels_and_weights([], [], LossConfig(mode="all_tokens")) == ([], [])


def test_describe_records_mask_and_weight_only_for_im():
    paper = "Shi et al. 2024, Instruction Tuning With Loss Over Instructions (arXiv:2405.14394)"
    assert describe(LossConfig(mode="instruction_and_output", im_mask="reference_code", prompt_loss_weight=0.4,
                               reduction="example_mean")) == {
        "loss_mode": "instruction_and_output", "im_mask": "reference_code", "prompt_loss_weight": 0.4,
        "reduction": "example_mean", "paper": paper}
    for mode in ("output_only", "all_tokens"):
        d = describe(LossConfig(mode=mode, im_mask="reference_code", prompt_loss_weight=0.4))
        assert d["loss_mode"] == mode and d["im_mask"] is None and d["prompt_loss_weight"] is None
        assert d["reduction"] == "token_mean"
