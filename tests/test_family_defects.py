"""Defects that showed on one model family only (issue 16, "every method on every model family").

- Resume on GPT-NeoX: transformers saves its LM head as ``embed_out.weight`` but names it ``lm_head.weight`` in the
  module, and the Trainer's checkpoint reload skipped it: a resumed full fine-tune, and the best checkpoint that
  ``load_best_model_at_end`` restores, kept a stale head. Resumed == uninterrupted, bitwise, now.
- Verbalizer scores (``verbalizer_head.head_logits``) read LM-head rows directly and so skipped what the model
  applies to its logits: Gemma 2's final soft-cap, Cohere's logit_scale, Granite's logits_scaling, BART's
  final_logits_bias, DeBERTa-v2's head (whose "output embedding" is a dense layer before the vocabulary product).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.callbacks import StopAtStepCallback
from posttrain.checkpointing import saved_names
from posttrain.config import load_config
from posttrain.methods.verbalizer_head import captured_head_input, head_logits

from test_crash_resume import ROWS, _overrides, _train_one_thread
from tiny_models import build_tiny, save_tiny


# ---------------------------------------------------------------------------------------------------------------
# resume on GPT-NeoX


def test_gpt_neox_checkpoint_names_differ_from_the_module_names():
    model, _ = build_tiny("gpt_neox")
    assert saved_names(model) == {"embed_out.weight": "lm_head.weight"}
    assert saved_names(build_tiny("llama")[0]) == {}


def test_gpt_neox_full_fine_tune_resumed_equals_uninterrupted_bitwise(tmp_path):
    model_dir = save_tiny("gpt_neox", tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    steps = ["train.max_steps=4", "data.eval_size=4"]
    _train_one_thread(load_config(None, _overrides(tmp_path, model_dir, "whole") + steps))
    cut = load_config(None, _overrides(tmp_path, model_dir, "cut") + steps)
    _train_one_thread(cut, callbacks=[StopAtStepCallback(2)])
    assert "embed_out.weight" in load_file(str(tmp_path / "cut" / "checkpoints" / "checkpoint-2" /
                                               "model.safetensors"))
    _train_one_thread(cut, resume=True)
    whole = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    evals = {run: [json.loads(line)["eval_output_loss"] for line in (tmp_path / run / "metrics.jsonl").open()
                   if "eval_output_loss" in json.loads(line)] for run in ("whole", "cut")}
    assert evals["whole"] and evals["whole"][-1] == evals["cut"][-1]  # the final eval loss too


def test_gpt_neox_best_checkpoint_restores_its_lm_head(tmp_path):
    """CPT's load_best_model_at_end goes through the same reload: the best checkpoint's head comes back."""
    from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig, continued_pretraining

    model_dir = save_tiny("gpt_neox", tmp_path / "model")
    lines = ["the quick brown fox jumps over the lazy dog .", "write a poem about the sea . the sea is wide ."]
    (tmp_path / "train.txt").write_text("\n".join(lines * 4) + "\n")
    (tmp_path / "dev.txt").write_text(lines[0] + "\n")
    cfg = ContinuedPretrainingConfig(model=str(model_dir), train_file=str(tmp_path / "train.txt"),
                                     eval_file=str(tmp_path / "dev.txt"), output_dir=str(tmp_path / "cpt"),
                                     max_length=32, per_device_batch_size=4, gradient_accumulation_steps=1,
                                     max_steps=3, eval_steps=1, save_total_limit=None, learning_rate=1e-2,
                                     progress=False)
    trainer = continued_pretraining(cfg)["trainer"]
    first = tmp_path / "cpt" / "checkpoints" / "checkpoint-1"
    trainer.state.best_model_checkpoint = str(first)  # restore an earlier checkpoint than the last one
    trainer._load_best_model()
    saved = load_file(str(first / "model.safetensors"))
    later = load_file(str(tmp_path / "cpt" / "checkpoints" / "checkpoint-3" / "model.safetensors"))
    assert not torch.equal(saved["embed_out.weight"], later["embed_out.weight"])
    state = trainer.model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[saved_names(trainer.model).get(key, key)], value), key


# ---------------------------------------------------------------------------------------------------------------
# verbalizer scores on models that post-process their logits


def _causal(cls_name: str, **extra):
    import transformers

    config_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64, **extra)
    return getattr(transformers, cls_name)(cfg).eval()


def _gemma2():
    model, _ = build_tiny("gemma2")
    assert model.config.final_logit_softcapping == 3.0
    with torch.no_grad():  # logits well past the cap, so that capping them changes the label softmax
        model.get_output_embeddings().weight.mul_(150.0)
    return model


def _bart():
    model, _ = build_tiny("bart")
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 2.0)
    return model


def _deberta_v2():
    from transformers import DebertaV2Config, DebertaV2ForMaskedLM

    torch.manual_seed(0)
    cfg = DebertaV2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=64, legacy=False)
    return DebertaV2ForMaskedLM(cfg).eval()


FAMILIES = {
    "gemma2_softcap": _gemma2,
    "cohere_logit_scale": lambda: _causal("CohereForCausalLM", logit_scale=4.0),
    "granite_logits_scaling": lambda: _causal("GraniteForCausalLM", logits_scaling=0.05),
    "bart_final_logits_bias": _bart,
    "deberta_v2_head": _deberta_v2,
}
ROWS_PICKED = torch.tensor([5, 17, 60, 5])


def _inputs(model):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (3, 8), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.randint(3, 90, (3, 6), generator=gen)
    return inputs


@pytest.mark.parametrize("family", FAMILIES)
def test_head_logits_equal_the_models_own_logits(family):
    model = FAMILIES[family]()
    inputs = _inputs(model)
    batch_index, positions = torch.tensor([0, 1, 2]), torch.tensor([5, 4, 0])
    with torch.no_grad():
        full = model(**inputs).logits[batch_index, positions][:, ROWS_PICKED]
        got = head_logits(model, inputs, batch_index, positions, ROWS_PICKED)
        whole = head_logits(model, inputs, batch_index, positions)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole[:, ROWS_PICKED], full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.softmax(-1), full.softmax(-1), atol=1e-6, rtol=1e-5)


def test_gemma2_rows_read_directly_would_miss_the_soft_cap():
    """What head_logits computed before: the raw head rows. The cap bites, so the label softmax differs."""
    model = _gemma2()
    inputs = _inputs(model)
    batch_index, positions = torch.tensor([0, 1, 2]), torch.tensor([5, 4, 0])
    with torch.no_grad():
        with captured_head_input(model) as (box, head):
            model(**inputs)
        raw = torch.nn.functional.linear(box["hidden"][batch_index, positions], head.weight[ROWS_PICKED])
        got = head_logits(model, inputs, batch_index, positions, ROWS_PICKED)
    assert raw.abs().max() > 3 * model.config.final_logit_softcapping
    assert got.abs().max() <= model.config.final_logit_softcapping
    assert (raw.softmax(-1) - got.softmax(-1)).abs().max() > 1e-2


def test_head_logits_gradients_flow_through_the_soft_cap():
    model = _gemma2().train()
    inputs = _inputs(model)
    batch_index, positions = torch.tensor([0, 2]), torch.tensor([3, 7])
    head_logits(model, inputs, batch_index, positions, ROWS_PICKED).logsumexp(-1).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(**inputs).logits[batch_index, positions][:, ROWS_PICKED].logsumexp(-1).sum().backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4)
