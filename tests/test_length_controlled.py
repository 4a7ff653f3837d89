"""AlpacaEval 2.0's length-controlled win rate through alpaca_eval's own GLM, on synthetic annotations, and its
place in `posttrain judge` (summary, judge.md, the difficulty table, the fallback without the package)."""

from __future__ import annotations

import json
import math
import random

import pytest

from posttrain.errors import DataError
from posttrain.cli import judge as judge_cli
from posttrain.evaluation import alpaca_package
from posttrain.evaluation.length_controlled import (
    LENGTH_ONLY, WITH_DIFFICULTY, difficulties_for, length_controlled_win_rate, read_difficulty_table,
)

needs_package = pytest.mark.skipif(not alpaca_package.available(), reason="alpaca_eval (the alpaca extra) missing")
BALANCED_TOLERANCE = 3.0  # points: LC vs raw when lengths carry no signal (n = 200; spread seen: < 2 points)


def annotation(i, len_reference, len_model, preference):
    return {"instruction": f"instruction {i}", "output_1": "r" * len_reference, "output_2": "m" * len_model,
            "generator_1": "reference", "generator_2": "model", "preference": preference}


def length_biased(n, seed):
    """A judge that prefers the longer answer whatever it says: P(model) = sigmoid((len_model - len_ref) / 50);
    the model answers longer than the reference 80% of the time."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        len_model = rng.randint(200, 600) if rng.random() < 0.8 else rng.randint(20, 150)
        len_reference = rng.randint(100, 300)
        rows.append(annotation(i, len_reference, len_model, 1 + 1 / (1 + math.exp(-(len_model - len_reference) / 50))))
    return rows


def balanced(n, seed, quality):
    """Both lengths from one distribution, independent of the verdict, whose mean is ``quality``."""
    rng = random.Random(seed)
    return [annotation(i, rng.randint(50, 400), rng.randint(50, 400), 1 + min(1, max(0, rng.gauss(quality, 0.25))))
            for i in range(n)]


@needs_package
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_length_bias_is_removed_by_lc_but_not_by_the_raw_win_rate(seed):
    result = length_controlled_win_rate(length_biased(200, seed))
    assert result["alpaca_eval_win_rate"] > 70  # the raw win rate rewards length
    assert abs(result["lc_win_rate"] - 50) < 5
    assert abs(result["lc_win_rate"] - 50) < abs(result["alpaca_eval_win_rate"] - 50) - 15
    assert result["lc_form"] == LENGTH_ONLY and "length and baseline terms only" in result["lc_label"]


@needs_package
@pytest.mark.parametrize("quality,seed", [(0.3, 0), (0.5, 1), (0.7, 2), (0.7, 3)])
def test_balanced_lengths_lc_agrees_with_raw(quality, seed):
    rows = balanced(200, seed, quality)
    result = length_controlled_win_rate(rows)
    raw = 100 * sum(r["preference"] - 1 for r in rows) / len(rows)
    assert result["alpaca_eval_win_rate"] == pytest.approx(raw)
    assert abs(result["lc_win_rate"] - raw) < BALANCED_TOLERANCE
    assert not result["lc_extreme_change"]


@needs_package
def test_difficulty_term_changes_the_fit_and_is_labelled():
    rows = balanced(120, 4, 0.6)
    rng = random.Random(5)
    difficulties = [rng.gauss(0, 1) for _ in rows]
    for row, difficulty in zip(rows, difficulties):  # the model loses the hard instructions
        row["preference"] = 1 + (0.9 if difficulty < 0 else 0.2)
    with_term = length_controlled_win_rate(rows, difficulties)
    without = length_controlled_win_rate(rows)
    assert with_term["lc_form"] == WITH_DIFFICULTY and "instruction difficulty" in with_term["lc_label"]
    assert with_term["lc_win_rate"] != pytest.approx(without["lc_win_rate"], abs=0.01)
    with pytest.raises(ValueError, match="3 difficulties for 120 annotations"):
        length_controlled_win_rate(rows, difficulties[:3])


@needs_package
def test_too_few_pairs_and_constant_lengths_are_reported_not_crashed():
    with pytest.raises(ValueError, match="4 annotated pairs; the GLM's 5-fold cross-validation needs >= 5"):
        length_controlled_win_rate(balanced(4, 0, 0.5))
    same = [annotation(i, 10, 10, 1.7) for i in range(20)]
    with pytest.raises(ValueError, match="same length difference"):
        length_controlled_win_rate(same)


def test_difficulty_table_formats_and_errors(tmp_path):
    two_columns = tmp_path / "instruction_difficulty.csv"
    two_columns.write_text(",instruction_difficulty\n0,-1.5\n1,0.25\n2,2\n")
    assert read_difficulty_table(two_columns) == {0: -1.5, 1: 0.25, 2: 2.0}
    gamed = tmp_path / "df_gamed.csv"
    gamed.write_text("model,index,instruction_difficulty,preference\nx,1,0.5,1.2\ny,1,0.9,1.0\nx,0,-1,2\n")
    assert read_difficulty_table(gamed) == {1: 0.5, 0: -1.0}  # the first row of an index counts
    assert difficulties_for([1, 0, 1], {0: -1.0, 1: 0.5}, gamed, "refs.json", ["b", "a", "b"]) == [0.5, -1.0, 0.5]
    with pytest.raises(DataError, match=rf"^{gamed}: no instruction_difficulty for index 7 \(row 7 of refs.json: 'q'\)"):
        difficulties_for([7], {0: 1.0}, gamed, "refs.json", ["q"])
    cases = {"index,a,b\n0,1,2\n": "header .* expected columns 'index' and 'instruction_difficulty'",
             ",d\nzero,1\n": "line 2: field '': 'zero' is not an integer index",
             ",d\n0,nan\n": "line 2: field 'd': 'nan' is not a finite number",
             ",d\n0\n": "line 2: expected 2 fields, got 1", "": "empty file", ",d\n": "no rows after the header"}
    for number, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.csv"
        path.write_text(text)
        with pytest.raises(DataError, match=f"^{path}: {message}"):
            read_difficulty_table(path)
    with pytest.raises(DataError, match="file not found"):
        read_difficulty_table(tmp_path / "missing.csv")


# ---------------------------------------------------------------- the command

class LongerAnswerJudge:
    """Prefers the longer of the two outputs, graded by the length difference (content is ignored)."""

    unparseable = 0

    def prefer_first(self, triples):
        self.last_raw = [{"len_first": len(a), "len_second": len(b)} for _, a, b in triples]
        return [1 / (1 + math.exp(-(len(a) - len(b)) / 50)) for _, a, b in triples]


def write_sets(tmp_path, n=120, seed=0):
    rng = random.Random(seed)
    refs = [{"instruction": f"Question {i}?", "output": "r" * rng.randint(100, 300), "generator": "text_davinci_003"}
            for i in range(n)]
    mine = [{"instruction": r["instruction"], "output": "m" * (rng.randint(200, 600) if rng.random() < 0.8
                                                                  else rng.randint(20, 150)), "generator": "IM"}
            for r in refs]
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    (tmp_path / "mine.json").write_text(json.dumps(list(reversed(mine))))  # pairing is by instruction, not order
    return tmp_path / "mine.json", tmp_path / "refs.json"


def run_judge(monkeypatch, argv):
    from posttrain.cli import main

    monkeypatch.setattr(judge_cli, "build_judge", lambda args, out: (LongerAnswerJudge(), "test:longer-answer"))
    return main(["judge", *map(str, argv)])


@needs_package
def test_cli_reports_lc_next_to_raw(tmp_path, monkeypatch, capsys):
    mine, refs = write_sets(tmp_path)
    out = tmp_path / "out"
    assert run_judge(monkeypatch, [mine, "--references", refs, "--out", out]) == 0
    summary = json.loads((out / "judge_summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["win_rate"] > 70 and abs(metrics["lc_win_rate"] - 50) < 5
    assert metrics["alpaca_eval_win_rate"] == pytest.approx(metrics["win_rate"])
    assert summary["length_controlled"]["form"] == LENGTH_ONLY and summary["style"] == "AlpacaEval 1.0 style"
    md = (out / "judge.md").read_text()
    assert metrics["lc_stderr"] == 0.0  # the length-only GLM predicts the same for every pair
    assert f"| length-controlled win rate of A (%) | {metrics['lc_win_rate']:.2f} " \
           "(AlpacaEval GLM length_controlled_minimal" in md and "Judge: `test:longer-answer`" in md
    assert f"LC win rate {metrics['lc_win_rate']:.2f}" in capsys.readouterr().out

    # with AlpacaEval's difficulty table, indexed by the references' rows
    table = tmp_path / "instruction_difficulty.csv"
    table.write_text(",instruction_difficulty\n" + "".join(f"{i},{(i % 7) / 3 - 1}\n" for i in range(120)))
    assert run_judge(monkeypatch, [mine, "--references", refs, "--out", out, "--instruction-difficulty", table,
                                   "--overwrite"]) == 0
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["length_controlled"]["form"] == WITH_DIFFICULTY and summary["metrics"]["lc_stderr"] > 0
    assert f"{summary['metrics']['lc_win_rate']:.2f} ± {summary['metrics']['lc_stderr']:.2f} (AlpacaEval GLM " \
        "length_controlled_noreg" in (out / "judge.md").read_text()
    assert summary["length_controlled"]["difficulty_table"] == str(table)
    table.write_text(",instruction_difficulty\n0,1.0\n")
    capsys.readouterr()
    assert run_judge(monkeypatch, [mine, "--references", refs, "--out", out, "--instruction-difficulty", table,
                                   "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {table}: no instruction_difficulty for index 119 (row 119 of {refs}") and \
        err.count("\n") == 1


def test_cli_without_the_package_labels_lc_not_computed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(alpaca_package, "available", lambda: False)
    mine, refs = write_sets(tmp_path, n=12)
    out = tmp_path / "out"
    assert run_judge(monkeypatch, [mine, "--references", refs, "--out", out]) == 0
    summary = json.loads((out / "judge_summary.json").read_text())
    assert "lc_win_rate" not in summary["metrics"] and summary["length_controlled"]["form"] is None
    assert summary["length_controlled"]["label"].startswith("not computed: the alpaca_eval package is not installed")
    assert "| length-controlled win rate of A (%) | not computed: the alpaca_eval package" in \
        (out / "judge.md").read_text()
    assert len(json.loads((out / "annotations.json").read_text())) == 12  # annotations need no package
    table = tmp_path / "d.csv"
    table.write_text(",d\n0,1\n")
    capsys.readouterr()
    assert run_judge(monkeypatch, [mine, "--references", refs, "--out", out, "--instruction-difficulty", table,
                                   "--overwrite"]) == 2
    assert capsys.readouterr().err == f"error: --instruction-difficulty {table} needs the alpaca_eval package, " \
        f"which is not installed: {alpaca_package.INSTALL_HINT}\n"
