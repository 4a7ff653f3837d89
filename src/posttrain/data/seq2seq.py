"""Encoder-decoder examples (T5, Flan-T5, mT5, BART): the input goes to the encoder, the target to the decoder.

Instruction data (``data.train_file``): the conversation up to its last assistant turn is rendered with the chat
template (or, for tokenizers without one, the ``plain`` template: turns joined by newlines) and tokenised *with* the
tokenizer's special tokens (T5: ``... </s>``; BART: ``<s> ... </s>``), exactly as ``generation`` encodes a
prompt. The last assistant turn, tokenised as a target (``tokenizer(text_target=...)``, its EOS included), is
what the decoder learns:

    IT (output_only):  L = -sum_j log p(y_j | y_<j, x)           (x: the whole instruction, seen by the encoder)

The instruction never reaches the decoder, so the IM loss (loss on instruction tokens, Shi et al. 2024) has no
faithful counterpart here: the decoder does not predict instruction tokens. ``family_support`` refuses
``loss.mode: instruction_and_output`` and ``all_tokens`` on these models before the model loads.

Classification tasks in text-to-text form (``task.objective: lm``; DePT, Shi & Lipani 2024, on T5): the
encoder reads the task input, the decoder the label word and EOS (``data.classification``).

Rows hold ``input_ids`` (encoder), ``labels`` and ``loss_weights`` (decoder, aligned: position j predicts
``labels[j]``). ``Seq2SeqCollator`` pads both sides and builds ``decoder_input_ids`` by shifting the labels right
behind the model's decoder start token, as transformers does when given ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import LossConfig
from ..errors import DataError
from .chat import generation_prompt
from .sft import BuildStats


def decoder_start_id(config) -> int:
    """The token a decoder starts from (T5: pad; BART: </s>)."""
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "pad_token_id", None)
    if start is None:
        raise DataError(f"{type(config).__name__}: the model config names no decoder_start_token_id or pad_token_id")
    return int(start)


def encoder_ids(tokenizer, messages: list[dict], template: str | None) -> list[int]:
    """Token ids of a prompt (a conversation before the answer) as the encoder reads it."""
    text = generation_prompt(tokenizer, messages, template)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def target_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a decoder target, with the special tokens the tokenizer puts around targets (EOS)."""
    return list(tokenizer(text_target=text, add_special_tokens=True)["input_ids"])


def split_conversation(example: dict, source: str) -> tuple[list[dict], str]:
    """(messages before the last assistant turn, that turn's content)."""
    messages = example.get("messages")
    if not messages:
        raise DataError(f"{source}: plain text rows ({{\"text\": ...}}) have no input and target for an "
                        "encoder-decoder model; give messages, alpaca or prompt/completion rows")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise DataError(f"{source}: a conversation needs a prompt and an assistant answer for an encoder-decoder "
                        "model")
    return messages[:last], messages[last]["content"]


def build_seq2seq_dataset(tokenizer, examples: list[dict], template, loss: LossConfig, max_length: int, *,
                          source: str = "", overlong: str = "truncate"):
    """Returns (``datasets.Dataset`` with input_ids / labels / loss_weights, ``BuildStats``); ``max_length`` bounds
    the encoder input and the target separately."""
    import datasets

    del loss  # output_only is the one mode an encoder-decoder supports (family_support refuses the others)
    stats, rows = BuildStats(), []
    for i, example in enumerate(examples):
        prompt, answer = split_conversation(example, f"{source}: example {i + 1}")
        enc, dec = encoder_ids(tokenizer, prompt, template), target_ids(tokenizer, answer)
        if len(enc) > max_length or len(dec) > max_length:
            if overlong == "drop":
                stats.dropped_overlong += 1
                continue
            stats.truncated += 1
            enc = enc[: max_length - 1] + enc[-1:] if len(enc) > max_length else enc  # keep the closing </s>
            dec = dec[: max_length - 1] + dec[-1:] if len(dec) > max_length else dec
        rows.append({"input_ids": enc, "labels": dec, "loss_weights": [1.0] * len(dec)})
        stats.examples += 1
        stats.tokens += len(enc) + len(dec)
        stats.trained_tokens += len(dec)
        stats.by_segment["instruction"] = stats.by_segment.get("instruction", 0) + len(enc)
        stats.by_segment["output"] = stats.by_segment.get("output", 0) + len(dec)
    if not rows:
        raise DataError(f"{source}: no example left within {max_length} tokens ({stats.dropped_overlong} dropped as "
                        "over-long; raise data.max_length)")
    return datasets.Dataset.from_list(rows), stats


@dataclass
class Seq2SeqCollator:
    """Padded encoder inputs, decoder targets and their shifted-right decoder inputs.

    ``loss_normalizer``: the sum of target weights (``token_mean``) or the number of examples (``example_mean``,
    each example's weights then summing to 1), as ``SFTCollator`` gives for decoder-only batches."""

    pad_token_id: int
    decoder_start_token_id: int
    reduction: str = "token_mean"
    padding_side: str = "right"
    pad_to: int | None = None

    def __call__(self, features: list[dict]) -> dict:
        n = len(features)
        width = max(max(len(f["input_ids"]) for f in features), self.pad_to or 0)
        target_width = max(len(f["labels"]) for f in features)
        batch = {
            "input_ids": torch.full((n, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((n, width), dtype=torch.long),
            "labels": torch.full((n, target_width), -100, dtype=torch.long),
            "loss_weights": torch.zeros((n, target_width), dtype=torch.float32),
            "decoder_input_ids": torch.full((n, target_width), self.pad_token_id, dtype=torch.long),
            "decoder_attention_mask": torch.zeros((n, target_width), dtype=torch.long),
        }
        normalizer = 0.0
        for row, f in enumerate(features):
            ids, labels = f["input_ids"], f["labels"]
            span = slice(0, len(ids)) if self.padding_side == "right" else slice(width - len(ids), width)
            batch["input_ids"][row, span] = torch.tensor(ids)
            batch["attention_mask"][row, span] = 1
            weights = torch.tensor(f["loss_weights"], dtype=torch.float32)
            if self.reduction == "example_mean":
                total = weights.sum()
                weights = weights / total if total > 0 else weights
                normalizer += float(total > 0)
            else:
                normalizer += float(weights.sum())
            k = len(labels)
            batch["labels"][row, :k] = torch.tensor([t if w > 0 else -100 for t, w in zip(labels, weights)])
            batch["loss_weights"][row, :k] = weights
            batch["decoder_input_ids"][row, :k] = torch.tensor([self.decoder_start_token_id, *labels[:-1]])
            batch["decoder_attention_mask"][row, :k] = 1
        batch["loss_normalizer"] = torch.tensor(normalizer, dtype=torch.float32)
        return batch
