"""posttrain judge's annotations.json in AlpacaEval's format: the alpaca_eval package loads it and computes the same
win rate as posttrain; the file's fields, the raw judge answers, and the reader's errors."""

from __future__ import annotations

import json
import random

import pytest

from posttrain.errors import DataError
from posttrain.cli import judge as judge_cli
from posttrain.evaluation import alpaca_package
from posttrain.evaluation.alpaca_annotations import (
    build_annotations, evaluation_style, package_win_rate, posttrain_win_rate, read_annotations,
)
from posttrain.evaluation.judge import evaluate_pairs

needs_package = pytest.mark.skipif(not alpaca_package.available(), reason="alpaca_eval (the alpaca extra) missing")


class SeededJudge:
    """P(first better) from a seeded generator per (instruction, first output); a few exact ties and extremes."""

    unparseable = 0

    def prefer_first(self, triples):
        values = []
        for instruction, first, _ in triples:
            rng = random.Random(f"{instruction}|{first}")
            values.append(rng.choice([0.0, 0.5, 1.0, rng.random(), rng.random()]))
        self.last_raw = [f"p={v:.3f}" for v in values]
        return values


def rows(n, tag):
    return [{"instruction": f"Instruction {i}", "output": f"{tag} answer {i} " * (1 + i % 5), "dataset": "set"}
            for i in range(n)]


def run_cli(tmp_path, monkeypatch, *extra):
    from posttrain.cli import main

    for name, tag, generator in (("mine.json", "model", "IM"), ("refs.json", "reference", "gpt4_1106_preview")):
        (tmp_path / name).write_text(json.dumps([{**r, "generator": generator} for r in rows(40, tag)]))
    monkeypatch.setattr(judge_cli, "build_judge", lambda args, out: (SeededJudge(), "test:seeded"))
    assert main(["judge", str(tmp_path / "mine.json"), "--references", str(tmp_path / "refs.json"), "--out",
                 str(tmp_path / "out"), *extra]) == 0
    return json.loads((tmp_path / "out" / "judge_summary.json").read_text()), tmp_path / "out" / "annotations.json"


@needs_package
def test_alpaca_eval_reads_the_annotations_and_gets_posttrains_win_rate(tmp_path, monkeypatch):
    summary, path = run_cli(tmp_path, monkeypatch)
    utils = alpaca_package.require("alpaca_eval.utils", needed_for="the test")
    winrate = alpaca_package.require("alpaca_eval.metrics.winrate", needed_for="the test")
    frame = utils.load_or_convert_to_dataframe(path)  # the package's own loader
    package = winrate.get_winrate(frame)
    assert package["win_rate"] == pytest.approx(summary["metrics"]["win_rate"], abs=1e-9)
    assert package["standard_error"] == pytest.approx(summary["metrics"]["stderr"], abs=1e-9)
    assert package["n_total"] == summary["metrics"]["n"] == 40
    assert package["n_draws"] == summary["metrics"]["ties"]
    assert package_win_rate(read_annotations(path))["win_rate"] == pytest.approx(package["win_rate"])
    assert summary["style"] == "AlpacaEval 2.0 style" and summary["annotations"] == str(path)


def test_annotation_fields_and_raw_answers(tmp_path, monkeypatch):
    summary, path = run_cli(tmp_path, monkeypatch)
    annotations = read_annotations(path)
    first = annotations[0]
    assert set(first) == {"instruction", "dataset", "output_1", "generator_1", "output_2", "generator_2",
                          "annotator", "preference", "raw_completion"}
    assert (first["generator_1"], first["generator_2"], first["annotator"]) == ("gpt4_1106_preview", "IM",
                                                                                  "test:seeded")
    assert first["output_1"].startswith("reference") and first["output_2"].startswith("model")
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert [a["preference"] for a in annotations] == pytest.approx([1 + v["preference_a"] for v in verdicts])
    assert first["raw_completion"] == {"output_2_shown_first": f"p={verdicts[0]['p_a_first']:.3f}",
                                       "output_1_shown_first": f"p={verdicts[0]['p_b_first']:.3f}"}
    assert posttrain_win_rate(annotations) == pytest.approx(summary["metrics"]["win_rate"])

    judge = SeededJudge()
    verdicts, _ = evaluate_pairs(judge, rows(3, "model"), rows(3, "reference"), swap=False)
    one_order = build_annotations(verdicts, rows(3, "model"), rows(3, "reference"), model="m", reference="r",
                                  annotator="j")
    assert list(one_order[0]["raw_completion"]) == ["output_2_shown_first"]


def test_evaluation_style_from_the_reference_name():
    assert evaluation_style("text_davinci_003") == "AlpacaEval 1.0 style"
    assert evaluation_style("gpt4_1106_preview") == "AlpacaEval 2.0 style"
    assert evaluation_style("my_baseline") == "custom reference"


def test_reader_errors_name_file_row_and_field(tmp_path):
    good = {"instruction": "i", "output_1": "a", "output_2": "b", "generator_1": "r", "generator_2": "m",
            "preference": 1.25}
    cases = [([], "expected a non-empty JSON list"), ([3], "row 0: expected an object, got int"),
             ([{k: v for k, v in good.items() if k != "generator_2"}], "row 0: missing field 'generator_2'"),
             ([good, {**good, "output_1": 5}], "row 1: field 'output_1' must be a string"),
             ([{**good, "preference": 2.5}], r"row 0: field 'preference' must be a number in \[1, 2\]"),
             ([{**good, "preference": True}], "row 0: field 'preference' must be a number")]
    for number, (content, message) in enumerate(cases):
        path = tmp_path / f"a{number}.json"
        path.write_text(json.dumps(content))
        with pytest.raises(DataError, match=f"^{path}: {message}"):
            read_annotations(path)
    path = tmp_path / "ok.json"
    path.write_text(json.dumps([good, {**good, "preference": None}, {**good, "preference": 0}]))
    assert posttrain_win_rate(read_annotations(path)) == pytest.approx(100 * (0.25 + 0.5) / 2)
