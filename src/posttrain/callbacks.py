"""Trainer callbacks: metrics.jsonl + loss-curve PNG in the run directory, a stop-at-step hook and a NaN/inf guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from .plots import plot_loss_curves, read_metrics
from .io_utils import append_jsonl, atomic_write_json, atomic_write_text
from .errors import TrainingError

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
            kept = []
            for record in read_metrics(self.path):
                if "train_runtime" in record and record.get("step", 0) >= self.resume_step:
                    break  # the end-of-training records (summary, final eval, test) of a run killed after them
                if record.get("step", 0) <= self.resume_step:
                    kept.append(record)
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

    def mean_train_loss(self) -> float | None:
        """Mean training loss over all optimizer steps in ``metrics.jsonl`` (each logged loss averages the steps since
        the previous log): after a resume, the Trainer's own ``training_loss`` covers only this process's steps."""
        total = steps = 0.0
        previous = 0
        for record in read_metrics(self.path):
            if isinstance(record.get("loss"), (int, float)) and record.get("step", 0) > previous:
                total += record["loss"] * (record["step"] - previous)
                steps += record["step"] - previous
                previous = record["step"]
        return total / steps if steps else None

    def finish(self, final: dict):
        # The plot first: final_metrics.json marks the run finished (the grid and pcp skip such runs), so nothing
        # may be written after it that a kill could leave half-done.
        plot_loss_curves(self.path, self.run_dir / "loss_curve.png")
        atomic_write_json(self.run_dir / "final_metrics.json", {k: v for k, v in final.items() if k != "trainer"})


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


class NonFiniteGuardCallback(TrainerCallback):
    """Stops a run whose loss or gradient norm becomes NaN/inf, before a non-finite model is checkpointed.

    Raises ``TrainingError`` (the CLI prints it as one ``error:`` line, exit status 2) naming the step and the last
    good checkpoint, which is kept: the Trainer logs a step before it saves it, so the checkpoint of a bad step is
    never written. Three checks:

    - ``on_log``: a non-finite ``loss`` or ``grad_norm`` (the Trainer computes the gradient norm every step);
    - ``on_step_end`` when a checkpoint is about to be written, and ``on_train_end`` (before ``final/``): every
      trainable weight is finite. This catches a NaN between two log steps when ``logging_steps > 1``; it costs one
      pass over the trainable parameters per checkpoint.
    - ``on_train_begin`` turns off ``TrainingArguments.logging_nan_inf_filter``, which would otherwise replace a
      NaN step loss by the running mean and hide it from the logs.
    """

    def __init__(self):
        self.last_good_step = 0  # the last step known to have a finite loss and finite weights

    def on_train_begin(self, args, state, control, **kwargs):
        args.logging_nan_inf_filter = False
        self.last_good_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        bad = {key: logs[key] for key in ("loss", "grad_norm") if _non_finite(logs.get(key))}
        if not bad:
            if "loss" in logs:
                self.last_good_step = state.global_step
            return
        what = " and ".join(f"{'training loss' if k == 'loss' else 'gradient norm'} is {float(v)}"
                            for k, v in bad.items())
        self._stop(args, state, what)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save and not control.should_log:  # a logged step is checked in on_log first
            self._check_weights(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._check_weights(args, state, model)

    def _check_weights(self, args, state, model) -> None:
        if model is None:
            return
        import torch

        with torch.no_grad():
            finite = all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)
        if not finite:
            self._stop(args, state, "trainable weights are not finite (NaN/inf)")
        self.last_good_step = state.global_step

    def _stop(self, args, state, what: str) -> None:
        step = state.global_step
        if step - self.last_good_step > 1:
            where = f"steps {self.last_good_step + 1}-{step}"
        else:
            where = f"step {step}"
        keep = _last_checkpoint_before(Path(args.output_dir), step)
        kept = (f"the last good checkpoint {keep} is kept (continue from it with --resume, e.g. with a lower "
                "train.learning_rate)" if keep else "no checkpoint was saved before it (train.save_steps)")
        raise TrainingError(f"training stopped at {where}: {what}; {kept}")


def _non_finite(value) -> bool:
    try:
        return value is not None and not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _last_checkpoint_before(folder: Path, step: int) -> Path | None:
    """The checkpoint-N under ``folder`` with the largest N < ``step`` (a bad step's checkpoint is never good)."""
    best = None
    if folder.is_dir():
        for path in folder.iterdir():
            name, _, number = path.name.rpartition("-")
            if name == "checkpoint" and number.isdigit() and path.is_dir() and int(number) < step:
                if best is None or int(number) > best[0]:
                    best = (int(number), path)
    return best[1] if best else None


class SampleCallback(TrainerCallback):
    """Greedy answers to ``train.sample_prompts`` at every evaluation, appended to ``samples.jsonl`` (step, prompt,
    answer) and printed: the look at outputs Axolotl and LLaMA-Factory users expect beside the loss curve."""

    def __init__(self, run_dir: Path, tokenizer, texts: list[str], prompts: list[str], max_new_tokens: int,
                 resume_step: int | None = None):
        self.path = Path(run_dir) / "samples.jsonl"
        self.tokenizer, self.texts, self.prompts, self.max_new_tokens = tokenizer, texts, prompts, max_new_tokens
        self.resume_step = resume_step

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_step is None or not state.is_world_process_zero or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= self.resume_step]  # a killed run's tail
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if model is None or not state.is_world_process_zero:
            return
        import torch

        from .models.decoding import generate_batch

        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):  # sampling must not move the training RNG (resume == whole run)
                answers = generate_batch(model, self.tokenizer, self.texts, max_new_tokens=self.max_new_tokens)
        finally:
            model.train(was_training)
        for prompt, answer in zip(self.prompts, answers):
            append_jsonl(self.path, {"step": state.global_step, "prompt": prompt, "answer": answer})
            print(f"[sample, step {state.global_step}] {prompt!r} -> {answer[:200]!r}", flush=True)
