"""Tokenised SFT datasets and the batch collator (padded or padding-free).

``build_sft_dataset`` renders every example (``data.chat``), turns segments into labels and loss weights
(``methods.instruction_loss``), truncates to ``max_length`` and drops examples left with no trained token.

``SFTCollator`` makes micro-batches:
- padded: right padding to the longest example of the batch (dynamic, never to a fixed length), attention mask;
- packed (padding-free): the batch's examples are concatenated into one row whose ``position_ids`` restart at
  0 for every example; transformers then builds a block-diagonal causal mask from the position ids, so no token
  attends across examples and no FLOP is spent on padding.
Both add ``loss_normalizer``: the step's loss denominator contributed by this micro-batch (sum of target weights,
or the number of examples for ``example_mean``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import LossConfig
from ..errors import DataError
from .instruction_loss import labels_and_weights
from .chat import render_example


@dataclass
class BuildStats:
    examples: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    by_segment: dict = field(default_factory=dict)


def encode_example(tokenizer, example: dict, template, loss: LossConfig, max_length: int) -> dict:
    rendered = render_example(tokenizer, example, template)
    ids, segments = rendered.input_ids[:max_length], rendered.segments[:max_length]
    labels, weights = labels_and_weights(ids, segments, loss)
    return {
        "input_ids": ids,
        "labels": labels,
        "loss_weights": weights,
        "segments": segments,
        "truncated": len(rendered.input_ids) > max_length,
    }


def build_sft_dataset(tokenizer, examples: list[dict], template, loss: LossConfig, max_length: int, *, source="",
                      overlong: str = "truncate"):
    """Returns (``datasets.Dataset`` with input_ids/labels/loss_weights/segments, ``BuildStats``)."""
    import datasets

    from tqdm.auto import tqdm

    stats, rows = BuildStats(), []
    for example in tqdm(examples, desc="tokenising", unit="ex", disable=len(examples) < 2000, leave=False):
        encoded = encode_example(tokenizer, example, template, loss, max_length)
        if encoded.pop("truncated"):
            if overlong == "drop":
                stats.dropped_overlong += 1
                continue
            stats.truncated += 1
        if not any(w > 0 for w in encoded["loss_weights"]):
            stats.dropped_no_target += 1
            continue
        stats.examples += 1
        stats.tokens += len(encoded["input_ids"])
        stats.trained_tokens += sum(1 for w in encoded["loss_weights"] if w > 0)
        for s in encoded["segments"]:
            stats.by_segment[s] = stats.by_segment.get(s, 0) + 1
        rows.append(encoded)
    if not rows:
        raise DataError(
            f"{source}: no example left with a trained token within {max_length} tokens "
            f"({stats.dropped_overlong} dropped as over-long, {stats.dropped_no_target} with no target; "
            "raise data.max_length or check loss.mode)"
        )
    return datasets.Dataset.from_list(rows), stats


@dataclass
class SFTCollator:
    pad_token_id: int
    packing: bool = False
    reduction: str = "token_mean"
    pad_to: int | None = None  # pad every batch to this length (the DePT reference); None = the longest example
    padding_side: str = "right"

    def _example_weights(self, weights: list[float]) -> torch.Tensor:
        w = torch.tensor(weights, dtype=torch.float32)
        if self.reduction == "example_mean":
            total = w[1:].sum()
            w = w / total if total > 0 else w
        return w

    def __call__(self, features: list[dict]) -> dict:
        ids = [torch.tensor(f["input_ids"], dtype=torch.long) for f in features]
        labels = [torch.tensor(f["labels"], dtype=torch.long) for f in features]
        weights = [self._example_weights(f["loss_weights"]) for f in features]
        if self.reduction == "example_mean":
            normalizer = float(sum(1 for w in weights if w[1:].sum() > 0))
        else:
            normalizer = float(sum(w[1:].sum() for w in weights))
        if self.packing:
            for lab, w in zip(labels, weights):  # an example's first token is never predicted from the previous one
                lab[0], w[0] = -100, 0.0
            batch = {
                "input_ids": torch.cat(ids)[None],
                "position_ids": torch.cat([torch.arange(len(x)) for x in ids])[None],
                "labels": torch.cat(labels)[None],
                "loss_weights": torch.cat(weights)[None],
            }
        else:
            longest = max(len(x) for x in ids)
            if self.pad_to is not None:
                longest = max(longest, self.pad_to)
            batch = {
                "input_ids": torch.full((len(ids), longest), self.pad_token_id, dtype=torch.long),
                "attention_mask": torch.zeros((len(ids), longest), dtype=torch.long),
                "labels": torch.full((len(ids), longest), -100, dtype=torch.long),
                "loss_weights": torch.zeros((len(ids), longest), dtype=torch.float32),
            }
            for row, (x, lab, w) in enumerate(zip(ids, labels, weights)):
                span = slice(0, len(x)) if self.padding_side == "right" else slice(longest - len(x), longest)
                batch["input_ids"][row, span] = x
                batch["attention_mask"][row, span] = 1
                batch["labels"][row, span] = lab
                batch["loss_weights"][row, span] = w
            if self.padding_side == "left":  # positions count real tokens: GPT-2's learned positions stay put
                batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        batch["loss_normalizer"] = torch.tensor(normalizer, dtype=torch.float32)
        return batch
