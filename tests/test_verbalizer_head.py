"""methods/verbalizer_head.py: head_logits equals the full forward's logits at the chosen positions and vocabulary
rows (causal Llama, masked BERT with a head bias, seq2seq T5, through the soft-prompt wrapper); the captured head
computes no logits; virtual_offset per family; output_head's error without an LM head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from posttrain.methods.soft_prompt import SoftPromptModel
from posttrain.methods.verbalizer_head import (
    captured_head_input,
    head_logits,
    output_head,
    virtual_offset,
)

VOCAB = 120


def tiny_bert():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # a non-zero output bias, so that selecting its rows matters
        model.get_output_embeddings().bias.normal_(0, 1.0)
    return model


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(2)
    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
                   decoder_start_token_id=0, pad_token_id=0)
    return T5ForConditionalGeneration(cfg).eval()


def _ids_and_mask(batch=3, length=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a right-padded row
    return ids, mask


BATCH_INDEX = torch.tensor([0, 1, 2, 0])
POSITIONS = torch.tensor([8, 5, 0, 3])
ROWS = torch.tensor([4, 17, 99, 4, 60])  # a repeated row too


def _check(model, inputs, rows):
    got = head_logits(model, inputs, BATCH_INDEX, POSITIONS, rows)
    with torch.no_grad():
        full = model(**inputs).logits
    want = full[BATCH_INDEX, POSITIONS]
    want = want if rows is None else want[:, rows]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [ROWS, None])
def test_causal_head_logits_equal_full_logits(tokenizer, tiny_llama, rows):
    ids, mask = _ids_and_mask()
    ids = ids % len(tokenizer)
    _check(tiny_llama, {"input_ids": ids, "attention_mask": mask, "use_cache": False}, rows)


@pytest.mark.parametrize("rows", [ROWS, None])
def test_masked_lm_head_logits_equal_full_logits_with_bias(rows):
    model = tiny_bert()
    assert output_head(model) is model.cls.predictions.decoder and output_head(model).bias is not None
    ids, mask = _ids_and_mask()
    _check(model, {"input_ids": ids, "attention_mask": mask}, rows)


def test_seq2seq_positions_index_the_decoder():
    model = tiny_t5()
    ids, mask = _ids_and_mask()
    decoder = torch.randint(1, VOCAB, (3, 9), generator=torch.Generator().manual_seed(5))
    _check(model, {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}, ROWS)


def test_soft_prompt_head_logits_shift_by_the_virtual_tokens(tokenizer, tiny_llama):
    wrapped = SoftPromptModel(tiny_llama, num_virtual_tokens=4, rank=2, max_length=16)
    torch.nn.init.normal_(wrapped.offset_b)
    assert virtual_offset(wrapped) == 4
    ids, mask = _ids_and_mask()
    ids = ids % len(tokenizer)
    _check(wrapped, {"input_ids": ids, "attention_mask": mask, "use_cache": False}, ROWS)
    # reading the unshifted positions of the base model's hidden states would be the virtual tokens' logits
    with captured_head_input(wrapped) as (box, _head):
        wrapped(input_ids=ids, attention_mask=mask, use_cache=False)
    assert box["hidden"].shape == (3, 4 + 9, tiny_llama.config.hidden_size)


def test_seq2seq_soft_prompt_leaves_decoder_positions_alone():
    model = SoftPromptModel(tiny_t5(), num_virtual_tokens=5, rank=0)
    assert virtual_offset(model) == 0
    ids, mask = _ids_and_mask()
    decoder = torch.randint(1, VOCAB, (3, 9), generator=torch.Generator().manual_seed(6))
    _check(model, {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder}, ROWS)


def test_virtual_offset_is_zero_for_plain_models(tiny_llama):
    assert virtual_offset(tiny_llama) == 0
    assert virtual_offset(tiny_bert()) == 0
    assert virtual_offset(tiny_t5()) == 0


def test_captured_head_input_computes_no_full_logits(tokenizer, tiny_llama):
    ids, mask = _ids_and_mask()
    ids = ids % len(tokenizer)
    calls = []
    head = output_head(tiny_llama)
    assert head is tiny_llama.lm_head
    handle = head.register_forward_hook(lambda mod, args, out: calls.append(tuple(out.shape)))
    try:
        with captured_head_input(tiny_llama) as (box, got_head):
            out = tiny_llama(input_ids=ids, attention_mask=mask, use_cache=False)
        assert got_head is head
        assert calls == [(3, 0, len(tokenizer))]  # the head ran on an empty sequence
        assert out.logits.shape[1] == 0
        assert box["hidden"].shape == (3, 9, tiny_llama.config.hidden_size)
        # the hidden states are the final ones: the head applied to them gives the plain forward's logits
        full = tiny_llama(input_ids=ids, attention_mask=mask, use_cache=False).logits  # hook removed on exit
        assert calls[-1] == (3, 9, len(tokenizer))
        torch.testing.assert_close(head(box["hidden"]), full, atol=1e-5, rtol=1e-5)
    finally:
        handle.remove()


def test_output_head_error_without_an_lm_head():
    from transformers import LlamaConfig, LlamaModel

    bare = LlamaModel(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="LlamaModel has no output embedding"):
        output_head(bare)
    with pytest.raises(ValueError, match="Linear has no output embedding"):
        output_head(nn.Linear(3, 3))
