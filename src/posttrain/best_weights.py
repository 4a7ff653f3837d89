"""Keep the weights of the best evaluation and restore them at the end (``train.best_metric``).

The few-shot protocol of LM-BFF (Gao et al., ACL 2021) and PCP (Shi & Lipani, NeurIPS 2023) evaluates every N
steps on the k-shot dev set and reports the test score of the best dev checkpoint. Instead of writing a full
checkpoint at every evaluation (hundreds of MB for full fine-tuning), this callback keeps an in-memory CPU copy of
the *trainable* parameters whenever the dev metric improves (ties keep the earlier step), and ``restore`` copies
them back before the final evaluation, test scoring and saving. Frozen parameters never change, so the restored
model equals the best checkpoint exactly.
"""

from __future__ import annotations

import json

import torch
from transformers import TrainerCallback

from .errors import ConfigError


def metric_key(name: str) -> str:
    return name if name.startswith("eval_") else f"eval_{name}"


def lower_is_better(name: str) -> bool:
    return "loss" in name


class BestWeightsCallback(TrainerCallback):
    """The best evaluation's trainable weights (see the module docstring); with ``patience`` > 0, training stops
    after that many evaluations in a row without a better value (early stopping, as transformers'
    ``EarlyStoppingCallback``, counted from the run's log history so that a resumed run counts the same)."""

    def __init__(self, metric: str, patience: int = 0):
        self.key = metric_key(metric)
        self.patience = patience
        self.stopped_at: int | None = None
        self.minimise = lower_is_better(self.key)
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict | None = None  # everything the best evaluation reported (reused at the end)
        self._weights: dict[str, torch.Tensor] = {}

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if self.minimise else value > self.best_value

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not metrics or model is None:
            return
        if self.key not in metrics:
            known = ", ".join(sorted(k for k in metrics if isinstance(metrics[k], (int, float))))
            raise ConfigError(f"train.best_metric: evaluation has no {self.key!r}; it reports {known}")
        value = float(metrics[self.key])
        if self._better(value):
            self.best_value, self.best_step, self.best_metrics = value, state.global_step, dict(metrics)
            self._weights = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                             if p.requires_grad}
        elif self.patience:
            # this evaluation is not yet in log_history (the Trainer logs it before on_evaluate: count both ways)
            since = {r["step"] for r in state.log_history if self.key in r and r["step"] > (self.best_step or 0)}
            if len(since | {state.global_step}) >= self.patience:
                control.should_training_stop = True
                self.stopped_at = state.global_step

    @torch.no_grad()
    def restore(self, model) -> bool:
        """Copy the best weights back into ``model``; False when no evaluation happened."""
        if not self._weights:
            return False
        params = dict(model.named_parameters())
        for name, value in self._weights.items():
            params[name].copy_(value.to(params[name].device))
        return True

    def summary(self) -> dict:
        if self.best_step is None:
            return {}
        out = {"best_step": self.best_step, f"best_{self.key}": self.best_value}
        if self.stopped_at is not None:
            out["early_stopped_at"] = self.stopped_at
        return out

    # The snapshot travels with checkpoints, so a resumed run still knows the best evaluation before the crash.
    FILE = "best_weights.safetensors"

    def on_save(self, args, state, control, **kwargs):
        if not self._weights or not state.is_world_process_zero:
            return
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            tmp = folder / (self.FILE + ".tmp")
            save_file({k: v.contiguous() for k, v in self._weights.items()}, str(tmp),
                      metadata={"step": str(self.best_step), "value": repr(self.best_value), "key": self.key,
                                "metrics": json.dumps(self.best_metrics)})
            tmp.replace(folder / self.FILE)

    def load_from(self, checkpoint) -> None:
        from pathlib import Path

        from safetensors import safe_open

        path = Path(checkpoint) / self.FILE
        if not path.is_file():
            return
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("key") != self.key:
                return  # a different best_metric than the interrupted run's: start the selection afresh
            self._weights = {k: handle.get_tensor(k) for k in handle.keys()}
        self.best_step, self.best_value = int(meta["step"]), float(meta["value"])
        self.best_metrics = json.loads(meta["metrics"]) if "metrics" in meta else None
