"""What ``run_meta.json`` records about a run: versions, command, model, the method's named choices (loss mode
and masking, adapter, regularisation, task objective), optimizer settings and data statistics."""

from __future__ import annotations

import dataclasses
import platform
import sys
import time

import torch

from .version import __version__
from .config import RunConfig
from .methods import kl_regularisation, neftune
from .data.instruction_loss import describe as describe_loss
from .methods.objectives import describe as describe_objective
from .registry import method_named
from .run_data import PreparedData
from .models.precision import resolve_precision
from .models import describe_model, model_kind, wrapper_chain


def run_metadata(cfg: RunConfig, model, data: PreparedData) -> dict:
    import datasets
    import peft
    import transformers

    return {
        "posttrain": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {**describe_model(model), "family": model_kind(model),
                  "base_class": type(wrapper_chain(model)[-1]).__name__},
        "loss": describe_loss(cfg.loss),
        "adapter": describe_adapter(cfg, model),
        "regularisation": {"kl": kl_regularisation.describe(cfg) or None,
                           "neftune": neftune.describe(cfg) if cfg.train.neftune_alpha > 0 else None},
        "task": describe_objective(cfg) if cfg.task.name else None,
        "chat_template": cfg.data.chat_template,
        "mixed_precision": {"configured": cfg.train.mixed_precision,
                            "used": resolve_precision(cfg.train.mixed_precision)},
        "optimizer": {
            "name": "adamw_torch",
            "betas": [cfg.train.adam_beta1, cfg.train.adam_beta2],
            "eps": cfg.train.adam_epsilon,
            "note": "IM paper: betas (0.9, 0.98), eps 1e-6; the IM reference code: torch defaults (0.9, 0.999), 1e-8",
        },
        "data": {
            "train": dataclasses.asdict(data.train_stats),
            "eval": dataclasses.asdict(data.eval_stats) if data.eval_stats else None,
        },
    }


def describe_adapter(cfg: RunConfig, model) -> dict:
    """What trains, with the method's named choices (recorded in run_meta.json)."""
    out = {"type": cfg.adapter.type, "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    method = method_named(cfg.adapter.type)
    return {**out, **method.describe(cfg), **method.resolved(model)}
