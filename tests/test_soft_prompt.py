"""Prompt tuning / DePT (methods/soft_prompt.py): parameter counts, equivalences, padding, generation, other
model families."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain.errors import ConfigError
from posttrain.methods.dept import budget_rank, budget_table, trainable_count
from posttrain.methods.soft_prompt import SoftPromptModel


def _dept(base, m=4, r=3, s=16, **kw) -> SoftPromptModel:
    model = SoftPromptModel(base, m, rank=r, max_length=s, **kw)
    with torch.no_grad():  # a non-zero B, so that the offset actually matters in the comparisons below
        model.offset_b.normal_(0, 0.5)
    return model


# --- budget and parameter counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("m, s, expected_r", [(60, 256, 30), (40, 256, 45), (60, 512, 24), (80, 256, 15),
                                              (100, 256, 0), (0, 256, 75)])
def test_budget_reproduces_the_papers_pairs(m, s, expected_r):
    r = budget_rank(100, m, s, 768)
    assert r == expected_r
    assert trainable_count(m, r, s, 768) == 76_800


def test_budget_never_exceeds_the_prompt_tuning_budget():
    for row in budget_table(100, 256, 576):
        assert row["parameters"] <= 100 * 576
        assert trainable_count(row["m"], row["r"] + 1, 256, 576) > 100 * 576 or row["r"] == 0 and row["m"] == 100


@pytest.mark.parametrize("m, r, s", [(10, 0, 0), (6, 2, 16), (0, 5, 12), (8, 4, 64)])
def test_trainable_parameter_count_is_exact(tiny_llama, m, r, s):
    d = tiny_llama.config.hidden_size
    model = SoftPromptModel(tiny_llama, m, rank=r, max_length=s)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == m * d + s * r + r * d == trainable_count(m, r, s, d)
    assert not any(p.requires_grad for p in model.base.parameters())


def test_init_is_kaiming_a_and_zero_b(tiny_llama):
    model = SoftPromptModel(tiny_llama, 4, rank=8, max_length=32)
    assert torch.count_nonzero(model.offset_b) == 0
    bound = 1 / math.sqrt(8)  # kaiming_uniform(a=sqrt 5) on (s, r): U(-1/sqrt(r), 1/sqrt(r))
    assert model.offset_a.abs().max() <= bound and model.offset_a.std() > bound / 4


def test_text_init_repeats_the_text_tokens(tiny_llama, tokenizer):
    model = SoftPromptModel(tiny_llama, 7, rank=0)
    model.init_prompt("text", tokenizer=tokenizer, text="the sea")
    ids = tokenizer("the sea")["input_ids"]
    table = tiny_llama.get_input_embeddings().weight
    expected = table[torch.tensor((ids * 7)[:7])]
    assert torch.equal(model.prompt.detach(), expected)
    with pytest.raises(ConfigError, match="prompt_init_text"):
        model.init_prompt("text", tokenizer=tokenizer, text="")


# --- equivalences ----------------------------------------------------------------------------------------------


def test_dept_with_zero_b_equals_prompt_tuning(tiny_llama):
    pt = SoftPromptModel(tiny_llama, 5, rank=0)
    dept = SoftPromptModel(tiny_llama, 5, rank=4, max_length=16)
    with torch.no_grad():
        dept.prompt.copy_(pt.prompt)
    ids = torch.randint(3, 300, (2, 9))
    assert torch.equal(pt(input_ids=ids).logits, dept(input_ids=ids).logits)
    with torch.no_grad():
        dept.offset_b.normal_()
    assert not torch.allclose(pt(input_ids=ids).logits, dept(input_ids=ids).logits)


def test_zero_virtual_tokens_scores_exactly_like_the_bare_model(tiny_llama):
    ids = torch.randint(3, 300, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    wrapped = SoftPromptModel(tiny_llama, 0, rank=0)
    bare = tiny_llama(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()  # padding positions' logits are meaningless (and differ in position ids); real ones agree
    assert torch.equal(wrapped(input_ids=ids, attention_mask=mask).logits[keep], bare[keep])
    assert torch.equal(wrapped(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits, bare[keep])


def test_virtual_positions_are_stripped_and_logits_to_keep_selects_real_tokens(tiny_llama):
    model = _dept(tiny_llama, m=6)
    ids = torch.randint(3, 300, (2, 8))
    full = model(input_ids=ids).logits
    assert full.shape == (2, 8, tiny_llama.config.vocab_size)
    keep = torch.zeros(2, 8, dtype=torch.bool)
    keep[0, [2, 5]] = True
    keep[1, 7] = True
    assert torch.allclose(model(input_ids=ids, logits_to_keep=keep).logits, full[keep], atol=1e-6)


def _right_padded(lengths, total, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (len(lengths), total), generator=gen)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    return ids, mask, labels


def _loss_and_grads(model, ids, mask, labels):
    model.zero_grad()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.trainable_parameters().items()}


def test_dynamic_padding_equals_fixed_length_padding(tiny_llama):
    """Reference: pad to s and add row i of A B at position i. Ours: pad to the batch's longest example."""
    s = 24
    fixed_model = _dept(tiny_llama, m=4, r=3, s=s, offset_positions="absolute")
    dynamic_model = SoftPromptModel(tiny_llama, 4, rank=3, max_length=s)
    dynamic_model.load_state_dict(fixed_model.state_dict())
    ids, mask, labels = _right_padded([9, 5, 7], s)
    fixed = _loss_and_grads(fixed_model, ids, mask, labels)
    longest = 9
    dynamic = _loss_and_grads(dynamic_model, ids[:, :longest], mask[:, :longest], labels[:, :longest])
    assert torch.allclose(fixed[0], dynamic[0], atol=1e-6)
    for name in ("prompt", "offset_a", "offset_b"):
        assert torch.allclose(fixed[1][name], dynamic[1][name], atol=1e-6), name
    assert torch.count_nonzero(dynamic[1]["offset_a"][longest:]) == 0  # rows past the longest input never train


def test_left_padded_batch_equals_its_examples_one_by_one(tiny_llama):
    model = _dept(tiny_llama, m=3, r=2, s=16)
    rows = [torch.randint(3, 300, (n,)) for n in (6, 3, 5)]
    ids = torch.zeros(3, 6, dtype=torch.long)
    mask = torch.zeros(3, 6, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, 6 - len(row):] = row
        mask[i, 6 - len(row):] = 1
    batch = model(input_ids=ids, attention_mask=mask).logits
    for i, row in enumerate(rows):
        alone = model(input_ids=row[None]).logits[0]
        assert torch.allclose(batch[i, 6 - len(row):], alone, atol=1e-5)


def test_too_many_tokens_for_the_offset_is_an_error(tiny_llama):
    model = _dept(tiny_llama, s=4)
    with pytest.raises(ValueError, match="s=4"):
        model(input_ids=torch.randint(3, 300, (1, 5)))


# --- generation --------------------------------------------------------------------------------------------------


def test_generation_applies_the_offset_to_prompt_tokens_only(tiny_llama):
    model = _dept(tiny_llama, m=3, r=2, s=8).eval()
    prompt = torch.randint(3, 300, (1, 5))
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                         do_sample=False, pad_token_id=0)
    assert torch.equal(out[:, :5], prompt)
    # brute force: embeddings = [P ; E(prompt) + offset ; E(generated)] re-run from scratch at every step
    emb = tiny_llama.get_input_embeddings()
    with torch.no_grad():
        head = torch.cat([model.prompt[None], emb(prompt) + model.offset(torch.ones_like(prompt), 5)], 1)
        generated = []
        for _ in range(4):
            tail = emb(torch.tensor([generated], dtype=torch.long)) if generated else head[:, :0]
            logits = tiny_llama(inputs_embeds=torch.cat([head, tail], 1)).logits
            generated.append(int(logits[0, -1].argmax()))
    assert out[0, 5:].tolist() == generated


# --- other model families ------------------------------------------------------------------------------------------


def _train_steps(model, batch_fn, steps=30, lr=0.3):
    opt = torch.optim.AdamW(model.optimizer_groups(lr, lr))
    losses = []
    for _ in range(steps):
        loss = batch_fn().loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_seq2seq_prompt_and_offset_on_the_encoder_side():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    model = SoftPromptModel(T5ForConditionalGeneration(cfg), 4, rank=2, max_length=12)
    assert model.kind == "seq2seq"
    src = torch.randint(2, 64, (4, 10))
    target = torch.tensor([[5, 9, 1]] * 4)  # a fixed answer: learnable through the encoder-side prompt alone
    losses = _train_steps(model, lambda: model(input_ids=src, attention_mask=torch.ones_like(src), labels=target))
    assert losses[-1] < 0.5 * losses[0]
    assert model.offset_b.abs().sum() > 0  # A and B trained, not dropped
    out = model.generate(input_ids=src, attention_mask=torch.ones_like(src), max_new_tokens=3)
    assert out.shape[0] == 4


@pytest.mark.parametrize("head", ["mlm", "classification"])
def test_encoder_models_use_prompt_and_offset(head):
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, initializer_range=0.5)  # 0.02 leaves the MLM head ~flat
    base = BertForMaskedLM(cfg) if head == "mlm" else BertForSequenceClassification(cfg)
    model = SoftPromptModel(base, 4, rank=2, max_length=12)
    assert model.kind == "encoder"
    ids = torch.randint(5, 64, (4, 8))
    if head == "mlm":
        labels = torch.full_like(ids, -100)
        labels[:, 3] = torch.tensor([7, 8, 7, 8])
    else:  # a separable toy task: the label is which of two marker tokens the sentence repeats
        labels = torch.tensor([0, 1, 0, 1])
        ids[:, :4] = torch.where(labels[:, None] == 1, 20, 10)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels if head == "classification" else None)
    if head == "mlm":
        assert out.logits.shape == (4, 8, 64)  # virtual positions stripped

        def batch():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), labels.reshape(-1))
            return type("Out", (), {"loss": loss})
    else:
        def batch():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    if head == "classification":  # the new head (pooler + classifier) trains with the prompt, as modules_to_save
        d = cfg.hidden_size
        head_size = (d * d + d) + (d * 2 + 2)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * d + 12 * 2 + 2 * d + head_size
    before_b = model.offset_b.detach().clone()
    losses = _train_steps(model, batch, lr=0.3 if head == "mlm" else 0.05)  # 0.3 overshoots the linear head
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.offset_b.detach(), before_b)  # the reference's encoder path drops A, B; we do not


def test_the_lm_head_never_runs_at_virtual_positions(tiny_llama):
    """Training loss and scoring both reach the head (or the fused head) only at the trained/scored positions."""
    from posttrain.losses import token_nll, weighted_nll_sum

    model = _dept(tiny_llama, m=7)
    ids = torch.randint(3, 300, (2, 6))
    weights = torch.zeros(2, 6)
    weights[0, 5] = weights[1, 3:] = 1.0
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(), "loss_weights": weights}
    seen = []
    hook = tiny_llama.model.norm.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    rows = []
    identity_hook = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: rows.append(out.shape) if isinstance(mod, torch.nn.Identity) else None)
    try:
        weighted_nll_sum(model, batch).backward()
        token_nll(model, batch)
    finally:
        hook.remove()
        identity_hook.remove()
    assert seen == [7 + 6, 7 + 6]  # the backbone sees the virtual tokens ...
    assert [tuple(r) for r in rows] == [(4, 32), (4, 32)]  # ... the (bypassed) head only the 4 trained positions
