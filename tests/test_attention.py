"""attention.py: posttrain_varlen equals per-example attention (values and gradients), falls back to SDPA for
padded batches and generation, and trains like sdpa with packing."""

import json

import pytest
import torch

from posttrain.attention import NAME, register, segment_bounds

from test_engine import ROWS, config, final_weights  # noqa: F401


@pytest.fixture
def model(tokenizer):
    from conftest import make_tiny_llama

    register()
    return make_tiny_llama(len(tokenizer)).train()


def _packed(tokenizer, lens=(5, 9, 3)):
    torch.manual_seed(0)
    ids = [torch.randint(5, len(tokenizer), (n,)) for n in lens]
    return ids, torch.cat(ids)[None], torch.cat([torch.arange(n) for n in lens])[None]


def _logits(model, impl, **inputs):
    model.config._attn_implementation = impl
    return model(**inputs, use_cache=False).logits


def test_segment_bounds():
    assert segment_bounds(torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])) == [[(0, 3), (3, 5), (5, 6)],
                                                                                    [(0, 6)]]


def test_packed_row_equals_each_example_alone_values_and_gradients(tokenizer, model):
    ids, packed, pos = _packed(tokenizer)
    alone = torch.cat([_logits(model, "sdpa", input_ids=x[None]) for x in ids], dim=1)
    varlen = _logits(model, NAME, input_ids=packed, position_ids=pos)
    assert torch.allclose(varlen, alone, atol=1e-5)
    grads = {}
    for impl in (NAME, "sdpa"):  # sdpa: transformers' dense block-diagonal mask for the packed row
        model.zero_grad()
        out = _logits(model, impl, input_ids=packed, position_ids=pos)
        (out.float().logsumexp(-1).sum() - out[0, torch.arange(16), packed[0, 1:]].sum()).backward()
        grads[impl] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads[NAME], grads["sdpa"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_padded_batches_and_generation_match_sdpa(tokenizer, model):
    model.eval()
    ids = torch.randint(5, len(tokenizer), (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])  # left padding
    a = _logits(model, NAME, input_ids=ids, attention_mask=mask)
    b = _logits(model, "sdpa", input_ids=ids, attention_mask=mask)
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-6)
    outs = {}
    for impl in (NAME, "sdpa"):
        model.config._attn_implementation = impl
        outs[impl] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(outs[NAME], outs["sdpa"])


def test_packed_training_run_equals_sdpa(tmp_path, tiny_model_dir):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for impl in ("sdpa", NAME):
        from posttrain.engine import train

        train(config(tmp_path, tiny_model_dir, path, impl, "train.packing=true", f"model.attn_implementation={impl}",
                     "train.mixed_precision=none"))  # fp32: the two kernels agree to float rounding
    a, b = final_weights(tmp_path / "sdpa"), final_weights(tmp_path / NAME)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert f"attn_implementation: {NAME}" in (tmp_path / NAME / "config.yaml").read_text()


def test_auto_picks_varlen_for_packed_training_and_sdpa_otherwise(tmp_path, tiny_model_dir):
    from posttrain.attention import choose
    from posttrain.engine import train

    assert (choose("auto", True), choose("auto", False), choose("eager", True)) == (NAME, "sdpa", "eager")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for name, packing in (("packed", "true"), ("padded", "false")):
        train(config(tmp_path, tiny_model_dir, path, name, f"train.packing={packing}", "train.max_steps=1"))
    meta = {name: json.loads((tmp_path / name / "run_meta.json").read_text()) for name in ("packed", "padded")}
    assert meta["packed"]["model"]["attention"] == NAME and meta["padded"]["model"]["attention"] == "sdpa"
