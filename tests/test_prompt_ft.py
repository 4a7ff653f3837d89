"""Prompt-based fine-tuning (methods/prompt_ft.py, verbalizer_head.py, objectives.py): restricted logits equal full
logits on causal, masked and seq2seq models (also through DePT and LoRA); the encodings put the slot where the
method says; scores equal brute-force log-likelihoods; the regression loss is the KL of PCP; training end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_classification import task_file  # noqa: F401  (fixture)

from conftest import make_tokenizer
from posttrain.config import load_config
from posttrain.methods import prompt_ft
from posttrain.methods.soft_prompt import SoftPromptModel
from posttrain.methods.verbalizer_head import head_logits
from posttrain.tasks import load_task_file, render_template

PAIR_YAML = """
name: toy-pair
kind: pair
labels: ["0", "1"]
verbalizer: {"0": "No", "1": "Yes"}
template: "{text_a} ? {mask} , {text_b}"
text_to_text: "first: {text_a} second: {text_b}"
metrics: [accuracy]
data: {}
"""

STS_YAML = """
name: toy-sts
kind: pair
labels: ["0", "1"]
verbalizer: {"0": "wide", "1": "sea"}
template: "{text_a} {mask} , {text_b}"
text_to_text: "a: {text_a} b: {text_b}"
metrics: [pearson]
regression: {lb: 0, ub: 5}
data: {}
"""


@pytest.fixture(scope="module")
def mlm_tokenizer():
    tok = make_tokenizer()
    tok.add_special_tokens({"mask_token": "<mask>", "additional_special_tokens": ["<extra_id_0>"]})
    return tok


def tiny_roberta(vocab):
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=130, pad_token_id=1, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return RobertaForMaskedLM(cfg).eval()


def tiny_t5(vocab, pad):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   decoder_start_token_id=pad, pad_token_id=pad)
    return T5ForConditionalGeneration(cfg).eval()


def _task(tmp_path, text, name="task.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_task_file(path)


def _batch(tok, task, examples, kind, **kw):
    opts = dict(kind=kind, form="template", max_length=64, label_tokens="all", causal_scoring="slot")
    opts.update(kw)
    rows, _ = prompt_ft.build_rows(tok, task, examples, source="test", **opts)
    return prompt_ft.PromptCollator(tok.pad_token_id)(rows), rows


EXAMPLES = [{"text_a": "the sea is wide", "text_b": "good morning", "label": "1", "idx": 0},
            {"text_a": "what is the capital of France", "text_b": "Paris", "label": "0", "idx": 1},
            {"text_a": "write a poem", "text_b": "the lazy dog", "label": "1", "idx": 2}]


# ------------------------------------------------------------------------------------------ restricted logits


@pytest.mark.parametrize("wrap", ["plain", "dept", "lora"])
def test_causal_head_logits_equal_full_logits(tmp_path, tokenizer, tiny_llama, wrap):
    model = tiny_llama
    if wrap == "dept":
        model = SoftPromptModel(model, num_virtual_tokens=3, rank=2, max_length=64)
        torch.nn.init.normal_(model.offset_b)
    elif wrap == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    task = _task(tmp_path, PAIR_YAML)
    batch, _ = _batch(tokenizer, task, EXAMPLES, "causal")
    rows = torch.tensor([5, 17, 230])
    index = torch.arange(3)
    got = head_logits(model, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                              "use_cache": False}, index, batch["position"], rows)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = full[index, batch["position"]][:, rows]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_masked_lm_head_logits_equal_full_logits_at_the_mask(tmp_path, mlm_tokenizer):
    model = tiny_roberta(len(mlm_tokenizer))
    task = _task(tmp_path, PAIR_YAML)
    batch, _ = _batch(mlm_tokenizer, task, EXAMPLES, "masked", label_tokens="first")
    assert all(batch["input_ids"][i, p] == mlm_tokenizer.mask_token_id for i, p in enumerate(batch["position"]))
    words = [mlm_tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("No", "Yes")]
    scores = prompt_ft.candidate_scores(model, batch, "masked")
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = full[torch.arange(3), batch["position"]][:, words]
    torch.testing.assert_close(scores, want, atol=1e-5, rtol=1e-5)


def test_seq2seq_scores_equal_decoder_log_likelihoods(tmp_path, mlm_tokenizer):
    model = tiny_t5(len(mlm_tokenizer), mlm_tokenizer.pad_token_id)
    task = _task(tmp_path, PAIR_YAML)
    batch, rows = _batch(mlm_tokenizer, task, EXAMPLES, "seq2seq")
    assert mlm_tokenizer.convert_tokens_to_ids("<extra_id_0>") in rows[0]["input_ids"]  # the slot is a sentinel
    fast = prompt_ft.candidate_scores(model, batch, "seq2seq")
    slow = prompt_ft.summed_logprobs(model, batch, "seq2seq")
    # one-token words: logits vs log-probs differ by log Z per example, which the softmax over labels removes
    torch.testing.assert_close(F.log_softmax(fast, -1), F.log_softmax(slow, -1), atol=1e-5, rtol=1e-5)
    start = model.config.decoder_start_token_id
    for b in range(3):
        for c, cand in enumerate(batch["candidates"][b]):
            dec = torch.tensor([[start] + cand[:-1]])
            logits = model(input_ids=batch["input_ids"][b: b + 1], attention_mask=batch["attention_mask"][b: b + 1],
                           decoder_input_ids=dec).logits[0]
            want = F.log_softmax(logits, -1)[torch.arange(len(cand)), cand].sum()
            assert abs(float(slow[b, c]) - float(want)) < 1e-4


# ------------------------------------------------------------------------------------------ causal encodings


def test_causal_slot_and_filled_encodings(tmp_path, tokenizer):
    task = _task(tmp_path, PAIR_YAML)
    ex = EXAMPLES[0]
    slot = prompt_ft.encode_example(tokenizer, task, ex, kind="causal", form="template", max_length=64,
                                    label_tokens="all", causal_scoring="slot")
    assert tokenizer.decode(slot.input_ids, skip_special_tokens=True) == "the sea is wide ?"
    assert slot.position == len(slot.input_ids) - 1
    assert [tokenizer.decode(c) for c in slot.candidates] == [" No", " Yes"]
    filled = prompt_ft.encode_example(tokenizer, task, ex, kind="causal", form="template", max_length=64,
                                      label_tokens="all", causal_scoring="filled")
    assert [tokenizer.decode(c) for c in filled.candidates] == [" No , good morning", " Yes , good morning"]


def test_filled_scores_equal_whole_template_log_likelihood_differences(tmp_path, tokenizer, tiny_llama):
    task = _task(tmp_path, PAIR_YAML)
    batch, _ = _batch(tokenizer, task, EXAMPLES, "causal", causal_scoring="filled")
    scores = prompt_ft.candidate_scores(tiny_llama, batch, "causal")
    for b, ex in enumerate(EXAMPLES):
        totals = []
        for word in ("No", "Yes"):  # brute force: log-likelihood of the whole filled template
            text = render_template(task, ex, word)
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            logp = F.log_softmax(tiny_llama(input_ids=ids).logits[0, :-1], -1)
            totals.append(float(logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()))
        # the shared prefix cancels: differences between labels must agree (tokenisation at the slot permitting)
        assert abs((totals[1] - totals[0]) - float(scores[b, 1] - scores[b, 0])) < 1e-3


def test_single_token_fast_path_matches_summed_log_probs(tmp_path, tokenizer, tiny_llama):
    task = _task(tmp_path, PAIR_YAML)
    batch, _ = _batch(tokenizer, task, EXAMPLES, "causal", label_tokens="first")
    fast = prompt_ft.candidate_scores(tiny_llama, batch, "causal")
    slow = prompt_ft.summed_logprobs(tiny_llama, batch, "causal")
    torch.testing.assert_close(F.log_softmax(fast, -1), F.log_softmax(slow, -1), atol=1e-5, rtol=1e-5)


def test_masked_lm_rejects_summing_multi_token_words(tmp_path, mlm_tokenizer):
    from posttrain.errors import ConfigError

    task = _task(tmp_path, PAIR_YAML.replace('"1": "Yes"', '"1": "Bonjour"'))
    assert len(mlm_tokenizer(" Bonjour", add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ConfigError, match="label_tokens=all: masked LMs score one <mask> token"):
        _batch(mlm_tokenizer, task, EXAMPLES, "masked", label_tokens="all")


def test_masked_lm_truncation_keeps_the_mask(tmp_path, mlm_tokenizer):
    task = _task(tmp_path, PAIR_YAML)
    long = {"text_a": "the sea is wide " * 30, "text_b": "good morning " * 30, "label": "1", "idx": 0}
    enc = prompt_ft.encode_example(mlm_tokenizer, task, long, kind="masked", form="template", max_length=40,
                                   label_tokens="first", causal_scoring="slot")
    assert enc.truncated and len(enc.input_ids) == 40
    assert enc.input_ids[enc.position] == mlm_tokenizer.mask_token_id


# ------------------------------------------------------------------------------------------ losses


def test_regression_loss_is_the_kl_to_the_soft_target(tmp_path, tokenizer, tiny_llama):
    task = _task(tmp_path, STS_YAML)
    examples = [{"text_a": "the sea", "text_b": "the sea is wide", "label": 3.5, "idx": 0},
                {"text_a": "good morning", "text_b": "write a poem", "label": 0.0, "idx": 1}]
    batch, _ = _batch(tokenizer, task, examples, "causal")
    torch.testing.assert_close(batch["soft_target"], torch.tensor([[0.3, 0.7], [1.0, 0.0]]))
    scores = prompt_ft.candidate_scores(tiny_llama, batch, "causal")
    losses = prompt_ft.example_losses(scores, batch, regression=True)
    p = scores.softmax(-1)
    want = torch.stack([0.3 * torch.log(0.3 / p[0, 0]) + 0.7 * torch.log(0.7 / p[0, 1]), -torch.log(p[1, 0])])
    torch.testing.assert_close(losses, want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture
def toy_task(task_file):  # noqa: F811  (the separable toy sentiment task of test_classification)
    return task_file


@pytest.mark.parametrize("objective", ["verbalizer", "classifier"])
def test_objectives_train_end_to_end(tmp_path, tiny_model_dir, toy_task, objective):
    from posttrain.engine import train

    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={toy_task}", "task.train=files:train",
        "task.eval=files:dev", "task.test=files:test", "data.max_length=32", "train.per_device_batch_size=8",
        "train.max_steps=12", "train.warmup_ratio=0", "train.progress=false", "train.eval_steps=12",
        "train.eval_on_start=true", "task.form=template", f"task.objective={objective}", "adapter.type=full",
        "train.learning_rate=1e-2", f"train.output_dir={tmp_path / 'run'}",
    ])
    final = train(cfg)
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["task"]["objective"] == objective
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_accuracy" in r]
    assert evals[0]["eval_output_loss"] > final["eval_output_loss"] + 0.05  # the label loss went down
    assert final["test_accuracy"] == 1.0 and final["test_examples"] == 8  # the toy task is separable


def test_masked_lm_trains_with_the_verbalizer_objective(tmp_path, mlm_tokenizer, toy_task):
    from posttrain.engine import train

    model = tiny_roberta(len(mlm_tokenizer)).train()
    cfg = load_config(None, [
        f"task.name={toy_task}", "task.train=files:train", "task.eval=files:dev", "task.test=files:test",
        "data.max_length=32", "train.per_device_batch_size=8", "train.max_steps=30", "train.warmup_ratio=0",
        "train.progress=false", "train.eval_steps=30", "task.form=template", "task.objective=verbalizer",
        "task.label_tokens=first", "adapter.type=full", "train.learning_rate=3e-3", "train.eval_on_start=true",
        f"train.output_dir={tmp_path / 'run'}",
    ])
    final = train(cfg, model=model, tokenizer=mlm_tokenizer)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if "eval_output_loss" in r)
    assert start["eval_output_loss"] > final["eval_output_loss"] + 0.2  # chance level ~0.69 -> well below
    assert final["test_accuracy"] >= 0.75


@pytest.mark.parametrize("objective", ["verbalizer", "classifier"])
def test_scorer_loss_equals_the_loss_pass_over_the_eval_dataset(tiny_model_dir, toy_task, objective):
    """Evaluation reads the loss from the scorer's pass (sorted by length, its own batches): it must be the mean
    of the training loss over the eval dataset, batched any other way."""
    from posttrain.engine import objective_model_config
    from posttrain.models import load_model_and_tokenizer
    from posttrain.run_data import prepare_data

    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={toy_task}", "task.train=files:train",
        "task.eval=files:train", "task.test=", "data.max_length=32", "train.per_device_batch_size=4",
        "task.form=template",
        f"task.objective={objective}", "adapter.type=full",
    ])
    model_cfg, num_labels = objective_model_config(cfg)
    model, tokenizer = load_model_and_tokenizer(model_cfg, num_labels=num_labels)
    data = prepare_data(cfg, tokenizer, model)
    rows = list(data.eval)
    with torch.no_grad():
        model.eval()
        losses = torch.cat([data.example_loss(model, data.collator(rows[i:i + 3])) for i in range(0, len(rows), 3)])
    _, per_row = data.eval_scorer.scores_and_losses(model)
    assert torch.allclose(per_row, losses.float(), atol=1e-5)  # each row's own loss, in dataset order
    metrics = data.eval_scorer(model)
    assert metrics["output_tokens"] == len(rows) == 32
    assert metrics["output_loss"] == pytest.approx(losses.double().mean().item(), abs=1e-6)
