"""Multi-process helpers: accelerate presets, the ``--accelerate-config`` relaunch, atomic directory commits, and
the full (unsharded) parameters a custom saver needs under FSDP / DeepSpeed ZeRO-3.

posttrain has no distributed engine of its own: ``transformers.Trainer`` + ``accelerate`` do data parallelism
(DDP), FSDP and DeepSpeed. This module only

- names the shipped accelerate config files (``accelerate_configs/*.yaml``) and builds the
  ``accelerate launch --config_file PRESET -m posttrain train ...`` command line (as TRL's CLI does);
- notices a launcher's environment on a machine without GPUs, where the Trainer must be told to use the CPU
  (gloo) backend, otherwise every process would silently train its own copy of the model;
- writes a directory atomically (stage, fsync, rename), for checkpoints and ``final/``;
- swaps the gathered full tensors of a sharded model into its parameters while a method's own saver runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import ConfigError, TrainingError

PRESET_DIR = Path(__file__).parent / "accelerate_configs"
STAGING_PREFIX = ".tmp-"  # a directory being written; never a checkpoint (see engine.last_checkpoint)

# name -> (file, what it is); the files are plain `accelerate config` YAML files
PRESETS = {
    "single_gpu": ("single_gpu.yaml", "one process on one GPU"),
    "multi_gpu": ("multi_gpu.yaml", "DDP, one process per GPU on one machine"),
    "fsdp": ("fsdp.yaml", "FSDP full shard, transformer-layer wrapping, full state dict on save"),
    "zero2": ("zero2.yaml", "DeepSpeed ZeRO-2 (optimizer state + gradients sharded)"),
    "zero3": ("zero3.yaml", "DeepSpeed ZeRO-3 (parameters sharded too; 16-bit weights gathered on save)"),
}


def preset_path(name_or_path: str) -> Path:
    """The accelerate config file for a preset name or a path to the user's own file."""
    if name_or_path in PRESETS:
        return PRESET_DIR / PRESETS[name_or_path][0]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in name_or_path:
        if not path.is_file():
            raise ConfigError(f"--accelerate-config: {path}: file not found")
        return path
    raise ConfigError(f"--accelerate-config: unknown preset {name_or_path!r}; expected one of "
                      f"{', '.join(PRESETS)} or the path of an accelerate config file")


def relaunch_command(preset: str, train_argv: list[str], num_processes: int | None = None,
                     extra_launch_args: list[str] | None = None) -> list[str]:
    """``python -m accelerate.commands.launch --config_file FILE [--num_processes N] -m posttrain train ...``."""
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes: expected a positive integer, got {num_processes}")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(preset_path(preset))]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    cmd += list(extra_launch_args or [])
    return cmd + ["-m", "posttrain", "train", *train_argv]


def relaunch(cmd: list[str]) -> int:
    """Run the launcher and return its exit status (the children print their own ``error:`` lines)."""
    if importlib_missing("accelerate"):
        raise ConfigError("--accelerate-config: accelerate is not installed (pip install accelerate)")
    print("launching: " + " ".join(cmd[2:] if cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
                                   else cmd).replace("accelerate.commands.launch", "accelerate launch", 1),
          file=sys.stderr, flush=True)
    try:
        return subprocess.run(cmd, check=False).returncode
    except KeyboardInterrupt:
        return 130


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


# ---------------------------------------------------------------------------------------------------------------
# launcher environment


def launched_world_size() -> int:
    """WORLD_SIZE set by torchrun / accelerate launch / deepspeed (1 when started directly)."""
    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        try:
            value = int(os.environ.get(key, "1"))
        except ValueError:
            continue
        if value > 1:
            return value
    return 1


def is_main_process() -> bool:
    """RANK 0 (or no launcher): the process that prints run-level lines, before any process group exists."""
    return os.environ.get("RANK", "0") in ("0", "")


def has_accelerator() -> bool:
    import torch

    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "is_available"):
        return bool(accel.is_available())
    return torch.cuda.is_available()


def needs_cpu_backend() -> bool:
    """A multi-process launch on a machine without GPUs: the Trainer must use the CPU (gloo) backend.

    Without ``use_cpu`` accelerate only sets up a process group for an accelerator device, and each of the N
    processes would train alone on the whole data set.
    """
    return launched_world_size() > 1 and not has_accelerator()


def check_world_size(args) -> None:
    """Fail fast when a launcher started several processes but the Trainer did not join them."""
    launched = launched_world_size()
    if launched > 1 and args.world_size != launched:
        raise TrainingError(f"launched as {launched} processes but the Trainer set up world size {args.world_size}: "
                            "distributed training was not initialised (check the launcher and the device)")


def check_engine(trainer) -> None:
    """An FSDP / DeepSpeed launch that the Trainer did not honour fails instead of silently running plain DDP
    (accelerate sets FSDP and DeepSpeed up only for GPU-type devices; on CPU processes it falls back to DDP)."""
    for env, enabled, name in (("ACCELERATE_USE_FSDP", trainer.is_fsdp_enabled, "FSDP"),
                               ("ACCELERATE_USE_DEEPSPEED", trainer.is_deepspeed_enabled, "DeepSpeed")):
        if os.environ.get(env, "false").lower() == "true" and not enabled:
            raise TrainingError(f"the launcher asked for {name} but accelerate did not set it up on this device "
                                f"({trainer.args.device.type}); {name} needs GPUs - on CPU use the multi_gpu preset "
                                "or torchrun (DDP over gloo)")


# ---------------------------------------------------------------------------------------------------------------
# atomic directories


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file under ``folder`` (and the directories) to disk."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def commit_directory(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the complete directory ``staged`` to ``final`` by renames (same file system).

    An existing ``final`` is first moved aside and deleted afterwards, so at every moment ``final`` is either the
    old complete directory, absent (between two renames), or the new complete one - never a partial one.
    """
    staged, final = Path(staged), Path(final)
    fsync_tree(staged)
    old = None
    if final.exists():
        old = final.with_name(f"{STAGING_PREFIX}old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staged, final)
    _fsync(str(final.parent))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def rotate_checkpoints(run_dir: str | os.PathLike, save_total_limit: int | None,
                       best_model_checkpoint: str | None = None) -> None:
    """transformers' ``rotate_checkpoints`` (same order and protections: the newest and the best are kept), but
    each deleted checkpoint is first renamed to ``.tmp-deleted-*``, so a run killed while deleting never leaves a
    half-deleted ``checkpoint-N``."""
    from transformers.trainer_utils import sort_checkpoints

    if save_total_limit is None or save_total_limit <= 0:
        return
    checkpoints = sort_checkpoints(str(run_dir), use_mtime=True)
    if len(checkpoints) <= save_total_limit:
        return
    protected = {checkpoints[-1]}
    if best_model_checkpoint is not None:
        protected.add(str(Path(best_model_checkpoint)))
    remaining = len(checkpoints)
    for checkpoint in checkpoints:
        if remaining <= max(save_total_limit, len(protected)):
            break
        if checkpoint not in protected:
            doomed = Path(checkpoint).with_name(f"{STAGING_PREFIX}deleted-{Path(checkpoint).name}")
            if doomed.exists():
                shutil.rmtree(doomed, ignore_errors=True)
            os.replace(checkpoint, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            remaining -= 1


def remove_staging(folder: str | os.PathLike) -> None:
    """Delete directories left by a run killed while writing (``.tmp-*``) under ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(STAGING_PREFIX) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# sharded parameters


_WRAPPER_PARTS = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}


def clean_name(name: str) -> str:
    """A parameter name without the FSDP / activation-checkpointing / compile wrappers' components."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


@contextlib.contextmanager
def full_parameters(model, state_dict: dict | None):
    """While the block runs, ``model``'s parameters hold the full tensors of ``state_dict``.

    Under FSDP and DeepSpeed ZeRO-3 a process holds only a shard of each parameter (ZeRO-3: an empty
    placeholder), so a method that saves its own tensors (the soft prompt P and DePT's A, B) would write shards.
    ``Trainer.save_model`` has already gathered the full state dict on the saving process (FSDP
    ``FULL_STATE_DICT``; ZeRO-3 ``stage3_gather_16bit_weights_on_model_save``); this swaps those tensors into the
    trainable parameters for the duration of the save and puts the shards back afterwards. ``state_dict=None`` (one
    process, DDP, ZeRO-1/2: parameters are whole) changes nothing.
    """
    if state_dict is None:
        yield model
        return
    if not state_dict:
        raise TrainingError("cannot save the adapter: the sharded model gave no full state dict (DeepSpeed ZeRO-3 "
                            "needs stage3_gather_16bit_weights_on_model_save: true, FSDP needs "
                            "fsdp_state_dict_type: FULL_STATE_DICT)")
    swapped = []
    try:
        for name, param in model.named_parameters():
            key = clean_name(name)
            if param.requires_grad and key in state_dict:  # the frozen base is not the method's to save
                swapped.append((param, param.data))
                param.data = state_dict[key].to(device=param.device, dtype=param.dtype)
        yield model
    finally:
        for param, data in swapped:
            param.data = data
