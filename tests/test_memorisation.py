"""bleu-train: BLEU-4 of outputs on the training prompts against the training targets (IM paper, Table 2)."""

from __future__ import annotations

import json
import math

import pytest
import sacrebleu

from posttrain.cli import main as cli_main
from posttrain.errors import DataError
from posttrain.evaluation.alpaca_format import write_model_outputs
from posttrain.evaluation.generate_set import generate_set, load_prompt_set
from posttrain.evaluation.memorisation import bleu_scores, bleu_train

TRAIN = [
    {"instruction": "Name the largest planet.", "output": "Jupiter is the largest planet in the solar system."},
    {"instruction": "Give a colour of the sky.", "output": "The sky is usually blue on a clear day."},
    {"instruction": "What do cats drink?", "output": "Cats drink water and sometimes a little milk."},
]


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in TRAIN))
    return path


def outputs_file(tmp_path, answers, instructions=None, name="outputs.json"):
    path = tmp_path / name
    instructions = instructions or [row["instruction"] for row in TRAIN]
    write_model_outputs(path, [{"instruction": i, "output": a, "generator": "m", "dataset": "train"}
                               for i, a in zip(instructions, answers)])
    return path


def run_cli(*argv) -> int:
    """The real ``posttrain`` entry point (one 'error:' line and status 2 on user errors)."""
    return cli_main([str(a) for a in argv])


def test_outputs_equal_to_the_targets_score_100(train_file, tmp_path):
    outputs = outputs_file(tmp_path, [row["output"] for row in TRAIN])
    summary = bleu_train(outputs, train_file)
    assert summary["metrics"]["bleu"] == pytest.approx(100.0)
    assert summary["metrics"]["sentence_bleu_mean"] == pytest.approx(100.0)
    assert summary["kind"] == "bleu_train" and summary["model"] == "m" and summary["metrics"]["n"] == 3
    assert json.loads((tmp_path / "outputs.bleu.json").read_text()) == summary


def test_hand_checked_corpus_bleu():
    hypotheses = ["the cat sat on the mat", "a dog runs"]
    references = ["the cat sat on a mat", "a dog runs fast"]
    # clipped n-gram matches / hypothesis n-grams over both sentences, n = 1..4: 8/9, 5/7, 3/5, 1/3;
    # hypothesis length 9 < reference length 10, so the brevity penalty is exp(1 - 10/9)
    expected = 100 * math.exp(1 - 10 / 9) * (8 / 9 * 5 / 7 * 3 / 5 * 1 / 3) ** 0.25
    scores = bleu_scores(hypotheses, references)
    assert scores["bleu"] == pytest.approx(expected, abs=1e-9)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-12)
    sentence_mean = (sacrebleu.sentence_bleu(hypotheses[0], [references[0]]).score
                     + sacrebleu.sentence_bleu(hypotheses[1], [references[1]]).score) / 2
    assert scores["sentence_bleu_mean"] == pytest.approx(sentence_mean)
    assert scores["avg_output_words"] == 4.5 and scores["avg_reference_words"] == 5.0


def test_row_whose_instruction_differs_is_named(train_file, tmp_path):
    instructions = [TRAIN[0]["instruction"], "Something else entirely.", TRAIN[2]["instruction"]]
    outputs = outputs_file(tmp_path, ["a", "b", "c"], instructions)
    with pytest.raises(DataError) as err:
        bleu_train(outputs, train_file)
    text = str(err.value)
    assert len(text.splitlines()) == 1
    assert text.startswith(f"{outputs}: row 1: instruction 'Something else entirely.' does not match {train_file}:2")


def test_more_outputs_than_training_rows_is_refused(train_file, tmp_path):
    outputs = outputs_file(tmp_path, ["a"] * 4, [row["instruction"] for row in TRAIN] + ["extra"])
    with pytest.raises(DataError, match=r"4 outputs but .*train.jsonl has only 3 training rows"):
        bleu_train(outputs, train_file)


def test_first_rows_of_a_limited_run_pair_with_the_first_training_rows(train_file, tmp_path):
    outputs = outputs_file(tmp_path, [TRAIN[0]["output"]], [TRAIN[0]["instruction"]])
    assert bleu_train(outputs, train_file)["metrics"]["n"] == 1


def test_generate_set_on_the_training_file_then_bleu(train_file, tmp_path, tokenizer, tiny_llama):
    out = tmp_path / "gen.json"
    generate_set(tiny_llama, tokenizer, load_prompt_set(train_file), out, model_spec="tiny", generator="tiny-it",
                 max_new_tokens=4, progress=False)
    summary = bleu_train(out, train_file, tmp_path / "bleu.json")
    assert summary["model"] == "tiny-it" and summary["metrics"]["n"] == 3
    assert 0.0 <= summary["metrics"]["bleu"] < 100.0
    assert summary["generation_settings"]["temperature"] == 0.0
    assert json.loads((tmp_path / "bleu.json").read_text())["kind"] == "bleu_train"


def test_cli_bleu_train(train_file, tmp_path, capsys):
    outputs = outputs_file(tmp_path, [row["output"] for row in TRAIN])
    assert run_cli("bleu-train", "--outputs", outputs, "--references", train_file) == 0
    assert capsys.readouterr().out.startswith("BLEU-4 100.00 (corpus, 13a), mean sentence BLEU 100.00, n=3")
    bad = outputs_file(tmp_path, ["x"], ["Not in the training file"], name="bad.json")
    assert run_cli("bleu-train", "--outputs", bad, "--references", train_file) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: row 0: instruction") and err.count("\n") == 1
