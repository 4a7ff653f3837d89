"""methods/objectives.py: label predictions (argmax; STS-B-style regression lb + p(high)(ub - lb)), LabelScorer
(log-probabilities per row in dataset order whatever the batching, output_loss = mean of the per-row losses,
predictions = argmax) and describe."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from posttrain.config import load_config
from posttrain.methods import prompt_ft
from posttrain.methods.objectives import LabelScorer, describe, label_predictions
from posttrain.tasks import load_task_file

TASK_YAML = """
name: toy-three
kind: single
labels: [a, b, c]
verbalizer: {a: wide, b: sea, c: blue}
template: "{text_a} It was {mask} ."
text_to_text: "sentence: {text_a}"
metrics: [accuracy]
data: {}
"""

EXAMPLES = [{"text_a": t, "text_b": None, "label": lab, "idx": i} for i, (t, lab) in enumerate([
    ("the sea", "a"), ("write a poem about the sea and the lazy dog", "b"), ("good morning", "c"),
    ("what is the capital of France", "a"), ("the quick brown fox jumps over the lazy dog", "c")])]


@pytest.fixture
def task(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(TASK_YAML)
    return load_task_file(path)


def test_label_predictions_are_the_argmax_labels():
    task = SimpleNamespace(labels=["neg", "neutral", "pos"], regression=None)
    logp = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [-5.0, -4.0, -3.0], [0.0, 0.0, 9.0]])
    assert label_predictions(task, logp) == ["neutral", "neg", "pos", "pos"]


def test_label_predictions_regression_is_lb_plus_p_high_times_range():
    task = SimpleNamespace(labels=["0", "1"], regression=SimpleNamespace(lb=1.0, ub=5.0))
    scores = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [2.0, -1.0]])
    # softmax p(high) by hand: 1/2, 3/4, e^-1 / (e^2 + e^-1) = 1 / (1 + e^3)
    p_high = [0.5, 0.75, 1.0 / (1.0 + math.e ** 3)]
    want = [1.0 + p * 4.0 for p in p_high]
    got = label_predictions(task, scores)
    assert got == pytest.approx(want, abs=1e-6)
    # shifting both scores by a constant changes nothing (a softmax, not raw scores)
    assert label_predictions(task, scores + 7.0) == pytest.approx(want, abs=1e-5)


def _scorer(task, tokenizer, batch_size, with_loss=True):
    rows, _ = prompt_ft.build_rows(tokenizer, task, EXAMPLES, kind="causal", form="template", max_length=64,
                                   label_tokens="all", causal_scoring="slot", source="test")
    gold = [ex["label"] for ex in EXAMPLES]
    collate = prompt_ft.PromptCollator(tokenizer.pad_token_id)
    scores = lambda m, batch: prompt_ft.candidate_scores(m, batch, "causal")
    loss_of = (lambda s, batch: prompt_ft.example_losses(s, batch, False)) if with_loss else None
    return LabelScorer(task, rows, gold, batch_size, collate, scores, loss_of), rows, collate


def _one_by_one(model, rows, collate):
    """Each row scored alone (no padding, no sorting): the reference for the batched, length-sorted pass."""
    out, losses = [], []
    with torch.no_grad():
        for row in rows:
            batch = collate([row])
            s = prompt_ft.candidate_scores(model, batch, "causal")
            out.append(torch.log_softmax(s.float(), -1)[0])
            losses.append(prompt_ft.example_losses(s, batch, False)[0])
    return torch.stack(out), torch.stack(losses)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_label_scorer_rows_are_per_example_log_probabilities_in_dataset_order(task, tokenizer, tiny_llama,
                                                                               batch_size):
    scorer, rows, collate = _scorer(task, tokenizer, batch_size)
    assert len(scorer) == len(EXAMPLES)
    tiny_llama.train()  # the scorer evaluates in eval mode and restores the mode afterwards
    logp, losses = scorer.scores_and_losses(tiny_llama)
    assert tiny_llama.training
    assert logp.shape == (5, 3)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(5), atol=1e-5, rtol=0)
    want_logp, want_losses = _one_by_one(tiny_llama.eval(), rows, collate)
    torch.testing.assert_close(logp, want_logp, atol=1e-5, rtol=1e-5)
    # cross-entropy of the gold label: -log p(gold)
    gold_index = torch.tensor([task.labels.index(ex["label"]) for ex in EXAMPLES])
    torch.testing.assert_close(losses, -want_logp[torch.arange(5), gold_index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses, want_losses.float(), atol=1e-5, rtol=1e-5)


def test_label_scorer_metrics_loss_and_predictions(task, tokenizer, tiny_llama):
    scorer, rows, collate = _scorer(task, tokenizer, 2)
    want_logp, want_losses = _one_by_one(tiny_llama, rows, collate)
    predicted = [task.labels[int(i)] for i in want_logp.argmax(-1)]
    assert scorer.predict(tiny_llama) == predicted
    metrics = scorer(tiny_llama)
    assert metrics["output_loss"] == pytest.approx(want_losses.double().mean().item(), abs=1e-6)
    assert metrics["output_tokens"] == 5 and metrics["examples"] == 5
    hits = sum(p == ex["label"] for p, ex in zip(predicted, EXAMPLES))
    assert metrics["accuracy"] == pytest.approx(hits / 5)
    # without loss_of: no loss in the metrics
    plain, _, _ = _scorer(task, tokenizer, 2, with_loss=False)
    assert plain.scores_and_losses(tiny_llama)[1] is None
    assert "output_loss" not in plain(tiny_llama)


def test_describe_names_the_task_choices():
    cfg = load_config(None, ["task.objective=verbalizer", "task.form=template", "task.label_tokens=first",
                             "task.causal_scoring=filled", "task.prompt_style=hard"])
    assert describe(cfg) == {"objective": "verbalizer", "form": "template", "label_tokens": "first",
                             "causal_scoring": "filled", "prompt_style": "hard"}
