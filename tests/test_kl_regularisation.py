"""methods/kl_regularisation.py: KL term zero at the reference, equal to a full-logits hand computation, chunking
exact in value and gradient, LoRA's reference = the adapter switched off, and the engine wiring."""

import copy
import json

import pytest
import torch

from posttrain import losses
from posttrain.config import load_config
from posttrain.engine import train
from posttrain.errors import ConfigError
from posttrain.methods import kl_regularisation as klr
from posttrain.methods.kl_regularisation import KLRegularisedLoss

from test_engine import ROWS, config  # noqa: F401


def _batch(tokenizer):
    torch.manual_seed(1)
    ids = torch.randint(5, len(tokenizer), (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 9:] = 0
    weights = torch.zeros(3, 12)
    weights[0, 4:9] = 1.0
    weights[1, 2:12] = 0.5
    weights[2, 6:12] = 1.0
    labels = torch.where(weights > 0, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weights": weights}


def _perturbed(model, scale=0.05, seed=3):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


def _by_hand(policy, reference, batch, form):
    """Full logits of both models, then the per-position terms, summed with the weights."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    logp = torch.log_softmax(policy(**inputs).logits[:, :-1].float(), -1)
    with torch.no_grad():
        logq = torch.log_softmax(reference(**inputs).logits[:, :-1].float(), -1)
    y, w = batch["input_ids"][:, 1:], batch["loss_weights"][:, 1:]
    tp = logp.gather(-1, y[..., None]).squeeze(-1)
    tq = logq.gather(-1, y[..., None]).squeeze(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1) if form == "full" else tp - tq
    return (-tp * w).sum(), (kl * w).sum()


@pytest.mark.parametrize("form", ["full", "single_sample"])
def test_kl_is_zero_when_the_model_is_the_reference(tokenizer, tiny_llama, form):
    batch = _batch(tokenizer)
    loss = KLRegularisedLoss(1.0, form, copy.deepcopy(tiny_llama).eval())
    nll, kl = loss.terms(tiny_llama, batch)
    assert kl.item() == pytest.approx(0.0, abs=1e-5)
    assert nll.item() == pytest.approx(losses.weighted_nll_sum(tiny_llama, batch).item(), rel=1e-5)


@pytest.mark.parametrize("form", ["full", "single_sample"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_terms_and_gradients_equal_full_logits_computation(tokenizer, tiny_llama, monkeypatch, form, chunk):
    if chunk:  # several chunks of 4 rows: the chunked, recomputed path must give the same value and gradient
        monkeypatch.setattr(klr, "CHUNK_ELEMENTS", 4 * len(tokenizer))
    batch = _batch(tokenizer)
    policy = _perturbed(tiny_llama)
    loss = KLRegularisedLoss(0.7, form, tiny_llama)
    nll, kl = loss.terms(policy, batch)
    (nll + 0.7 * kl).backward()
    got = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad()
    ref_nll, ref_kl = _by_hand(policy, tiny_llama, batch, form)
    assert nll.item() == pytest.approx(ref_nll.item(), rel=1e-5)
    assert kl.item() == pytest.approx(ref_kl.item(), rel=1e-4, abs=1e-6)
    if form == "full":
        assert kl.item() > 0
    (ref_nll + 0.7 * ref_kl).backward()
    for name, param in policy.named_parameters():
        assert torch.allclose(got[name], param.grad, atol=1e-5, rtol=1e-4), name


def test_single_sample_gradient_at_the_reference_is_scaled_nll_gradient(tokenizer, tiny_llama):
    """At pi_theta = pi_ref the one-sample estimate log p - log p_ref is 0 but its gradient is grad log p: the total
    gradient is (1 - lambda) * grad NLL (with lambda = 1 nothing trains), while the full KL adds no gradient."""
    batch = _batch(tokenizer)
    grads = {}
    for name, form, coef in (("nll", "full", 0.0), ("single", "single_sample", 0.75), ("full", "full", 0.75)):
        policy = copy.deepcopy(tiny_llama)
        loss = KLRegularisedLoss(coef, form, copy.deepcopy(tiny_llama).eval())
        loss(policy, batch).backward()
        grads[name] = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert torch.allclose(grads["single"], 0.25 * grads["nll"], atol=1e-6)
    assert torch.allclose(grads["full"], grads["nll"], atol=1e-6)


def test_lora_reference_is_the_base_model_with_the_adapter_off(tokenizer, tiny_llama):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(tiny_llama)
    peft_model = get_peft_model(tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False))
    peft_model.train()
    batch = _batch(tokenizer)
    loss = KLRegularisedLoss(1.0, "full", reference=None)
    nll, kl = loss.terms(peft_model, batch)
    ref_nll, ref_kl = _by_hand(peft_model, base, batch, "full")
    assert kl.item() == pytest.approx(ref_kl.item(), rel=1e-4) and kl.item() > 0
    assert nll.item() == pytest.approx(ref_nll.item(), rel=1e-5)
    assert peft_model.training  # the reference pass switched eval mode on only for itself


def test_engine_logs_kl_and_records_the_choice(tmp_path, tiny_model_dir):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    final = train(config(tmp_path, tiny_model_dir, path, "kl", "loss.kl_coef=0.5", "loss.kl_form=single_sample"))
    records = [json.loads(line) for line in (tmp_path / "kl" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train_kl" in r]
    assert len(logged) == 4
    assert logged[0]["train_kl"] == pytest.approx(0.0, abs=1e-5)  # step 1: the policy is still the reference
    assert logged[0]["loss"] == pytest.approx(logged[0]["train_nll"], rel=1e-4)
    assert any(abs(r["train_kl"]) > 1e-4 for r in logged[1:])
    meta = json.loads((tmp_path / "kl" / "run_meta.json").read_text())
    assert meta["regularisation"]["kl"]["kl_form"] == "single_sample"
    assert final["global_step"] == 4


@pytest.mark.parametrize("overrides, key", [
    (["loss.kl_coef=-1"], "loss.kl_coef"),
    (["loss.kl_coef=1", "adapter.type=prompt_tuning"], "loss.kl_coef"),
    (["loss.kl_form=single_sample"], "loss.kl_form"),
])
def test_bad_kl_config(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, ["data.train_file=x.jsonl", *overrides])


def test_single_sample_with_lambda_one_has_no_gradient_anywhere(tokenizer, tiny_llama):
    """-log p + 1 * (log p - log p_ref) = -log p_ref: constant in theta, even away from the reference."""
    batch = _batch(tokenizer)
    policy = _perturbed(tiny_llama, scale=0.2)
    KLRegularisedLoss(1.0, "single_sample", tiny_llama)(policy, batch).backward()
    assert max(p.grad.abs().max().item() for p in policy.parameters()) < 1e-6
