"""training_args.py: the TrainingArguments built from a RunConfig carry the config's values; evaluation and
checkpoint cadence; loggers; mixed precision none/bf16/fp16."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from posttrain.config import load_config
from posttrain.errors import ConfigError
from posttrain.training_args import mixed_precision_arguments, training_arguments
from posttrain.models.precision import resolve_precision

VALUES = {
    "learning_rate": 3e-4, "weight_decay": 0.1, "adam_beta1": 0.85, "adam_beta2": 0.95, "adam_epsilon": 1e-7,
    "lr_scheduler": "cosine", "warmup_ratio": 0.1, "per_device_batch_size": 2, "gradient_accumulation_steps": 3,
    "max_steps": 50, "num_epochs": 3.0, "max_grad_norm": 1.5, "logging_steps": 2, "eval_steps": 5, "save_steps": 10,
    "save_total_limit": 4, "seed": 7, "dataloader_num_workers": 0, "progress": False,
}


def _cfg(tmp_path, **changes):
    values = {**VALUES, **changes}
    return load_config(None, [f"train.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]
                       + [f"train.output_dir={tmp_path / 'run'}"])


def test_arguments_carry_the_config_values(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.train.learning_rate == 3e-4 and cfg.train.lr_scheduler == "cosine"  # the overrides took effect
    args = training_arguments(cfg, has_eval=True)
    assert Path(args.output_dir) == tmp_path / "run" / "checkpoints"
    assert args.learning_rate == 3e-4 and args.weight_decay == 0.1
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.85, 0.95, 1e-7)
    assert args.lr_scheduler_type == "cosine"
    assert args.get_warmup_steps(50) == 5  # warmup_ratio 0.1 of 50 steps
    assert args.per_device_train_batch_size == 2 and args.per_device_eval_batch_size == 2
    assert args.gradient_accumulation_steps == 3
    assert args.max_steps == 50 and args.num_train_epochs == 3.0 and args.max_grad_norm == 1.5
    assert args.logging_steps == 2
    assert args.eval_strategy == "steps" and args.eval_steps == 5
    assert args.save_strategy == "steps" and args.save_steps == 10 and args.save_total_limit == 4
    assert args.seed == 7 and args.data_seed == 7
    assert args.report_to == []
    assert args.disable_tqdm is True and args.remove_unused_columns is False
    assert args.logging_nan_inf_filter is False
    # the default mixed_precision auto: bf16 exactly where the hardware has its kernels
    assert args.bf16 is (resolve_precision("auto") == "bf16") and args.fp16 is False


def test_other_values_give_other_arguments(tmp_path):
    """A second set of values, so that no assertion above holds because it is the transformers default."""
    cfg = _cfg(tmp_path, learning_rate=1e-5, lr_scheduler="constant_with_warmup", warmup_ratio=0.0, seed=11,
               gradient_accumulation_steps=1, max_steps=-1, progress=True, adam_beta2=0.98)
    args = training_arguments(cfg, has_eval=True)
    assert args.learning_rate == 1e-5 and args.lr_scheduler_type == "constant_with_warmup"
    assert args.get_warmup_steps(50) == 0 and args.seed == 11 and args.gradient_accumulation_steps == 1
    assert args.max_steps == -1 and args.disable_tqdm is False and args.adam_beta2 == 0.98


def test_no_eval_set_or_zero_steps_turn_the_cadence_off(tmp_path):
    args = training_arguments(_cfg(tmp_path, eval_on_start=True), has_eval=False)
    assert args.eval_strategy == "no" and args.eval_on_start is False
    args = training_arguments(_cfg(tmp_path, eval_on_start=True), has_eval=True)
    assert args.eval_on_start is True
    args = training_arguments(_cfg(tmp_path, eval_steps=0, save_steps=0), has_eval=True)
    assert args.eval_strategy == "no" and args.save_strategy == "no"


def test_unknown_or_missing_logger_is_a_config_error(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.train.report_to = ["mlflow"]
    with pytest.raises(ConfigError, match=r"^train\.report_to: unknown logger 'mlflow'; expected tensorboard or wandb"):
        training_arguments(cfg, has_eval=False)
    for name in ("tensorboard", "wandb"):
        if importlib.util.find_spec(name) is None:
            cfg.train.report_to = [name]
            message = rf"^train\.report_to: {name} is not installed \(pip install {name}\)"
            with pytest.raises(ConfigError, match=message):
                training_arguments(cfg, has_eval=False)


def test_mixed_precision_mapping():
    assert mixed_precision_arguments("none") == {}
    cpu = {} if torch.cuda.is_available() else {"use_cpu": True}
    assert mixed_precision_arguments("bf16") == {"bf16": True, **cpu}


def test_bf16_reaches_the_training_arguments(tmp_path):
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        pytest.skip("a GPU without bf16")
    args = training_arguments(_cfg(tmp_path, mixed_precision="bf16"), has_eval=False)
    assert args.bf16 is True and args.fp16 is False
    if not torch.cuda.is_available():
        assert args.use_cpu is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed with a CUDA GPU")
def test_fp16_without_a_gpu_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^train\.mixed_precision: fp16 needs a CUDA GPU"):
        mixed_precision_arguments("fp16")
    with pytest.raises(ConfigError, match=r"^train\.mixed_precision: fp16 needs a CUDA GPU"):
        training_arguments(_cfg(tmp_path, mixed_precision="fp16"), has_eval=False)


def test_tensorboard_event_files_hold_the_logged_losses(tmp_path, tiny_model_dir):
    """train.report_to: [tensorboard] writes event files into RUN/tensorboard/ whose train/loss scalars are the
    losses of metrics.jsonl."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from posttrain.engine import train
    from test_engine import ROWS

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train_file={data}", "data.max_length=64",
                             "train.max_steps=3", "train.per_device_batch_size=4", "train.progress=false",
                             "train.report_to=[tensorboard]", f"train.output_dir={tmp_path / 'run'}"])
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    logged = [e.value for e in events.Scalars("train/loss")]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert logged == pytest.approx(losses, rel=1e-6) and len(logged) == 3
    assert not (tmp_path / "run" / "checkpoints" / "runs").exists()
