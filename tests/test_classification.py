"""Classification tasks as causal-LM training data (data/classification.py) and rank-classification metrics
(methods/rank_classification.py), end to end through the engine with a user-declared task."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.config import load_config
from posttrain.data.classification import build_classification_dataset, context_and_words, encode_choices
from posttrain.methods.rank_classification import build_task_scorer
from posttrain.tasks import get_task, load_task_file

TASK_YAML = """
name: toy-sentiment
kind: single
labels: [neg, pos]
verbalizer: {neg: wide, pos: sea}  # one token each in the test tokenizer
template: "{text_a} It was {mask} ."
text_to_text: "sentence: {text_a}"
metrics: [accuracy, f1]
positive_label: pos
data:
  files:
    dir: data
    files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}
    format: jsonl
    columns: {text_a: text, label: label}
"""

GOOD = ["the quick brown fox !", "write a poem !", "good morning !", "what is the capital !"]  # the class shows
BAD = ["the lazy dog ?", "summarize the text ?", "translate to french ?", "one sentence please ?"]  # in the last token


@pytest.fixture
def task_file(tmp_path):
    (tmp_path / "data").mkdir()
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    for split, n in (("train", 4), ("dev", 1), ("test", 1)):
        (tmp_path / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * n))
    path = tmp_path / "task.yaml"
    path.write_text(TASK_YAML)
    return path


def test_contexts_for_both_forms(task_file):
    task = load_task_file(task_file)
    example = {"text_a": "a gem", "text_b": None, "label": "pos"}
    assert context_and_words(task, example, "text_to_text") == ("sentence: a gem", ["wide", "sea"])
    assert context_and_words(task, example, "template") == ("a gem It was", ["wide", "sea"])
    sst2 = get_task("SST-2")
    assert context_and_words(sst2, {"text_a": "a gem .", "label": "1"}, "template") == ("a gem . It was",
                                                                                      ["terrible", "great"])


def test_rows_train_only_the_gold_word_and_truncate_the_middle(task_file, tokenizer):
    task = load_task_file(task_file)
    examples = [{"text_a": "write a poem about the sea", "text_b": None, "label": "pos", "idx": 0}]
    data, stats = build_classification_dataset(tokenizer, task, examples, "text_to_text", 64, "all", "x")
    row = data[0]
    word = tokenizer(" sea", add_special_tokens=False)["input_ids"]
    assert row["input_ids"][-len(word):] == word
    assert row["labels"] == [-100] * (len(row["input_ids"]) - len(word)) + word
    assert row["loss_weights"] == [0.0] * (len(row["input_ids"]) - len(word)) + [1.0] * len(word)
    ctx, options, cut = encode_choices(tokenizer, "sentence: write a poem about the sea", ["blue", "sea"], 5, "first")
    full = tokenizer("sentence: write a poem about the sea")["input_ids"]
    assert cut and ctx == full[:1] + full[-3:] and [len(o) for o in options] == [1, 1]  # head 5 // 4 = 1 token


@pytest.mark.parametrize("words", ["wide, pos: sea", "blue, pos: poem"])  # one-token fast path; multi-token
def test_rank_classification_equals_a_brute_force_argmax(task_file, tokenizer, tiny_llama, words):
    task_file.write_text(TASK_YAML.replace("wide, pos: sea", words))
    task = load_task_file(task_file)
    examples = [{"text_a": t, "text_b": None, "label": lab, "idx": i}
                for i, (t, lab) in enumerate([(t, "pos") for t in GOOD] + [(t, "neg") for t in BAD])]
    scorer = build_task_scorer(tokenizer, task, examples, form="template", max_length=64, label_tokens="all",
                               batch_size=3)
    predictions = scorer.predict(tiny_llama)
    expected = []
    for ctx, options in zip(scorer.contexts, scorer.choices):
        totals = []
        for option in options:
            ids = torch.tensor([ctx + option])
            logp = torch.log_softmax(tiny_llama(input_ids=ids).logits[0].double(), -1)
            totals.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(option)))
        expected.append(task.labels[max(range(len(totals)), key=totals.__getitem__)])
    assert predictions == expected
    metrics = scorer(tiny_llama)
    assert metrics["accuracy"] == sum(p == g for p, g in zip(predictions, scorer.gold)) / len(scorer.gold)


@pytest.mark.parametrize("adapter", [["adapter.type=dept", "adapter.num_virtual_tokens=4", "adapter.dept_rank=2",
                                      "adapter.prompt_learning_rate=0.3", "adapter.offset_learning_rate=0.01"],
                                     ["adapter.type=full", "train.learning_rate=1e-2"]])
def test_a_task_trains_and_reports_test_metrics(tmp_path, tiny_model_dir, task_file, adapter):
    from posttrain.engine import train

    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={task_file}", "task.train=files:train",
        "task.eval=files:dev", "task.test=files:test", "data.max_length=32", "train.per_device_batch_size=8",
        "train.max_steps=12", "train.warmup_ratio=0", "train.progress=false", "train.eval_on_start=true",
        "train.eval_steps=12", f"train.output_dir={tmp_path / 'run'}", *adapter,
    ])
    final = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_accuracy" in r]
    assert len(evals) >= 2 and evals[0]["eval_examples"] == 8
    assert evals[0]["eval_output_loss"] > final["eval_output_loss"] + 0.05
    assert 0.0 <= final["test_accuracy"] <= 1.0 and final["test_examples"] == 8
    if "adapter.type=full" in adapter:  # a separable toy task: full fine-tuning learns it outright
        assert final["test_accuracy"] == 1.0 and final["test_f1"] == 1.0


def test_task_config_conflicts(tmp_path):
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="task.name: set either task.name or data.train_file"):
        load_config(None, ["task.name=SST-2", "data.train_file=x.jsonl"])
    with pytest.raises(ConfigError, match="task.test: expected source:split"):
        load_config(None, ["task.name=SST-2", "task.test=test"])
    with pytest.raises(ConfigError, match="loss.mode: classification tasks train on the label word only"):
        load_config(None, ["task.name=SST-2", "loss.mode=all_tokens"])


def test_unlabelled_rows_are_scored_like_labelled_ones(task_file, tokenizer, tiny_llama):
    """Pseudo-labelling (PCP Step 1) scores pool rows without labels: same label scores as with labels."""
    task = load_task_file(task_file)
    rows = [{"text_a": t, "text_b": None, "label": "pos", "idx": i} for i, t in enumerate(GOOD)]
    common = dict(form="template", max_length=32, label_tokens="all")
    labelled = build_task_scorer(tokenizer, task, rows, **common).label_scores(tiny_llama)
    bare = build_task_scorer(tokenizer, task, [{**r, "label": None} for r in rows], **common)
    assert bare.gold == [None] * len(rows)
    torch.testing.assert_close(bare.label_scores(tiny_llama), labelled)
