"""evaluation/loss_eval.py and `posttrain loss-eval`: output-token NLL equals a hand computation with full logits,
one example at a time (no padding, no fused head), and the summary feeds im-report."""

import json

import pytest
import torch

from posttrain.cli import main
from posttrain.data.chat import render_example, resolve_template
from posttrain.data.chat import OUTPUT
from posttrain.evaluation.loss_eval import output_loss

ROWS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "Write a poem about the sea."},
                  {"role": "assistant", "content": "The sea is wide and blue."},
                  {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Blue and wide."}]},
    {"messages": [{"role": "user", "content": "Translate to French: good morning."}, {"role": "assistant", "content": "Bonjour."}]},
]


def by_hand(model, tokenizer, rows):
    """Per example: NLL of every token whose segment is OUTPUT or the end-of-turn after it, from full logits."""
    from posttrain.config import LossConfig
    from posttrain.data.instruction_loss import labels_and_weights

    template = resolve_template(tokenizer, "tokenizer")
    sums, counts = [], []
    for row in rows:
        rendered = render_example(tokenizer, row, template)
        ids = torch.tensor(rendered.input_ids)[None]
        _, weights = labels_and_weights(rendered.input_ids, rendered.segments, LossConfig(mode="output_only"))
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        trained = [t for t in range(1, ids.shape[1]) if weights[t] > 0]
        assert trained and all(rendered.segments[t] == OUTPUT or rendered.segments[t - 1] == OUTPUT for t in trained)
        sums.append(sum(-logp[t - 1, ids[0, t]].item() for t in trained))
        counts.append(len(trained))
    return sums, counts


def test_output_loss_equals_hand_computation(tokenizer, tiny_llama):
    template = resolve_template(tokenizer, "tokenizer")
    got = output_loss(tiny_llama, tokenizer, ROWS, template, batch_size=2, progress=False)
    sums, counts = by_hand(tiny_llama, tokenizer, ROWS)
    assert got["tokens"] == sum(counts) and got["examples"] == 3
    assert got["token_mean"] == pytest.approx(sum(sums) / sum(counts), rel=1e-5)
    assert got["example_mean"] == pytest.approx(sum(s / c for s, c in zip(sums, counts)) / 3, rel=1e-5)


def test_cli_writes_summary_with_gap(tmp_path, tiny_model_dir, capsys):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    test.write_text(json.dumps(ROWS[2]) + "\n")
    out = tmp_path / "le.json"
    assert main(["loss-eval", "--model", str(tiny_model_dir), "--train", str(train), "--test", str(test),
                 "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    m = summary["metrics"]
    assert summary["kind"] == "loss_eval" and summary["model"] == str(tiny_model_dir)
    assert m["gap"] == pytest.approx(m["test_output_loss"] - m["train_output_loss"])
    assert main(["loss-eval", "--model", str(tiny_model_dir), "--data", "oops"]) == 2
    assert "--data 'oops': expected NAME=FILE" in capsys.readouterr().err
