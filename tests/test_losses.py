"""losses.py + data/sft.py: the weighted loss equals a hand computation; packing and padding agree."""

import torch
import torch.nn.functional as F

from posttrain.config import LossConfig
from posttrain.data.sft import SFTCollator, build_sft_dataset
from posttrain.losses import target_positions, weighted_nll_sum

EXAMPLES = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a poem about the sea."},
                  {"role": "assistant", "content": "The sea is wide and blue."}, {"role": "user", "content": "More?"},
                  {"role": "assistant", "content": "Bonjour."}]},
    {"text": "The quick brown fox jumps over the lazy dog."},
]


def hand_loss(model, dataset, reduction="token_mean"):
    """Sum over examples of w_t * -log p(x_t | x_<t), computed one example at a time with full logits."""
    totals, weights_sum, per_example = 0.0, 0.0, []
    for row in dataset:
        ids = torch.tensor(row["input_ids"])[None]
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        ex_total, ex_w = 0.0, 0.0
        for t in range(1, len(row["input_ids"])):
            w = row["loss_weights"][t]
            if w > 0:
                ex_total += -w * logp[t - 1, row["input_ids"][t]].item()
                ex_w += w
        totals += ex_total
        weights_sum += ex_w
        per_example.append(ex_total / ex_w)
    return totals / weights_sum if reduction == "token_mean" else sum(per_example) / len(per_example)


def test_weighted_loss_equals_hand_computation(tokenizer, tiny_llama):
    loss_cfg = LossConfig(mode="instruction_and_output", prompt_loss_weight=0.3)
    ds, _ = build_sft_dataset(tokenizer, EXAMPLES, None, loss_cfg, 512)
    rows = ds.to_list()
    for reduction in ("token_mean", "example_mean"):
        for packing in (False, True):
            batch = SFTCollator(tokenizer.pad_token_id, packing=packing, reduction=reduction)(rows)
            with torch.no_grad():
                ours = (weighted_nll_sum(tiny_llama, batch) / batch["loss_normalizer"]).item()
            assert abs(ours - hand_loss(tiny_llama, rows, reduction)) < 1e-5, (reduction, packing)


def test_token_mean_matches_transformers_loss_for_unit_weights(tokenizer, tiny_llama):
    ds, _ = build_sft_dataset(tokenizer, EXAMPLES, None, LossConfig(mode="output_only"), 512)
    batch = SFTCollator(tokenizer.pad_token_id)(ds.to_list())
    with torch.no_grad():
        ours = weighted_nll_sum(tiny_llama, batch) / batch["loss_normalizer"]
        ref = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(ours, ref, atol=1e-6)


def test_head_sees_only_trained_positions(tokenizer, tiny_llama, monkeypatch):
    from posttrain import losses

    ds, stats = build_sft_dataset(tokenizer, EXAMPLES[:2], None, LossConfig(mode="output_only"), 512)
    batch = SFTCollator(tokenizer.pad_token_id)(ds.to_list())
    seen = {}
    real = losses.FusedLinearCrossEntropy.apply

    def spy(hidden, weight, targets, weights):
        seen["rows"] = hidden.shape[0]
        return real(hidden, weight, targets, weights)

    monkeypatch.setattr(losses.FusedLinearCrossEntropy, "apply", spy)
    weighted_nll_sum(tiny_llama, batch)
    assert seen["rows"] == int(target_positions(batch["loss_weights"]).sum()) == stats.trained_tokens
    assert isinstance(tiny_llama.lm_head, torch.nn.Linear)  # the head is restored after the call


def test_fused_chunked_loss_and_gradients_equal_full_logits(tokenizer, monkeypatch):
    """Value and gradients (every parameter, tied head included) match F.cross_entropy on full logits."""
    from conftest import make_tiny_llama

    from posttrain import losses

    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", len(tokenizer) * 7)  # 7 rows per chunk: many chunks
    ds, _ = build_sft_dataset(tokenizer, EXAMPLES, None, LossConfig(mode="instruction_and_output",
                                                                    prompt_loss_weight=0.4), 512)
    batch = SFTCollator(tokenizer.pad_token_id)(ds.to_list())
    fused_model, ref_model = make_tiny_llama(len(tokenizer)), make_tiny_llama(len(tokenizer))
    fused = weighted_nll_sum(fused_model, batch)
    fused.backward()
    logits = ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                          reduction="none", ignore_index=-100)
    ref = (nll * batch["loss_weights"][:, 1:].reshape(-1)).sum()
    ref.backward()
    assert torch.allclose(fused, ref, rtol=1e-5, atol=1e-5)
    for (name, p), (_, q) in zip(fused_model.named_parameters(), ref_model.named_parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name


def test_eval_nll_matches_training_path(tokenizer, tiny_llama):
    from posttrain.losses import token_nll

    ds, _ = build_sft_dataset(tokenizer, EXAMPLES, None, LossConfig(mode="output_only"), 512)
    batch = SFTCollator(tokenizer.pad_token_id)(ds.to_list())
    with torch.no_grad():
        nll, weights = token_nll(tiny_llama, batch)
        assert torch.allclose((nll * weights).sum(), weighted_nll_sum(tiny_llama, batch), atol=1e-5)


def test_packing_layout(tokenizer):
    ds, _ = build_sft_dataset(tokenizer, EXAMPLES, None, LossConfig(mode="all_tokens"), 512)
    rows = ds.to_list()
    batch = SFTCollator(tokenizer.pad_token_id, packing=True)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert "attention_mask" not in batch
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    assert batch["position_ids"][0, starts].tolist() == [0, 0, 0]
    assert batch["labels"][0, starts].tolist() == [-100, -100, -100]  # never predicted across examples
    assert batch["loss_normalizer"].item() == sum(n - 1 for n in lengths)


def test_truncation_drops_examples_without_targets(tokenizer):
    long_prompt = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    ds, stats = build_sft_dataset(tokenizer, [long_prompt, EXAMPLES[0]], None, LossConfig(mode="output_only"), 64)
    assert len(ds) == 1 and stats.dropped_no_target == 1 and stats.truncated == 1


def test_fused_loss_keeps_fp32_logits_inside_an_autocast_region():
    """Under bf16 autocast (train.mixed_precision) the fused loss and its eval twin still compute fp32 logits: the
    same value and gradients as outside the region (autocast would otherwise make the matmuls bf16, or fail on the
    in-place fp32 gradient accumulation)."""
    from posttrain.losses import FusedLinearCrossEntropy, chunked_nll

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    targets, rows = torch.randint(0, 50, (6,), generator=gen), torch.rand(6, generator=gen)
    plain = FusedLinearCrossEntropy.apply(hidden, weight, targets, rows)
    plain.backward()
    want = (plain.detach(), hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = FusedLinearCrossEntropy.apply(hidden, weight, targets, rows)
        nll = chunked_nll(hidden.detach(), weight.detach(), targets)
    cast.backward()
    assert cast.dtype == torch.float32 and torch.equal(cast.detach(), want[0])
    assert torch.equal(hidden.grad, want[1]) and torch.equal(weight.grad, want[2])
    assert torch.allclose((nll * rows).sum(), want[0], atol=1e-5)
