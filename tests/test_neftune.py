"""methods/neftune.py: noise only in training, with scale alpha/sqrt(L*d) per example (or the padded length)."""

import json
import math

import pytest
import torch

from posttrain.config import load_config
from posttrain.engine import train
from posttrain.errors import ConfigError
from posttrain.methods import neftune

from test_engine import ROWS, config  # noqa: F401  (shared tiny-run helpers)


def _batch(tokenizer):
    mask = torch.tensor([[1] * 10 + [0] * 6, [1] * 16])
    ids = torch.randint(5, len(tokenizer), (2, 16))
    return ids, mask


def _noise(model, ids, mask):
    emb = model.get_input_embeddings()
    clean = torch.nn.functional.embedding(ids, emb.weight).detach()  # bypasses the hooks
    captured = {}
    handle = emb.register_forward_hook(lambda m, i, o: captured.__setitem__("x", o.detach()))
    model(input_ids=ids, attention_mask=mask)
    handle.remove()
    return captured["x"] - clean


def test_noise_only_in_training_mode(tokenizer, tiny_llama):
    ids, mask = _batch(tokenizer)
    hooks = neftune.attach(tiny_llama, alpha=5.0)
    tiny_llama.eval()
    assert torch.equal(_noise(tiny_llama, ids, mask), torch.zeros(2, 16, 32))
    with torch.no_grad():
        out_eval = tiny_llama(input_ids=ids, attention_mask=mask).logits
    tiny_llama.train()
    assert _noise(tiny_llama, ids, mask).abs().max() > 0
    hooks.remove()
    tiny_llama.eval()
    with torch.no_grad():  # removing the hooks restores the clean model exactly
        assert torch.equal(tiny_llama(input_ids=ids, attention_mask=mask).logits, out_eval)


@pytest.mark.parametrize("length", ["real_tokens", "padded"])
def test_noise_scale_per_example(tokenizer, tiny_llama, length):
    torch.manual_seed(0)
    ids, mask = _batch(tokenizer)
    tiny_llama.train()
    hooks = neftune.attach(tiny_llama, alpha=5.0, length=length)
    noise = torch.cat([_noise(tiny_llama, ids, mask) for _ in range(20)])  # 20 draws, rows alternate examples
    hooks.remove()
    d = 32
    if length == "real_tokens":  # example 0 has 10 real tokens, example 1 has 16; padding gets none
        bounds = [5.0 / math.sqrt(10 * d), 5.0 / math.sqrt(16 * d)]
        assert torch.equal(noise[0::2, 10:], torch.zeros_like(noise[0::2, 10:]))
        real = [noise[0::2, :10], noise[1::2]]
    else:  # transformers/TRL: the padded length 16 for both rows
        bounds = [neftune.expected_bound(16, 5.0, d)] * 2
        real = [noise[0::2], noise[1::2]]
    for values, bound in zip(real, bounds):
        assert values.abs().max() <= bound * (1 + 1e-5)
        assert values.abs().max() >= 0.99 * bound  # uniform on [-b, b]: thousands of draws reach the edge
        assert abs(values.mean().item()) < 0.05 * bound
        assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # var of U(-b, b) = b^2/3


def test_packed_rows_use_each_examples_length():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3, 4]])
    lengths = neftune.example_lengths((1, 10), None, position_ids, "real_tokens")
    assert lengths.tolist() == [[3, 3, 3, 2, 2, 5, 5, 5, 5, 5]]


def test_training_run_noises_train_loss_but_not_evaluation(tmp_path, tiny_model_dir):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    extra = ("train.eval_on_start=true", "train.eval_steps=100", "train.max_steps=2")
    plain = train(config(tmp_path, tiny_model_dir, path, "plain", *extra))
    noisy = train(config(tmp_path, tiny_model_dir, path, "noisy", *extra, "train.neftune_alpha=50"))
    first = [json.loads(line) for line in (tmp_path / "noisy" / "metrics.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    start_noisy = next(r["eval_output_loss"] for r in first if "eval_output_loss" in r)
    start_plain = next(r["eval_output_loss"] for r in base if "eval_output_loss" in r)
    assert start_noisy == start_plain  # evaluation of the same starting weights sees no noise
    loss_noisy = next(r["loss"] for r in first if "loss" in r)
    loss_plain = next(r["loss"] for r in base if "loss" in r)
    assert loss_noisy != loss_plain  # the first training step's loss (same weights, same batch) does
    meta = json.loads((tmp_path / "noisy" / "run_meta.json").read_text())
    assert meta["regularisation"]["neftune"]["neftune_alpha"] == 50
    assert noisy["global_step"] == plain["global_step"] == 2


@pytest.mark.parametrize("overrides, key", [
    (["train.neftune_alpha=-1"], "train.neftune_alpha"),
    (["train.neftune_alpha=5", "adapter.type=dept"], "train.neftune_alpha"),
    (["train.neftune_length=padded"], "train.neftune_length"),
])
def test_bad_neftune_config(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, ["data.train_file=x.jsonl", *overrides])
