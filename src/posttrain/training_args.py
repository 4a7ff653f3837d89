"""``transformers.TrainingArguments`` from a run's config: the one place posttrain's settings meet the Trainer's
(optimizer, schedule, evaluation and checkpoint cadence, seeds, loggers, mixed precision). Continued pre-training
builds its arguments here too (``pipelines/continued_pretraining.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import TrainingArguments

from . import distributed
from .config import RunConfig
from .errors import ConfigError
from .models.precision import resolve_precision


def _check_report_to(report_to: list) -> list | str:
    for name in report_to:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
        if module is None:
            raise ConfigError(f"train.report_to: unknown logger {name!r}; expected tensorboard or wandb")
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"train.report_to: {name} is not installed (pip install {module})")
    # tensorboard is attached by the engine itself, writing into the run directory (``tensorboard_callback``)
    return [name for name in report_to if name != "tensorboard"] or "none"


def tensorboard_callback(run_dir: Path):
    """transformers' TensorBoard logger writing event files into ``RUN/tensorboard/`` (the Trainer's own would
    write under ``checkpoints/runs/``, mixed with the checkpoints)."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(Path(run_dir) / "tensorboard")
    return callback


def training_arguments(cfg: RunConfig, has_eval: bool) -> TrainingArguments:
    t = cfg.train
    kwargs = dict(
        output_dir=str(Path(t.output_dir) / "checkpoints"),
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        optim="adamw_torch",
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must reach the logs and the NaN guard, not be averaged away
        eval_strategy="steps" if (has_eval and t.eval_steps > 0) else "no",
        eval_on_start=has_eval and t.eval_on_start,
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        report_to=_check_report_to(t.report_to),
        disable_tqdm=not t.progress,
        remove_unused_columns=False,
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
    )
    if distributed.needs_cpu_backend():
        kwargs["use_cpu"] = True  # torchrun / accelerate launch without GPUs: gloo process group on the CPU
    if t.gradient_checkpointing:
        kwargs["activation_checkpointing"] = True
    kwargs.update(mixed_precision_arguments(t.mixed_precision))
    if t.eval_steps > 0:
        kwargs["eval_steps"] = t.eval_steps
    if t.save_steps > 0:
        kwargs["save_steps"] = t.save_steps
    return TrainingArguments(**kwargs)


def mixed_precision_arguments(precision: str) -> dict:
    """TrainingArguments for ``train.mixed_precision``. accelerate wraps the prepared model's forward in autocast,
    so every pass through it runs in that precision: training losses, periodic evaluation and test scoring."""
    precision = resolve_precision(precision)
    if precision == "none":
        return {}
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision: fp16 needs a CUDA GPU (none is visible); use bf16 or none")
    # transformers refuses bf16 without a bf16 GPU unless told the run is on the CPU (CPU autocast, AMX kernels)
    return {precision: True, **({"use_cpu": True} if not torch.cuda.is_available() else {})}
