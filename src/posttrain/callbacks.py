"""Trainer callbacks: metrics.jsonl + loss-curve PNG in the run directory, and a stop-at-step hook."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from .evaluation.plots import plot_loss_curves, read_metrics
from .io_utils import append_jsonl, atomic_write_json, atomic_write_text

_KEYS_DROPPED = {"total_flos"}


class MetricsCallback(TrainerCallback):
    """Appends every log record to ``metrics.jsonl`` (rank 0 only) and redraws ``loss_curve.png`` on save/end.

    On resume, records logged after the checkpoint being resumed are dropped first, so the file describes the
    run that actually produced the final weights.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.resume_step = resume_step

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= self.resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        elif self.resume_step is None and self.path.exists():
            self.path.unlink()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update({k: v for k, v in logs.items() if k not in _KEYS_DROPPED})
        loss = record.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            record["loss"] = str(loss)
        append_jsonl(self.path, record)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_loss_curves(self.path, self.run_dir / "loss_curve.png")

    def finish(self, final: dict):
        atomic_write_json(self.run_dir / "final_metrics.json", {k: v for k, v in final.items() if k != "trainer"})
        plot_loss_curves(self.path, self.run_dir / "loss_curve.png")


class StopAtStepCallback(TrainerCallback):
    """Stops training after ``step`` optimizer steps, saving a checkpoint there (an interrupted run)."""

    def __init__(self, step: int):
        self.step = step
        self.fired = False

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
            self.fired = True
        return control
