"""train.mixed_precision (training_args.mixed_precision_arguments): training steps, periodic evaluation and test
scoring run in the chosen precision for every objective and adapter (accelerate autocasts the prepared model's
forward, which every path goes through, the restricted-head objectives included); weights stay fp32."""

from __future__ import annotations

import pytest
import torch

from posttrain.config import load_config
from posttrain.errors import ConfigError

from test_classification import task_file  # noqa: F401  (fixture)


def _cfg(tmp_path, tiny_model_dir, task_file, precision, *extra):  # noqa: F811
    return load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={task_file}", "task.train=files:train",
        "task.eval=files:dev", "task.test=files:test", "data.max_length=32", "train.per_device_batch_size=4",
        "train.max_steps=2", "train.eval_steps=2", "train.progress=false", "adapter.type=full",
        f"train.mixed_precision={precision}", f"train.output_dir={tmp_path / precision}", *extra,
    ])


def _dtypes_by_phase(cfg):
    """{training: set of dtypes, evaluating: set of dtypes} of one backbone projection's outputs during ``train``."""
    from posttrain.engine import objective_model_config, train
    from posttrain.models import load_model_and_tokenizer

    model_cfg, num_labels = objective_model_config(cfg)  # the classifier objective's head
    model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=True, num_labels=num_labels)
    seen = {True: set(), False: set()}
    model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda module, args, out: seen[module.training].add(out.dtype))
    final = train(cfg, model=model, tokenizer=tokenizer)
    return seen, final, model


@pytest.mark.parametrize("objective,adapter", [("verbalizer", "full"), ("lm", "full"), ("classifier", "full"),
                                               ("lm", "dept"), ("lm", "prompt_tuning"), ("verbalizer", "lora"),
                                               ("verbalizer", "dept")])
def test_bf16_autocasts_training_evaluation_and_test_scoring(tmp_path, tiny_model_dir, task_file,  # noqa: F811
                                                             objective, adapter):
    cfg = _cfg(tmp_path, tiny_model_dir, task_file, "bf16", f"task.objective={objective}", f"adapter.type={adapter}",
               "adapter.num_virtual_tokens=4", "adapter.dept_rank=2")
    seen, final, model = _dtypes_by_phase(cfg)
    assert seen == {True: {torch.bfloat16}, False: {torch.bfloat16}}
    assert "test_accuracy" in final and "eval_accuracy" in final
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights (and the trained ones) stay fp32


def test_no_mixed_precision_stays_fp32(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    seen, _, _ = _dtypes_by_phase(_cfg(tmp_path, tiny_model_dir, task_file, "none"))
    assert seen == {True: {torch.float32}, False: {torch.float32}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed with a GPU")
def test_fp16_without_a_gpu_fails_before_the_model_loads(tmp_path, task_file, monkeypatch):  # noqa: F811
    import posttrain.models
    from posttrain.engine import train

    monkeypatch.setattr(posttrain.models, "load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("the model was loaded before the precision was checked"))
    with pytest.raises(ConfigError, match="train.mixed_precision: fp16 needs a CUDA GPU"):
        train(_cfg(tmp_path, tmp_path / "no-model", task_file, "fp16"))
    assert not (tmp_path / "fp16").exists()


def test_unknown_precision_is_refused_by_the_config(tmp_path, task_file):  # noqa: F811
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        _cfg(tmp_path, tmp_path, task_file, "int8")


def test_continued_pretraining_passes_its_precision_to_the_trainer():
    from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig, training_arguments

    assert training_arguments(ContinuedPretrainingConfig(output_dir="x", mixed_precision="bf16")).bf16
    assert not training_arguments(ContinuedPretrainingConfig(output_dir="x", mixed_precision="none")).bf16


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_is_bf16_exactly_where_the_hardware_has_it(tmp_path, tiny_model_dir, task_file, monkeypatch,  # noqa: F811
                                                        has_bf16):
    import json

    from posttrain.models import precision

    monkeypatch.setattr(precision, "bf16_hardware", lambda: has_bf16)
    cfg = _cfg(tmp_path, tiny_model_dir, task_file, "auto")
    seen, final, _ = _dtypes_by_phase(cfg)
    expected = torch.bfloat16 if has_bf16 else torch.float32
    assert seen == {True: {expected}, False: {expected}}
    meta = json.loads((tmp_path / "auto" / "run_meta.json").read_text())
    assert meta["mixed_precision"] == {"configured": "auto", "used": "bf16" if has_bf16 else "none"}


def test_auto_losses_match_fp32_within_bf16_rounding(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    """A few steps under auto (bf16 on this project's CPU, none elsewhere) against fp32: per-step training losses
    within 2% (bf16 keeps 8 bits of mantissa; the loss itself is computed in fp32)."""
    import json

    from posttrain.engine import train

    losses = {}
    for precision in ("none", "auto"):
        train(_cfg(tmp_path, tiny_model_dir, task_file, precision, "train.max_steps=4", "train.logging_steps=1"))
        losses[precision] = [json.loads(line)["loss"] for line in (tmp_path / precision / "metrics.jsonl")
                             .read_text().splitlines() if "loss" in json.loads(line)]
    assert len(losses["auto"]) == 4
    assert losses["auto"] == pytest.approx(losses["none"], rel=2e-2)
