"""benchmarks/fewshot_experiment.py: the commands it runs, in which order, what a rerun skips, and its table.

The posttrain commands are replaced by a fake that writes the files a real run leaves (final metrics, stage
markers, weights), so the driver's own logic is tested in milliseconds; the commands themselves are tested in their
modules' tests.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def experiment(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("fewshot_experiment", ROOT / "benchmarks" / "fewshot_experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)  # main() changes directory; monkeypatch restores the original afterwards
    calls = []

    def fake_run(argv, log_path):
        calls.append(argv)
        opts = dict(a.split("=", 1) for a in argv if "=" in a)
        seed = int(opts.get("train.seed", opts.get("seed", 0)))
        score = {"prompt_ft_hard": 0.80, "cls": 0.50, "prompt_ft_soft": 0.81, "tapt": 0.84, "self_training": 0.82}
        if argv[0] in ("train", "self-train"):
            out = Path(opts.get("train.output_dir") or opts["output_dir"])
            method = out.parts[-3]
            (out / "final").mkdir(parents=True)
            metrics = {"test_accuracy": score[method] + seed / 1000, "best_eval_accuracy": 0.75}
            (out / "final_metrics.json").write_text(json.dumps(metrics))
        elif argv[0] == "pcp":
            out = Path(opts["output_dir"])
            (out / "stage5_final" / "final").mkdir(parents=True)
            (out / "stage5_final" / "final_metrics.json").write_text(json.dumps({"test_accuracy": 0.9 + seed / 1000}))
            (out / "stage5.done.json").write_text("{}")
        elif argv[0] == "tasks":
            out = Path(argv[argv.index("--out") + 1])
            out.parent.mkdir(parents=True)
            out.write_text(json.dumps({"metrics": {"accuracy": 0.6, "examples": 200}}))
        elif argv[0] == "tapt":
            out = Path(opts["output_dir"])
            (out / "stage4_cpt" / "best").mkdir(parents=True)
            (out / "stage4.done.json").write_text("{}")

    monkeypatch.setattr(module, "run", fake_run)
    monkeypatch.setattr(module, "LEDGER", tmp_path / "ledger.jsonl")  # never the repository's ledger
    monkeypatch.setattr(module, "majority_metrics", lambda args, task_ref: {"accuracy": 0.5, "examples": 200})
    return module, calls, tmp_path / "out"


def test_one_seed_runs_every_method_in_order_with_the_teacher_and_cpt_it_needs(experiment):
    module, calls, out = experiment
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13"])
    assert [c[0] for c in calls] == ["tasks", "train", "train", "train", "pcp", "tapt", "train", "self-train"]
    assert calls[0][:2] == ["tasks", "eval"] and "task.max_test_examples=200" in calls[0]
    calls.pop(0)
    recipes = [c[1] for c in calls if c[0] == "train"]
    assert recipes[:3] == [module.RECIPES[m] for m in ("prompt_ft_hard", "cls", "prompt_ft_soft")]
    pcp = dict(a.split("=", 1) for a in calls[3] if "=" in a)
    assert pcp["teacher_run"] == str(out / "prompt_ft_hard" / "SST-2" / "seed13")
    assert calls[4][1:3] == ["--stages", "3-4"]
    assert f"model.name_or_path={out / 'tapt' / 'SST-2' / 'cpt' / 'stage4_cpt' / 'best'}" in calls[5]
    for call in calls:  # one budget for every run on the task
        if call[0] in ("train", "self-train"):
            assert {"train.max_steps=16", "train.learning_rate=5e-05", "task.seed=13", "train.seed=13"} <= set(call)
    # weights are gone once nothing needs them, the metrics stay
    assert not list(out.glob("*/SST-2/seed13/final")) and not (out / "pcp/SST-2/seed13/stage5_final/final").exists()
    assert not (out / "tapt/SST-2/cpt/stage4_cpt/best").exists()
    assert len(list(out.glob("*/SST-2/seed13/**/final_metrics.json"))) == 6


def test_rerun_skips_finished_runs_and_remakes_cpt_only_for_a_tapt_run_that_still_trains(experiment):
    module, calls, out = experiment
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13"])
    calls.clear()
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13"])
    assert calls == []  # everything finished: no command, not even TAPT's CPT (its weights were dropped)
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "21"])
    assert [c[0] for c in calls] == ["train", "train", "train", "pcp", "tapt", "train", "self-train"]  # no zero-shot
    assert calls[4][1:5] == ["--stages", "4", "--force", "4"]  # CPT done before: only its weights are remade


def test_a_run_killed_midway_starts_over(experiment):
    module, calls, out = experiment
    partial = out / "cls" / "SST-2" / "seed13"
    (partial / "checkpoints").mkdir(parents=True)
    (partial / "metrics.jsonl").write_text('{"step": 1}\n')
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "--methods", "cls"])
    assert [c[0] for c in calls] == ["train"] and not (partial / "metrics.jsonl").exists()


def test_report_table_is_mean_and_population_std_over_finished_seeds(experiment):
    module, calls, out = experiment
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "21", "--methods", "zero_shot",
                 "prompt_ft_hard", "pcp"])
    report = json.loads((out / "report.json").read_text())
    hard = next(r for r in report["rows"] if r["method"] == "prompt_ft_hard")
    assert hard["test"] == pytest.approx([81.3, 82.1]) and hard["mean"] == pytest.approx(81.7)
    assert hard["std"] == pytest.approx(0.4)  # population std: |81.3 - 82.1| / 2
    table = (out / "report.md").read_text()
    assert "| prompt_ft_hard | 81.7 ± 0.4 | 81.7 |" in table and "| pcp | 91.7 ± 0.4 | 91.7 |" in table
    assert "| zero_shot | 60.0 | 60.0 |" in table  # one untrained run per task: no std
    assert "| zero_shot | SST-2 |" not in table  # nor a per-seed row
    assert (out / "report.png").stat().st_size > 0
    assert "| prompt_ft_hard | SST-2 | 81.3 (75.0) | 82.1 (75.0) |" in table
    assert "| pcp | +10.0 (2/0/0) |" in table  # paired with prompt_ft_hard on the same seeds
    # a missing middle seed keeps the per-seed columns aligned (an empty ledger: the file does not come back)
    (out / "pcp" / "SST-2" / "seed13" / "stage5_final" / "final_metrics.json").unlink()
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "21", "--methods", "prompt_ft_hard", "pcp",
                 "--report-only", "--ledger", str(out.parent / "empty.jsonl")])
    table = (out / "report.md").read_text()
    assert "| pcp | SST-2 | - | 92.1 (nan) |" in table and "| pcp | +10.0 (1/0/0) |" in table
    # a seed that has not finished is counted, not hidden
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "21", "42", "--methods", "cls",
                 "--report-only"])
    assert "| cls | - | - |" in (out / "report.md").read_text()


def test_an_invocation_drops_only_the_weights_of_its_own_methods(experiment):
    """A zero-shot-only pass while another invocation trains must not delete that one's teacher or CPT weights."""
    module, calls, out = experiment
    teacher = out / "prompt_ft_hard" / "SST-2" / "seed13"
    cpt_best = out / "tapt" / "SST-2" / "cpt" / "stage4_cpt" / "best"
    for folder in (teacher / "final", cpt_best):
        folder.mkdir(parents=True)
    (teacher / "final_metrics.json").write_text("{}")
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "--methods", "zero_shot"])
    assert [c[0] for c in calls] == ["tasks"]
    assert (teacher / "final").is_dir() and cpt_best.is_dir()
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "--methods", "prompt_ft_hard", "pcp"])
    assert not (teacher / "final").exists()  # PCP has now read its teacher



def test_the_ledger_brings_finished_runs_back_into_a_checkout_without_runs(experiment):
    module, calls, out = experiment
    argv = ["--out", str(out), "--tasks", "SST-2", "--seeds", "13"]
    module.main(argv)
    before = json.loads((out / "report.json").read_text())["rows"]
    ledger = [json.loads(line)["file"] for line in (out.parent / "ledger.jsonl").read_text().splitlines()]
    assert "pcp/SST-2/seed13/stage5.done.json" in ledger and "zero_shot/SST-2/eval.json" in ledger
    assert not [f for f in ledger if "/final/" in f or not f.endswith(tuple(module.RESULT_FILES))]
    shutil.rmtree(out)
    calls.clear()
    module.main(argv)
    assert calls == []  # nothing trains again, not even TAPT's CPT or PCP's teacher
    assert json.loads((out / "report.json").read_text())["rows"] == before


def test_a_teacher_restored_without_weights_is_retrained_only_while_pcp_needs_it(experiment):
    module, calls, out = experiment
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "--methods", "prompt_ft_hard"])
    shutil.rmtree(out)
    calls.clear()
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "--methods", "prompt_ft_hard", "pcp"])
    assert [c[0] for c in calls] == ["train", "pcp"]
    pcp = dict(a.split("=", 1) for a in calls[1] if "=" in a)
    assert (Path(pcp["teacher_run"]) / "final_metrics.json").is_file()


def test_majority_row_is_in_the_table_and_the_ledger(experiment):
    module, calls, out = experiment
    module.main(["--out", str(out), "--tasks", "SST-2", "--seeds", "13", "--methods", "majority", "prompt_ft_hard"])
    assert [c[0] for c in calls] == ["train"]  # the majority row runs no command
    assert "| majority | 50.0 | 50.0 |" in (out / "report.md").read_text()
    assert "majority/SST-2/eval.json" in (out.parent / "ledger.jsonl").read_text()


@pytest.mark.skipif(not (ROOT / ".." / "shared" / "data" / "lm_bff_kshot").is_dir(), reason="../shared/data absent")
def test_majority_metrics_on_real_test_subsets():
    """Always the most frequent label: accuracy = its share; F1 of the positive class = 2p / (1 + p)."""
    spec = importlib.util.spec_from_file_location("fewshot_experiment_real", ROOT / "benchmarks" / "fewshot_experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.main.__globals__["argparse"].Namespace(steps=16, learning_rate=5e-5, max_test=200)
    mrpc = module.majority_metrics(args, "configs/tasks/mrpc_causal.yaml")
    assert mrpc["examples"] == 200 and mrpc["label"] == "1"
    p = mrpc["accuracy"]
    assert p > 0.5 and mrpc["f1"] == pytest.approx(2 * p / (1 + p))
    sst2 = module.majority_metrics(args, "SST-2")
    assert sst2["examples"] == 200 and 0.5 <= sst2["accuracy"] < 0.6
