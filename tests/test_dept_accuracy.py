"""benchmarks/dept_accuracy.py: the ledger that lets the accuracy check span sessions, and the table built from it.

``posttrain`` child processes are replaced by a fake that writes what a real run leaves (final metrics, run
metadata), so the driver's logic is tested in milliseconds; the training itself is tested in the method modules.
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--steps", "5", "--batch-size", "2", "--seeds", "1", "2", "--max-test", "10"]


@pytest.fixture
def accuracy(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("dept_accuracy", ROOT / "benchmarks" / "dept_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    score = {"sst2_dept": 0.80, "sst2_pt": 0.70, "sst2_lora": 0.90}

    def fake_posttrain(argv, label):
        calls.append(argv)
        if argv[0] == "tasks":
            out = Path(argv[argv.index("--out") + 1])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"metrics": {"accuracy": 0.5, "examples": 10}}))
            return
        opts = dict(a.split("=", 1) for a in argv if "=" in a)
        out, seed = Path(opts["train.output_dir"]), int(opts["train.seed"])
        out.mkdir(parents=True)
        (out / "final_metrics.json").write_text(json.dumps(
            {"test_accuracy": score[Path(argv[1]).stem] + seed / 100, "test_examples": 10, "train_loss": 0.3}))
        (out / "run_meta.json").write_text(json.dumps({"adapter": {"trainable_parameters": 1000}}))

    monkeypatch.setattr(module, "posttrain", fake_posttrain)
    paths = ["--runs", str(tmp_path / "runs"), "--ledger", str(tmp_path / "ledger.jsonl"), "--out", str(tmp_path)]
    return module, calls, paths, tmp_path


def trained(calls):
    return [(Path(c[1]).stem, next(a for a in c if a.startswith("train.seed="))) for c in calls if c[0] == "train"]


def test_runs_seed_major_and_a_rerun_reads_the_ledger_instead_of_training(accuracy):
    module, calls, paths, tmp = accuracy
    module.main([*ARGS, *paths])
    assert calls[0][:2] == ["tasks", "eval"]
    assert trained(calls) == [(m, f"train.seed={s}") for s in (1, 2) for m in ("sst2_dept", "sst2_pt", "sst2_lora")]
    ledger = [json.loads(line) for line in (tmp / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == 7 and ledger[1]["metrics"] == {"test_accuracy": 0.81, "test_examples": 10}
    # the runs folder is gone (a new session's checkout): nothing runs again, the table is the same
    import shutil

    shutil.rmtree(tmp / "runs")
    before = json.loads((tmp / "dept_accuracy.json").read_text())
    calls.clear()
    module.main([*ARGS, *paths])
    assert calls == []
    assert json.loads((tmp / "dept_accuracy.json").read_text())["methods"] == before["methods"]
    row = before["methods"]["sst2_dept"]
    assert row["values"] == {"1": pytest.approx(0.81), "2": pytest.approx(0.82)} and row["n"] == 2
    assert row["mean"] == pytest.approx(0.815) and row["std"] == pytest.approx(0.00707, abs=1e-5)
    assert before["methods"]["zero-shot (untrained)"]["mean"] == 0.5


def test_other_settings_are_other_runs_and_missing_seeds_show_as_dashes(accuracy):
    module, calls, paths, tmp = accuracy
    module.main(["--steps", "5", "--batch-size", "2", "--seeds", "1", "--max-test", "10", *paths])
    calls.clear()
    module.main([*ARGS, "--report-only", *paths])  # seed 2 not run yet: partial table, nothing trained
    assert calls == []
    md = (tmp / "dept_accuracy.md").read_text()
    assert "| sst2_pt | 1,000 | 71.0 | - | 71.0 ± 0.0 (1) |" in md
    module.main([*ARGS[:1], "6", *ARGS[2:], *paths])  # 6 steps: new runs for both seeds; zero-shot is kept
    assert len(trained(calls)) == 6 and all(c[0] == "train" for c in calls)
    calls.clear()
    module.main([*ARGS, "--mixed-precision", "bf16", *paths])  # another precision: other runs too
    assert len(trained(calls)) == 6 and all("train.mixed_precision=bf16" in c for c in calls)


def test_force_reruns_and_the_newest_line_wins(accuracy):
    module, calls, paths, tmp = accuracy
    module.main([*ARGS, *paths])
    calls.clear()
    module.main([*ARGS, "--force", *paths])
    assert len(calls) == 7
    assert len((tmp / "ledger.jsonl").read_text().splitlines()) == 14
