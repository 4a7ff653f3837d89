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
        "train.best_metric=output_loss", f"train.output_dir={tmp_path / name}", "train.mixed_precision=none", *extra,
    ])


def _periodic_evals(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "eval_output_loss" in r]


def test_final_metrics_are_the_best_evaluation(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.engine import train

    final = train(_cfg(tmp_path, tiny_model_dir, task_file))
    evals = _periodic_evals(tmp_path / "run")
    # one record per evaluation: the final dev metrics are the best evaluation's, reused, not a second pass
    assert [r["step"] for r in evals] == list(range(1, 9))
    losses = {r["step"]: r["eval_output_loss"] for r in evals}
    best_step = min(losses, key=lambda s: (losses[s], s))
    assert best_step != 8, "the setting should make the last step not the best (else the test proves nothing)"
    assert final["best_step"] == best_step
    assert final["best_eval_output_loss"] == pytest.approx(losses[best_step], abs=1e-6)
    best = next(r for r in evals if r["step"] == best_step)
    assert {k: final[k] for k in best if k.startswith("eval_")} == {k: v for k, v in best.items() if k.startswith("eval_")}


def test_resumed_run_keeps_the_best_from_before_the_interruption(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.engine import train

    whole = train(_cfg(tmp_path, tiny_model_dir, task_file, "whole"))
    cfg = _cfg(tmp_path, tiny_model_dir, task_file, "parts", "train.save_steps=5")
    train(cfg, callbacks=[StopAtStepCallback(5)])
    resumed = train(cfg, resume=True)
    assert resumed["best_step"] == whole["best_step"]
    assert resumed["best_eval_output_loss"] == pytest.approx(whole["best_eval_output_loss"], abs=1e-5)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    # the best evaluation's metrics travel with the checkpoint: no extra evaluation after the resume either
    assert resumed["eval_accuracy"] == whole["eval_accuracy"]
    assert [r["step"] for r in _periodic_evals(tmp_path / "parts")] == list(range(1, 9))


def test_without_best_metric_the_last_evaluation_at_the_final_step_is_reused(tmp_path, tiny_model_dir,
                                                                             task_file):  # noqa: F811
    from posttrain.engine import train

    final = train(_cfg(tmp_path, tiny_model_dir, task_file, "last", "train.best_metric=''", "train.eval_steps=4"))
    evals = _periodic_evals(tmp_path / "last")
    assert [r["step"] for r in evals] == [4, 8]  # not a third record (a second pass) at step 8
    assert final["eval_output_loss"] == evals[-1]["eval_output_loss"] and "best_step" not in final
    # when the last evaluation is not at the final step, the final one is made
    final = train(_cfg(tmp_path, tiny_model_dir, task_file, "odd", "train.best_metric=''", "train.eval_steps=3"))
    assert [r["step"] for r in _periodic_evals(tmp_path / "odd")] == [3, 6, 8]


def test_best_metric_needs_periodic_evaluation():
    with pytest.raises(ConfigError, match="train.best_metric: needs train.eval_steps > 0"):
        load_config(None, ["task.name=SST-2", "train.best_metric=accuracy"])


def test_unknown_metric_names_the_known_ones(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.engine import train

    with pytest.raises(ConfigError, match="no 'eval_bleu'.*eval_accuracy"):
        train(_cfg(tmp_path, tiny_model_dir, task_file, "x", "train.best_metric=bleu", "train.max_steps=1"))


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path, tiny_model_dir,
                                                                               task_file):  # noqa: F811
    from posttrain.engine import train

    whole = train(_cfg(tmp_path, tiny_model_dir, task_file, "whole"))
    losses = {r["step"]: r["eval_output_loss"] for r in _periodic_evals(tmp_path / "whole")}
    # the first step after which two evaluations in a row do not beat the best so far
    best, stop = None, None
    for step in sorted(losses):
        if best is None or losses[step] < losses[best]:
            best = step
        elif step - best >= 2:
            stop = step
            break
    assert stop is not None and stop < 8, "the setting should trigger the stop (else the test proves nothing)"
    early = train(_cfg(tmp_path, tiny_model_dir, task_file, "early", "train.early_stopping_patience=2"))
    assert early["global_step"] == early["early_stopped_at"] == stop
    assert early["best_step"] == best and [r["step"] for r in _periodic_evals(tmp_path / "early")] == \
        list(range(1, stop + 1))
    assert (tmp_path / "early" / "final").is_dir() and 0.0 <= early["test_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="train.early_stopping_patience: needs train.best_metric"):
        load_config(None, ["train.early_stopping_patience=2"])
