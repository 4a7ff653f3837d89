"""Crash-safe checkpoints: every checkpoint and ``final/`` is written into a ``.tmp-`` directory and renamed into
place only when complete, so a run killed at any moment leaves the previous valid checkpoint or the new one (issue:
scale-out and reliability). Used by ``engine.PosttrainTrainer`` and by any other ``transformers.Trainer`` subclass
(``class T(AtomicCheckpoints, Trainer)``, e.g. continued pre-training).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import distributed
from .io_utils import safetensors_damage


class AtomicCheckpoints:
    """Checkpoints written atomically, for any ``transformers.Trainer`` subclass (``class T(AtomicCheckpoints,
    Trainer)``).

    transformers writes checkpoint-N file by file; a run killed meanwhile leaves a directory that looks like a
    checkpoint. Here the Trainer writes into RUN/.tmp-checkpoint-N/checkpoint-N (``args.output_dir`` points at the
    staging directory while it saves and while the on_save callbacks add their files, e.g. best_weights), and the
    complete directory is then renamed to RUN/checkpoint-N, after which old checkpoints are rotated (each renamed
    away before it is deleted). ``last_checkpoint`` never takes a ``.tmp-*`` directory for a checkpoint.
    """

    _defer_commit = False
    _pending_commit: tuple | None = None

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        real_output_dir = self.args.output_dir
        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(real_output_dir, f"{distributed.STAGING_PREFIX}{name}")
        if self.args.should_save and os.path.isdir(staging_root):
            import shutil

            shutil.rmtree(staging_root)  # left by a run killed while writing this step
        self.accelerator.wait_for_everyone()
        self.args.output_dir = staging_root
        try:
            staged = os.path.join(self._get_output_dir(trial=trial), name)
            super()._save_checkpoint(model, trial)
        except BaseException:
            self.args.output_dir = real_output_dir
            raise
        self._pending_commit = (staged, os.path.join(run_dir, name), staging_root, real_output_dir, run_dir)
        if not self._defer_commit:
            self._commit_checkpoint()

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        self._defer_commit = True  # the on_save callbacks write into the staged checkpoint first
        try:
            super()._maybe_log_save_evaluate(*args, **kwargs)
        except BaseException:
            if self._pending_commit is not None:  # an incomplete checkpoint stays in .tmp-* and is ignored
                self.args.output_dir = self._pending_commit[3]
                self._pending_commit = None
            raise
        finally:
            self._defer_commit = False
        self._commit_checkpoint()

    def _commit_checkpoint(self) -> None:
        if self._pending_commit is None:
            return
        staged, final, staging_root, real_output_dir, run_dir = self._pending_commit
        self._pending_commit = None
        self.args.output_dir = real_output_dir
        self.accelerator.wait_for_everyone()  # every process has written its files (RNG state, FSDP/ZeRO shards)
        if self.args.should_save:
            import shutil

            distributed.commit_directory(staged, final)
            shutil.rmtree(staging_root, ignore_errors=True)
            best = self.state.best_model_checkpoint
            if best and os.path.abspath(best).startswith(os.path.abspath(staging_root)):
                self.state.best_model_checkpoint = final
            distributed.rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The complete ``checkpoint-N`` directories under ``run_dir/checkpoints``, by step.

    Staging directories (``.tmp-*``) of a run killed while saving never count; nor does a ``checkpoint-N``
    without ``trainer_state.json`` (written last) or with transformers' ``checkpoint-is-incomplete.txt`` marker.
    """
    import re

    ckpt_dir = Path(run_dir) / "checkpoints"
    found = []
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            match = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if (match and path.is_dir() and (path / "trainer_state.json").is_file()
                    and not (path / "checkpoint-is-incomplete.txt").exists()):
                found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def damage(checkpoint: Path) -> str | None:
    """Why a complete-looking checkpoint cannot be loaded, or None: a safetensors file shorter than its header
    says (a save cut short, a disk that filled), a torch file whose zip directory is gone, unreadable trainer
    state. Reads headers only, not the tensors."""
    import json
    import zipfile

    checkpoint = Path(checkpoint)
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is not readable JSON"
    for path in sorted(checkpoint.glob("*.safetensors")):
        reason = safetensors_damage(path)
        if reason:
            return f"{path.name}: {reason}"
    for path in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        if not zipfile.is_zipfile(path):
            return f"{path.name} is not a complete torch file"
    return None


def last_checkpoint(run_dir: Path) -> Path | None:
    """The latest complete checkpoint of a run that loads (None when there is none). A later damaged one is
    skipped with a one-line warning on stderr, so ``--resume`` continues from the last good checkpoint."""
    import sys

    for checkpoint in reversed(complete_checkpoints(run_dir)):
        reason = damage(checkpoint)
        if reason is None:
            return checkpoint
        print(f"posttrain: skipping damaged checkpoint {checkpoint} ({reason})", file=sys.stderr)
    return None


def save_final_model(trainer, directory: Path) -> None:
    """``trainer.save_model`` into a staging directory, renamed to ``directory`` once complete (every process
    calls it: FSDP / ZeRO-3 gather the weights collectively; the saving process renames)."""
    directory = Path(directory)
    staged = directory.with_name(f"{distributed.STAGING_PREFIX}{directory.name}")
    if trainer.args.should_save and staged.exists():
        import shutil

        shutil.rmtree(staged)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staged))
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        distributed.commit_directory(staged, directory)
    trainer.accelerator.wait_for_everyone()


def step_of(checkpoint) -> int | None:
    """N of a ``checkpoint-N`` path (None for None or another name)."""
    if checkpoint is None:
        return None
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    except ValueError:
        return None


RUN_FILES = ("config.yaml", "run_meta.json", "metrics.jsonl", "final_metrics.json", "loss_curve.png")


def run_contents(run_dir: Path) -> list[str]:
    """What a directory holds of an earlier run (``final/``, checkpoints, the run's files), for the never-overwrite
    check; [] for a new or empty directory."""
    run_dir = Path(run_dir)
    held = ["final/"] if (run_dir / "final").is_dir() else []
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir()):
        held.append("checkpoints/")
    return held + [name for name in RUN_FILES if (run_dir / name).is_file()]


def clear_run(run_dir: Path) -> None:
    """Remove an earlier run's weights, checkpoints and files from ``run_dir`` (``--overwrite``); other files stay."""
    import shutil

    run_dir = Path(run_dir)
    for name in ("final", "checkpoints"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
