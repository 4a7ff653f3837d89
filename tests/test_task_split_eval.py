"""evaluation/task_split_eval.py (`posttrain tasks eval`): a finished run scored again gives the test metrics its
training run wrote, for each objective and adapter; a recipe is scored untrained (zero-shot); files and errors."""

from __future__ import annotations

import json

import pytest
from test_classification import task_file  # noqa: F401  (fixture: the separable toy sentiment task)

from posttrain.cli import main


def _train(tmp_path, model_dir, task, name, *extra):
    from posttrain.config import load_config
    from posttrain.engine import train

    cfg = load_config(None, [
        f"model.name_or_path={model_dir}", f"task.name={task}", "task.train=files:train", "task.eval=files:dev",
        "task.test=files:test", "data.max_length=32", "train.per_device_batch_size=8", "train.max_steps=4",
        "train.warmup_ratio=0", "train.progress=false", "train.learning_rate=1e-2", "task.form=template",
        f"train.output_dir={tmp_path / name}", *extra,
    ])
    train(cfg)
    return tmp_path / name


@pytest.mark.parametrize("name, extra", [
    ("verbalizer", ["task.objective=verbalizer", "adapter.type=full"]),
    ("classifier", ["task.objective=classifier", "adapter.type=full"]),  # a sequence-classification head in final/
    ("lm-lora", ["adapter.type=lora"]),  # the label word's next-token score; a PEFT adapter in final/
    ("verbalizer-dept", ["task.objective=verbalizer", "adapter.type=dept", "adapter.num_virtual_tokens=4",
                         "adapter.dept_rank=2", "adapter.prompt_init=random"]),  # a soft-prompt adapter in final/
])
def test_a_run_scored_again_gives_its_own_test_metrics(tmp_path, tiny_model_dir, task_file, name, extra,  # noqa: F811
                                                       capsys):
    run_dir = _train(tmp_path, tiny_model_dir, task_file, name, *extra)
    written = json.loads((run_dir / "final_metrics.json").read_text())
    out = tmp_path / "eval.json"
    assert main(["tasks", "eval", str(run_dir), "--out", str(out), "--predictions", str(tmp_path / "p.jsonl")]) == 0
    got = json.loads(out.read_text())
    assert got["metrics"]["examples"] == written["test_examples"] == 8
    for metric in ("accuracy", "f1"):
        assert got["metrics"][metric] == pytest.approx(written[f"test_{metric}"], abs=1e-9), metric
    assert f"toy-sentiment test (files:test, 8 examples), run {run_dir}: accuracy" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for r in records:  # the written prediction is the most probable label, and the accuracy counts them
        assert r["prediction"] == max(r["probabilities"], key=r["probabilities"].get)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert got["metrics"]["accuracy"] == pytest.approx(sum(r["prediction"] == r["gold"] for r in records) / 8)


def test_recipe_is_scored_untrained_and_overrides_pick_the_split(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\ntask: {{name: {task_file}, train: files:train, "
                      "eval: files:dev, test: files:test, objective: verbalizer, form: template}\n"
                      "data: {max_length: 32}\n")
    out = tmp_path / "zero.json"
    assert main(["tasks", "eval", str(recipe), "task.max_test_examples=3", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["metrics"]["examples"] == 3 and got["model"].endswith("untrained (zero-shot)")
    assert main(["tasks", "eval", str(recipe), "--split", "eval", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["source"] == "files:dev"


def test_bad_specs_fail_on_one_line(tmp_path, tiny_model_dir, task_file, capsys):  # noqa: F811
    (tmp_path / "empty").mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(f"model: {{name_or_path: {tiny_model_dir}}}\ntask: {{name: {task_file}, "
                                            "train: files:train, test: files:test}\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\ntask: {{name: {task_file}, train: files:train}}\n")
    no_task = tmp_path / "no_task.yaml"
    no_task.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n")
    cases = [
        ([str(tmp_path / "empty")], "not a run directory (no config.yaml) and not a recipe file"),
        ([str(unfinished)], "run directory has no final/ weights"),
        ([str(no_task)], "task.name is not set"),
        ([str(recipe), "task.eval=", "--split", "eval"], "task.eval: the config names no eval split"),
        ([str(recipe)], "declares no 'kshot' data"),  # the default test split: data are read before the model
    ]
    for argv, message in cases:
        assert main(["tasks", "eval", *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
