"""train.best_metric (best_weights.py): the final evaluation, test scoring and saved weights are those of the best
periodic evaluation, also across an interrupted and resumed run."""

from __future__ import annotations

import json

import pytest

from posttrain.callbacks import StopAtStepCallback
from posttrain.config import load_config
from posttrain.errors import ConfigError

from test_classification import task_file  # noqa: F401  (fixture)


def _cfg(tmp_path, tiny_model_dir, task_file, name="run", *extra):  # noqa: F811
    return load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={task_file}", "task.train=files:train",
        "task.eval=files:dev", "task.test=files:test", "data.max_length=32", "train.per_device_batch_size=4",
        "train.max_steps=8", "train.warmup_ratio=0", "train.progress=false", "train.eval_steps=1",
        "adapter.type=full", "train.learning_rate=0.05", "train.lr_scheduler=constant",  # overshoots: best at step 4
        "train.best_metric=output_loss", f"train.output_dir={tmp_path / name}", *extra,
    ])


def _periodic_evals(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "eval_output_loss" in r]


def test_final_metrics_are_the_best_evaluation(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.engine import train

    final = train(_cfg(tmp_path, tiny_model_dir, task_file))
    evals = _periodic_evals(tmp_path / "run")[:-1]  # the last record is the final evaluation after restoring
    losses = {r["step"]: r["eval_output_loss"] for r in evals}
    best_step = min(losses, key=lambda s: (losses[s], s))
    assert best_step != 8, "the setting should make the last step not the best (else the test proves nothing)"
    assert final["best_step"] == best_step
    assert final["best_eval_output_loss"] == pytest.approx(losses[best_step], abs=1e-6)
    assert final["eval_output_loss"] == pytest.approx(losses[best_step], abs=1e-5)


def test_resumed_run_keeps_the_best_from_before_the_interruption(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.engine import train

    whole = train(_cfg(tmp_path, tiny_model_dir, task_file, "whole"))
    cfg = _cfg(tmp_path, tiny_model_dir, task_file, "parts", "train.save_steps=5")
    train(cfg, callbacks=[StopAtStepCallback(5)])
    resumed = train(cfg, resume=True)
    assert resumed["best_step"] == whole["best_step"]
    assert resumed["best_eval_output_loss"] == pytest.approx(whole["best_eval_output_loss"], abs=1e-5)
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_best_metric_needs_periodic_evaluation():
    with pytest.raises(ConfigError, match="train.best_metric: needs train.eval_steps > 0"):
        load_config(None, ["task.name=SST-2", "train.best_metric=accuracy"])


def test_unknown_metric_names_the_known_ones(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.engine import train

    with pytest.raises(ConfigError, match="no 'eval_bleu'.*eval_accuracy"):
        train(_cfg(tmp_path, tiny_model_dir, task_file, "x", "train.best_metric=bleu", "train.max_steps=1"))
