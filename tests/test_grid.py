"""The few-shot grid runner (pipelines/grid.py): cells, best-dev selection, mean ± std, resume, report, errors."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import yaml

from posttrain.errors import ConfigError, PosttrainError
from posttrain.pipelines.grid import load_grid, run_grid
from posttrain.pipelines.grid_report import cell_state, mean_std, stale_keys
from posttrain.cli.grid import register
from posttrain.pipelines.grid_report import write_report

TASK_YAML = """
name: toy-kshot
kind: single
labels: [neg, pos]
verbalizer: {neg: wide, pos: sea}
template: "{text_a} It was {mask} ."
text_to_text: "sentence: {text_a}"
metrics: [accuracy, f1]
positive_label: pos
data:
  kshot:
    dir: data
    files: {train: "16-{seed}/train.jsonl", dev: "16-{seed}/dev.jsonl", test: test.jsonl}
    format: jsonl
    columns: {text_a: text, label: label}
    seeds: [1, 2]
"""
GOOD = ["the quick brown fox !", "write a poem !", "good morning !", "what is the capital !"]
BAD = ["the lazy dog ?", "summarize the text ?", "translate to french ?", "one sentence please ?"]


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def setup(tmp_path, tiny_model_dir, monkeypatch):
    """A tiny user task with two k-shot seeds, a full-FT and a LoRA recipe on the tiny model; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    for seed in (1, 2):
        _jsonl(tmp_path / "data" / f"16-{seed}" / "train.jsonl", rows)
        _jsonl(tmp_path / "data" / f"16-{seed}" / "dev.jsonl", rows[seed - 1::2])
    _jsonl(tmp_path / "data" / "test.jsonl", rows)
    (tmp_path / "task.yaml").write_text(TASK_YAML)
    base = {"model": {"name_or_path": str(tiny_model_dir)}, "data": {"max_length": 32},
            "train": {"per_device_batch_size": 8, "max_steps": 2, "warmup_ratio": 0, "progress": False,
                      "logging_steps": 1, "save_steps": 0}}
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({**base, "adapter": {"type": "full"}}))
    (tmp_path / "lora.yaml").write_text(yaml.safe_dump({**base, "adapter": {"type": "lora", "lora_r": 2}}))
    return tmp_path


def write_grid(root, **changes):
    grid = {"output_dir": "out", "recipes": {"full": "full.yaml", "lora": {"recipe": "lora.yaml",
                                                                         "axes": {"train.learning_rate": [0.1]}}},
            "tasks": ["task.yaml"], "seeds": [1, 2], "axes": {"train.learning_rate": [0.01, 0.001]}}
    grid.update(changes)
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


class FakeTrain:
    """A train_fn stand-in: dev/test accuracy from a table keyed by (adapter, seed, lr); counts its calls."""

    def __init__(self, table, fail=()):
        self.table, self.fail, self.calls = table, set(fail), []

    def __call__(self, cfg, resume=False):
        key = (cfg.adapter.type, cfg.task.seed, cfg.train.learning_rate)
        self.calls.append((key, resume))
        if key in self.fail:
            raise RuntimeError("boom\nsecond line")
        dev, test = self.table[key]
        return {"eval_accuracy": dev, "test_accuracy": test, "test_f1": test, "trainer": object()}


TABLE = {("full", 1, 0.01): (0.5, 0.60), ("full", 1, 0.001): (0.75, 0.70),   # seed 1: lr 1e-3 wins on dev
         ("full", 2, 0.01): (1.0, 0.90), ("full", 2, 0.001): (1.0, 0.10),    # seed 2: tie -> first in grid order
         ("lora", 1, 0.1): (0.5, 0.55), ("lora", 2, 0.1): (0.5, 0.65)}


def test_cells_enumerate_methods_tasks_seeds_and_axes(setup):
    path = write_grid(setup, task_overrides={"toy-kshot": ["data.max_length=48"]}, overrides=["train.max_steps=3"])
    grid, cells = load_grid(path, ["train.logging_steps=2"])
    assert [(c.method, c.seed, c.axes) for c in cells] == [
        ("full", 1, {"train.learning_rate": 0.01}), ("full", 1, {"train.learning_rate": 0.001}),
        ("full", 2, {"train.learning_rate": 0.01}), ("full", 2, {"train.learning_rate": 0.001}),
        ("lora", 1, {"train.learning_rate": 0.1}), ("lora", 2, {"train.learning_rate": 0.1})]
    c = cells[1]
    assert str(c.run_dir) == "out/full/toy-kshot/seed1/lr0.001" and c.cfg.train.output_dir == str(c.run_dir)
    assert (c.cfg.task.seed, c.cfg.train.seed, c.cfg.train.learning_rate) == (1, 1, 0.001)
    assert (c.cfg.task.train, c.cfg.task.eval, c.cfg.task.test) == ("kshot:train", "kshot:dev", "kshot:test")
    assert (c.cfg.data.max_length, c.cfg.train.max_steps, c.cfg.train.logging_steps) == (48, 3, 2)
    assert c.cfg.task.name == str(setup / "task.yaml") and c.dev_metric == "accuracy" and c.task == "toy-kshot"
    assert cells[4].cfg.adapter.type == "lora" and cells[4].cfg.train.learning_rate == 0.1
    assert grid.std == "population"


def test_mean_std_on_fixed_numbers():
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, math.sqrt(0.02 / 3)))
    assert mean_std([0.8, 0.9, 1.0], "sample") == pytest.approx((0.9, 0.1))
    assert mean_std([0.7]) == (0.7, 0.0) and mean_std([0.7], "sample") == (0.7, 0.0)


def test_selection_takes_the_best_dev_cell_per_seed_and_reports_its_test_metric(setup):
    grid, cells = load_grid(write_grid(setup))
    report = run_grid(grid, cells, train_fn=FakeTrain(TABLE), log=lambda *_: None)
    chosen = {(r["method"], r["seed"]): (r["axes"]["train.learning_rate"], r["test"]) for r in report["selected"]}
    assert chosen == {("full", 1): (0.001, 0.70), ("full", 2): (0.01, 0.90), ("lora", 1): (0.1, 0.55),
                      ("lora", 2): (0.1, 0.65)}
    full = report["summary"]["full"]["toy-kshot"]
    assert full["values"] == [0.70, 0.90] and full["mean"] == pytest.approx(0.80) and full["std"] == pytest.approx(0.10)
    md = (setup / "out" / "grid_results.md").read_text()
    assert "| method | toy-kshot (accuracy) | avg |" in md
    assert "| full | 80.0 ± 10.0 | 80.0 |" in md and "| lora | 60.0 ± 5.0 | 60.0 |" in md
    assert (setup / "out" / "grid_results.png").stat().st_size > 1000
    saved = json.loads((setup / "out" / "grid_results.json").read_text())
    assert len(saved["cells"]) == 6 and saved["counts"]["done"] == 6 and saved["std"] == "population std, ddof=0"


def test_best_eval_is_preferred_over_the_last_eval(setup):
    grid, cells = load_grid(write_grid(setup, recipes={"full": "full.yaml"}, seeds=[1]))

    def train_fn(cfg, resume=False):  # the last eval favours lr 0.01, the best eval (kept weights) lr 0.001
        lr = cfg.train.learning_rate
        return {"eval_accuracy": 0.9 if lr == 0.01 else 0.5, "best_eval_accuracy": 0.9 if lr == 0.01 else 0.95,
                "test_accuracy": lr}
    report = run_grid(grid, cells, train_fn=train_fn, log=lambda *_: None)
    assert [(r["dev_key"], r["dev"], r["test"]) for r in report["selected"]] == [("best_eval_accuracy", 0.95, 0.001)]


def test_resume_runs_only_missing_cells_and_failures_are_recorded(setup):
    path = write_grid(setup)
    grid, cells = load_grid(path)
    fake = FakeTrain(TABLE, fail={("lora", 2, 0.1)})
    report = run_grid(grid, cells, train_fn=fake, log=lambda *_: None)
    assert len(fake.calls) == 6 and report["counts"] == {"done": 5, "failed": 1, "partial": 0, "pending": 0}
    failed = [r for r in report["cells"] if r["status"] == "failed"]
    assert failed[0]["error"] == "RuntimeError: boom" and report["summary"]["lora"]["toy-kshot"]["n"] == 1
    assert "| lora | 55.0 ± 0.0 (1/2) | – |" in (setup / "out" / "grid_results.md").read_text()

    (setup / "out/full/toy-kshot/seed2/lr0.01/final_metrics.json").unlink()      # a killed cell: dir, no metrics
    fake = FakeTrain(TABLE)
    report = run_grid(grid, cells, train_fn=fake, log=lambda *_: None)
    assert sorted(k for k, _ in fake.calls) == [("full", 2, 0.01), ("lora", 2, 0.1)]
    assert report["counts"]["done"] == 6 and "(1/2)" not in (setup / "out" / "grid_results.md").read_text()

    fake = FakeTrain(TABLE)
    run_grid(grid, cells, train_fn=fake, log=lambda *_: None)
    assert fake.calls == []

    with pytest.raises(PosttrainError, match=r"full toy-kshot seed1 lr0.01: RuntimeError: boom \(--fail-fast\)"):
        (setup / "out/full/toy-kshot/seed1/lr0.01/final_metrics.json").unlink()
        run_grid(grid, cells, train_fn=FakeTrain(TABLE, fail={("full", 1, 0.01)}), fail_fast=True,
                 log=lambda *_: None)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="posttrain")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_is_rebuilt_from_final_metrics_files(setup, capsys):
    path = write_grid(setup)
    grid, cells = load_grid(path)
    assert _cli(["grid", str(path), "--dry-run"]) == 0
    assert "6 cells: 0 done, 0 failed, 0 partial, 6 pending" in capsys.readouterr().out
    for c in cells:  # finished cells written by hand, as engine.train leaves them
        dev, test = TABLE[(c.cfg.adapter.type, c.seed, c.cfg.train.learning_rate)]
        c.run_dir.mkdir(parents=True)
        (c.run_dir / "final_metrics.json").write_text(json.dumps({"eval_accuracy": dev, "test_accuracy": test}))
    (cells[0].run_dir / "final_metrics.json").unlink()  # one unfinished cell: seed 1 keeps only lr 1e-3
    assert _cli(["grid", str(path), "--only-report"]) == 0
    out = capsys.readouterr().out
    assert "| full | 80.0 ± 10.0 | 80.0 |" in out
    saved = json.loads((setup / "out" / "grid_results.json").read_text())
    assert saved["counts"] == {"done": 5, "failed": 0, "partial": 1, "pending": 0}
    assert write_report(grid, cells)["summary"]["full"]["toy-kshot"]["values"] == [0.70, 0.90]
    assert _cli(["grid", str(path), "--dry-run"]) == 0
    assert "partial  out/full/toy-kshot/seed1/lr0.01" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"seed": [1]}, r"grid.yaml: unknown key 'seed'; did you mean 'seeds'\?"),
    ({"recipes": {"full": "nope.yaml"}}, r"grid.yaml: recipes.full: recipe file not found: nope.yaml"),
    ({"tasks": ["SST2x"]}, r"grid.yaml: tasks\[0\]: unknown task 'SST2x'; did you mean 'SST-2'\?"),
    ({"axes": {"train.learning_rate": []}}, r"axes.train.learning_rate: expected a non-empty list"),
    ({"axes": {"train.learnin_rate": [1]}}, r"axes.train.learnin_rate: unknown config key; did you mean "
                                            r"'train.learning_rate'\?"),
    ({"output_dir": ""}, r"output_dir: required"),
    ({"seeds": []}, r"seeds: must not be empty"),
    ({"overrides": ["train.max_stepz=3"]}, r"cell full/toy-kshot/seed1/lr0.01: overrides: unknown key "
                                           r"'train.max_stepz'; did you mean 'train.max_steps'\?"),
    ({"select_metric": "mcc"}, r"select_metric: 'mcc' is not a metric of toy-kshot \(accuracy, f1\)"),
    ({"seeds": [3]}, r"seed 3 is not one of 1, 2"),
    ({"std": "samples"}, r"grid.yaml: std: expected one of population, sample, got 'samples'; did you mean 'sample'"),
    ({"recipes": ["full.yaml"]}, r"grid.yaml: recipes: expected a mapping, got \['full.yaml'\]"),
    ({"percent": "yes"}, r"grid.yaml: percent: expected true or false, got 'yes'"),
])
def test_bad_grid_yaml_gives_one_line_errors(setup, change, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_grid(write_grid(setup, **change))
    assert "\n" not in str(err.value)


def test_end_to_end_with_the_real_engine(setup):
    from posttrain.callbacks import StopAtStepCallback
    from posttrain.engine import train

    path = write_grid(setup, recipes={"full": "full.yaml"}, axes={"train.learning_rate": [0.05, 1e-4]},
                      overrides=["train.eval_steps=1"], seeds=[2])
    grid, cells = load_grid(path)
    train(cells[1].cfg, callbacks=[StopAtStepCallback(1)])  # a killed cell: checkpoint-1, no final_metrics.json
    (cells[1].run_dir / "final_metrics.json").unlink()
    assert cell_state(cells[1])[0] == "partial"
    calls = []

    def counted(cfg, resume=False):
        calls.append((cfg.train.output_dir, resume))
        return train(cfg, resume=resume)
    report = run_grid(grid, cells, train_fn=counted, log=lambda *_: None)
    assert calls == [(str(c.run_dir), c is cells[1]) for c in cells] and report["counts"]["done"] == 2
    assert json.loads((cells[1].run_dir / "final_metrics.json").read_text())["global_step"] == 2
    for row in report["selected"]:
        metrics = json.loads((setup / row["run_dir"] / "final_metrics.json").read_text())
        assert row["dev_key"] == "best_eval_accuracy" and row["dev"] == metrics["best_eval_accuracy"]
        assert row["test"] == metrics["test_accuracy"] and metrics["test_examples"] == 8
        assert (setup / row["run_dir"] / "final").is_dir()  # keep_weights: selected
    assert not any((c.run_dir / "checkpoints").exists() for c in cells)
    others = [c for c in cells if str(c.run_dir) not in {r["run_dir"] for r in report["selected"]}]
    assert len(others) == 1 and not any((c.run_dir / "final").exists() for c in others)
    report = run_grid(grid, cells, train_fn=counted, log=lambda *_: None)
    assert len(calls) == 2 and report["counts"]["done"] == 2
    _, changed = load_grid(path, ["train.max_steps=3"])  # finished cells are kept, and flagged as stale
    assert stale_keys(changed[0]) == ["train.max_steps"] and stale_keys(cells[0]) == []
