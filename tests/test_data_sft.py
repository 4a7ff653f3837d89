"""data/sft.py: encoded labels equal input_ids exactly where weights > 0 (and the trained text is what each loss
mode names), truncation, overlong: drop with its stats, and SFTCollator's padded (right, left, pad_to) and packed
batches against hand-written tensors."""

from __future__ import annotations

import pytest
import torch

from posttrain.config import LossConfig
from posttrain.data.chat import render_example
from posttrain.data.sft import SFTCollator, build_sft_dataset, encode_example
from posttrain.errors import DataError

SHORT = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                      {"role": "assistant", "content": "Paris."}]}
LONG = {"messages": [{"role": "user", "content": "Write a poem about the sea. " * 6},
                     {"role": "assistant", "content": "The sea is wide and blue. " * 6}]}
TEXT = {"text": "The quick brown fox jumps over the lazy dog."}


def _trained_text(tokenizer, encoded):
    return tokenizer.decode([t for t, w in zip(encoded["input_ids"], encoded["loss_weights"]) if w > 0])


@pytest.mark.parametrize("mode, trained", [
    ("output_only", "Paris.<|im_end|>"),
    ("instruction_and_output", "What is the capital of France?Paris.<|im_end|>"),
])
def test_encode_example_labels_and_trained_text(tokenizer, mode, trained):
    enc = encode_example(tokenizer, SHORT, None, LossConfig(mode=mode), 512)
    rendered = render_example(tokenizer, SHORT, None)
    assert enc["input_ids"] == rendered.input_ids and enc["segments"] == rendered.segments
    assert enc["truncated"] is False
    assert enc["labels"] == [t if w > 0 else -100 for t, w in zip(enc["input_ids"], enc["loss_weights"])]
    assert _trained_text(tokenizer, enc) == trained


def test_plain_text_trains_everything_after_the_first_token(tokenizer):
    enc = encode_example(tokenizer, TEXT, None, LossConfig(mode="output_only"), 512)
    ids = tokenizer(TEXT["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert enc["input_ids"] == ids
    assert enc["labels"] == [-100] + ids[1:] and enc["loss_weights"] == [0.0] + [1.0] * (len(ids) - 1)


def test_truncation_keeps_the_first_max_length_tokens(tokenizer):
    full = encode_example(tokenizer, LONG, None, LossConfig(mode="all_tokens"), 10_000)
    cut = encode_example(tokenizer, LONG, None, LossConfig(mode="all_tokens"), 20)
    assert cut["truncated"] is True and len(cut["input_ids"]) == 20
    for key in ("input_ids", "labels", "loss_weights", "segments"):
        assert cut[key] == full[key][:20], key


def test_build_dataset_truncates_or_drops_overlong_examples(tokenizer):
    n_long = len(render_example(tokenizer, LONG, None).input_ids)
    n_short = len(render_example(tokenizer, SHORT, None).input_ids)
    limit = n_short + 5
    assert n_long > limit + 40  # LONG's output starts beyond the limit: truncated, it has no target
    loss = LossConfig(mode="all_tokens")
    ds, stats = build_sft_dataset(tokenizer, [SHORT, LONG, TEXT], None, loss, limit, overlong="truncate")
    assert stats.examples == 3 and stats.truncated == 1 and stats.dropped_overlong == 0
    assert len(ds[1]["input_ids"]) == limit
    ds, stats = build_sft_dataset(tokenizer, [SHORT, LONG, TEXT], None, loss, limit, overlong="drop")
    assert stats.examples == 2 and stats.dropped_overlong == 1 and stats.truncated == 0 and len(ds) == 2
    assert ds[0]["input_ids"] == encode_example(tokenizer, SHORT, None, loss, limit)["input_ids"]
    assert ds[1]["input_ids"] == encode_example(tokenizer, TEXT, None, loss, limit)["input_ids"]
    assert stats.tokens == len(ds[0]["input_ids"]) + len(ds[1]["input_ids"])
    assert stats.trained_tokens == stats.tokens - 2  # all_tokens: every position but each example's first
    assert sum(stats.by_segment.values()) == stats.tokens


def test_examples_left_without_a_target_are_dropped_and_counted(tokenizer):
    limit = len(render_example(tokenizer, SHORT, None).input_ids) + 5  # LONG's output is cut off
    ds, stats = build_sft_dataset(tokenizer, [SHORT, LONG], None, LossConfig(mode="output_only"), limit)
    assert len(ds) == 1 and stats.dropped_no_target == 1 and stats.truncated == 1
    message = (rf"^f\.jsonl: no example left with a trained token within {limit} tokens "
               r"\(0 dropped as over-long, 1 with no target")
    with pytest.raises(DataError, match=message):
        build_sft_dataset(tokenizer, [LONG], None, LossConfig(mode="output_only"), limit, source="f.jsonl")


# ------------------------------------------------------------------------------------------ collator by hand

F1 = {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "loss_weights": [0.0, 1.0, 1.0]}
F2 = {"input_ids": [8, 9], "labels": [-100, 9], "loss_weights": [0.0, 0.5]}
IGN = -100


def _assert_batch(batch, **want):
    assert set(batch) == set(want) | {"loss_normalizer"}
    for key, value in want.items():
        assert batch[key].tolist() == value, key


def test_right_padding():
    batch = SFTCollator(pad_token_id=0)([F1, F2])
    _assert_batch(batch, input_ids=[[5, 6, 7], [8, 9, 0]], attention_mask=[[1, 1, 1], [1, 1, 0]],
                  labels=[[IGN, 6, 7], [IGN, 9, IGN]], loss_weights=[[0, 1, 1], [0, 0.5, 0]])
    assert batch["loss_normalizer"].item() == 2.5


def test_left_padding_and_pad_to():
    batch = SFTCollator(pad_token_id=0, padding_side="left")([F1, F2])
    _assert_batch(batch, input_ids=[[5, 6, 7], [0, 8, 9]], attention_mask=[[1, 1, 1], [0, 1, 1]],
                  labels=[[IGN, 6, 7], [IGN, IGN, 9]], loss_weights=[[0, 1, 1], [0, 0, 0.5]],
                  position_ids=[[0, 1, 2], [0, 0, 1]])  # counted over real tokens (absolute-position models)
    batch = SFTCollator(pad_token_id=3, pad_to=5)([F1, F2])
    _assert_batch(batch, input_ids=[[5, 6, 7, 3, 3], [8, 9, 3, 3, 3]],
                  attention_mask=[[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]],
                  labels=[[IGN, 6, 7, IGN, IGN], [IGN, 9, IGN, IGN, IGN]],
                  loss_weights=[[0, 1, 1, 0, 0], [0, 0.5, 0, 0, 0]])
    assert batch["loss_normalizer"].item() == 2.5
    assert SFTCollator(pad_token_id=0, pad_to=2)([F1, F2])["input_ids"].shape == (2, 3)  # never truncates


def test_packed_batch_restarts_positions_and_masks_each_first_token():
    first_trained = {"input_ids": [8, 9], "labels": [8, 9], "loss_weights": [1.0, 0.5]}  # position 0 weighted
    batch = SFTCollator(pad_token_id=0, packing=True)([F1, first_trained])
    _assert_batch(batch, input_ids=[[5, 6, 7, 8, 9]], position_ids=[[0, 1, 2, 0, 1]],
                  labels=[[IGN, 6, 7, IGN, 9]], loss_weights=[[0, 1, 1, 0, 0.5]])
    assert batch["loss_normalizer"].item() == 2.5 == batch["loss_weights"].sum().item()
    assert first_trained["labels"] == [8, 9]  # the caller's features are not modified


def test_example_mean_normalises_each_example():
    empty = {"input_ids": [4, 4], "labels": [IGN, IGN], "loss_weights": [0.0, 0.0]}
    for packing in (False, True):
        batch = SFTCollator(pad_token_id=0, packing=packing, reduction="example_mean")([F1, F2, empty])
        weights = batch["loss_weights"].reshape(-1)[batch["loss_weights"].reshape(-1) > 0].tolist()
        assert weights == [0.5, 0.5, 1.0]  # each example's weights sum to 1
        assert batch["loss_normalizer"].item() == 2.0  # examples with a target


def test_collated_dataset_rows_match_their_encoding(tokenizer):
    ds, _ = build_sft_dataset(tokenizer, [SHORT, TEXT], None, LossConfig(mode="output_only"), 512)
    rows = ds.to_list()
    batch = SFTCollator(tokenizer.pad_token_id)(rows)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert batch["labels"][i, :n].tolist() == row["labels"]
        assert (batch["labels"][i, n:] == IGN).all() and batch["attention_mask"][i].sum().item() == n
    assert batch["loss_normalizer"].item() == sum(sum(r["loss_weights"]) for r in rows)
    assert torch.equal(batch["loss_weights"] > 0, batch["labels"] != IGN)
