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

    # Loading a checkpoint's weights back. transformers 5 renames some checkpoint keys when it loads a model and
    # reverts the renaming when it saves one (GPT-NeoX: ``embed_out.weight`` on disk is ``lm_head.weight`` in the
    # module), but the Trainer reloads checkpoints with a plain ``load_state_dict(strict=False)``: the renamed
    # tensors are skipped with a warning and keep their current values, so a resumed run (or the best checkpoint
    # that ``load_best_model_at_end`` restores) silently trains on with a stale LM head. Such models load here with
    # the names mapped back; every other model takes the Trainer's own path unchanged.

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self._load_renamed_weights(resume_from_checkpoint, self.model if model is None else model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if not self._load_renamed_weights(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()

    def _load_renamed_weights(self, folder: str, model) -> bool:
        """Load ``folder``'s safetensors weights into ``model`` under the model's own names; False (nothing done)
        where the Trainer's loader is already exact: no key renamed on save, PEFT, FSDP, DeepSpeed."""
        from transformers import PreTrainedModel

        if self.is_fsdp_enabled or self.is_deepspeed_enabled or not isinstance(model, PreTrainedModel):
            return False
        renamed = saved_names(model)
        files = safetensors_files(Path(folder)) if renamed else []
        if not files:
            return False
        from safetensors.torch import load_file

        state = {}
        for file in files:
            state.update({renamed.get(k, k): v for k, v in load_file(str(file), device="cpu").items()})
        self._issue_warnings_after_load(model.load_state_dict(state, strict=False))
        return True


def saved_names(model) -> dict[str, str]:
    """{name on disk: name in ``model.state_dict()``} for the tensors ``save_pretrained`` writes under another name
    than the model's (transformers' reverted load-time renaming); {} for most models. Found by running the very
    reversal ``save_pretrained`` runs on the model's own tensors, so whatever saving renames, loading maps back."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # a transformers that saves under the module names
        return {}
    state = model.state_dict()
    names = {id(tensor): name for name, tensor in state.items()}
    reverted = revert_weight_conversion(model, dict(state))
    return {saved: names[id(t)] for saved, t in reverted.items() if id(t) in names and names[id(t)] != saved}


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a saved model: ``model.safetensors``, or the shards its index lists."""
    import json

    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        return [folder / name for name in sorted(set(shards))]
    return []


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


def clear_run(run_dir: Path, folders: tuple[str, ...] = ("final", "checkpoints"), files: tuple[str, ...] = RUN_FILES
              ) -> None:
    """Remove an earlier run's weights, checkpoints and files from ``run_dir`` (``--overwrite``); other files stay.
    ``folders`` / ``files``: what the run wrote (continued pre-training: ``best/`` and ``cpt_config.yaml``)."""
    import shutil

    run_dir = Path(run_dir)
    for name in folders:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in files:
        (run_dir / name).unlink(missing_ok=True)
