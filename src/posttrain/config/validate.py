"""Checks of a run configuration, run when a ``RunConfig`` is built: every number against the bounds its field
declares (``help_field(..., bounds=...)``, one generic check, so a field added later cannot skip it), then the
combinations of fields. Types are checked earlier, by the typed coercion of ``config/fields.py``.

Checks that belong to one trainable-parameter method are that method's (``Method.validate`` and its capability
flags, looked up in the registry), so no check here names a method.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError, did_you_mean
from .fields import check_bounds
from ..registry import method_named


def _bad(key: str, msg: str):
    raise ConfigError(f"{key}: {msg}")


# transformers schedulers that cannot run from a name alone: posttrain passes no lr_scheduler_kwargs
_NEEDS_KWARGS = {"cosine_with_min_lr": "min_lr", "cosine_warmup_with_min_lr": "min_lr",
                 "warmup_stable_decay": "num_decay_steps", "reduce_lr_on_plateau": "an evaluation metric per epoch",
                 "greedy": "its own settings"}


def check_scheduler(name: str, key: str = "train.lr_scheduler") -> None:
    """``name`` must be one of transformers' ``SchedulerType`` values that runs from its name alone (read from the
    installed transformers, so a scheduler it adds or drops is seen here; imported only for a name other than the
    default, as it costs seconds)."""
    if name == "linear":
        return
    from transformers.trainer_utils import SchedulerType

    names = [s.value for s in SchedulerType]
    if name not in names:
        usable = [n for n in names if n not in _NEEDS_KWARGS]
        _bad(key, f"expected one of {', '.join(usable)} (transformers' schedulers), got {name!r}"
             f"{did_you_mean(name, usable)}")
    if name in _NEEDS_KWARGS:
        _bad(key, f"{name} needs {_NEEDS_KWARGS[name]} (lr_scheduler_kwargs), which posttrain does not pass; use "
             "linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup or inverse_sqrt")


def validate(cfg) -> None:
    """Raise a one-line ``ConfigError("section.key: ...")`` for the first combination that cannot run."""
    for section in dataclasses.fields(cfg):
        check_bounds(getattr(cfg, section.name), f"{section.name}.")
    method = method_named(cfg.adapter.type)
    loss, train, data, task = cfg.loss, cfg.train, cfg.data, cfg.task
    check_scheduler(train.lr_scheduler)
    if loss.mode != "instruction_and_output" and loss.prompt_loss_weight != 1.0:
        _bad("loss.prompt_loss_weight", "only applies to loss.mode=instruction_and_output")
    if loss.mode != "instruction_and_output" and loss.im_mask != "paper":
        _bad("loss.im_mask", "only applies to loss.mode=instruction_and_output")
    if loss.kl_coef > 0 and method.kl_reference is None:
        _bad("loss.kl_coef", f"KL regularisation needs adapter.type full or lora (the reference is the starting "
             f"model), got {method.name}")
    if loss.kl_coef > 0 and task.name and task.objective != "lm":
        _bad("loss.kl_coef", f"KL regularisation applies to next-token objectives, not task.objective={task.objective}")
    if loss.kl_coef == 0 and loss.kl_form != "full":
        _bad("loss.kl_form", "only applies when loss.kl_coef > 0")
    if train.neftune_alpha > 0 and not method.noisy_embeddings:
        _bad("train.neftune_alpha", f"NEFTune noises the token embeddings: needs adapter.type full or lora, got "
             f"{method.name}")
    if train.neftune_alpha == 0 and train.neftune_length != "real_tokens":
        _bad("train.neftune_length", "only applies when train.neftune_alpha > 0")
    if data.eval_file and data.eval_size:
        _bad("data.eval_size", "set either data.eval_file or data.eval_size, not both")
    if train.max_steps <= 0 and train.num_epochs <= 0:
        _bad("train.max_steps", "set max_steps > 0 or num_epochs > 0")
    if train.sample_prompts and task.name:
        _bad("train.sample_prompts", "answers are sampled on instruction data runs (data.train_file), not tasks")
    if train.sample_prompts and not all(isinstance(p, str) and p.strip() for p in train.sample_prompts):
        _bad("train.sample_prompts", "expected a list of non-empty prompt strings")
    if train.early_stopping_patience and not train.best_metric:
        _bad("train.early_stopping_patience", "needs train.best_metric (the metric whose improvement it waits for)")
    if train.best_metric and train.eval_steps <= 0:
        _bad("train.best_metric", "needs train.eval_steps > 0 (the best of periodic evaluations is kept)")
    method.validate(cfg)
    if task.name:
        _validate_task(cfg, method)
    if train.packing is True and not method.packing:
        _bad("train.packing", f"not supported with adapter.type={method.name} (each example needs its own prompt)")
    if data.pad_to_max_length and train.packing is True:
        _bad("data.pad_to_max_length", "conflicts with train.packing")
    if train.packing is True and train.group_by_length:
        _bad("train.group_by_length", "not needed with train.packing (there is no padding to save)")


def _validate_task(cfg, method) -> None:
    task, data = cfg.task, cfg.data
    if data.train_file or data.eval_file:
        _bad("task.name", "set either task.name or data.train_file/eval_file, not both")
    for key in ("train", "eval", "test"):
        value = getattr(task, key)
        if (value or key == "train") and value.count(":") != 1:
            _bad(f"task.{key}", f"expected source:split such as pool:train or kshot:test, got {value!r}")
    if cfg.loss.mode != "output_only":
        _bad("loss.mode", "classification tasks train on the label word only (output_only)")
    if task.prompt_style == "soft" and (task.objective != "verbalizer" or task.form != "template"):
        _bad("task.prompt_style", "soft prompts replace the template's words: needs task.objective=verbalizer "
             "and task.form=template")
    if task.prompt_style == "soft" and not method.trains_embedding_rows:
        _bad("task.prompt_style", f"soft prompts train new embedding rows: needs adapter.type=full, got {method.name}")
    if task.causal_scoring == "filled" and task.objective != "verbalizer":
        _bad("task.causal_scoring", "applies to task.objective=verbalizer only")
    if task.causal_scoring == "filled" and task.form != "template":
        _bad("task.causal_scoring", "filled scores the rest of the template: needs task.form=template")
    if cfg.train.packing is True:
        _bad("train.packing", "not used for classification tasks (short examples, padded batches)")
