"""``posttrain export RUN_DIR --to peft|merged|standalone --out DIR``: a finished run in the form another tool loads.

- ``peft``: an adapter directory ``peft.PeftModel.from_pretrained(base, DIR)`` loads. Prompt tuning becomes PEFT's
  ``PROMPT_TUNING`` adapter (the soft prompt P as ``prompt_embeddings``); a LoRA run's ``final/`` already is a PEFT
  adapter and is copied. DePT has no PEFT counterpart (its position-wise offset), nor has a full fine-tune (it is a
  whole model): refused, naming the form that works.
- ``merged``: a complete transformers model directory (safetensors + tokenizer) ``AutoModel*.from_pretrained`` loads
  with the same logits: LoRA merged into its base weights (``merge_and_unload``; a trained classification head,
  PEFT's ``modules_to_save``, merges with it), a full fine-tune copied. A soft prompt cannot be merged into weights
  (it adds input positions): refused.
- ``standalone``: a self-contained run directory for any method: ``base/`` (the base model, safetensors),
  ``final/`` (the run's weights or adapter) and ``config.yaml`` pointing at ``base`` relative to itself, so
  ``posttrain.load_run(DIR)``, ``posttrain generate --model DIR`` and ``posttrain tasks eval DIR`` work after the
  folder is moved or copied to another machine. docs/api.md shows how to apply a DePT adapter from it with plain
  transformers.

Every refusal happens before anything is written; the output directory must not exist (never overwritten). Each
export holds a model card (``README.md``, ``hub.model_card``); ``--push-to-hub REPO`` uploads it (``hub.py``).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from .config import load_config, write_config
from .errors import ConfigError
from .generation import is_run_dir
from .hub import model_card

FORMS = ("peft", "merged", "standalone")


def _check(run_dir: Path, form: str, out: Path):
    if not is_run_dir(run_dir):
        raise ConfigError(f"{run_dir}: not a finished run directory (config.yaml and final/)")
    if form not in FORMS:
        raise ConfigError(f"--to: expected one of {', '.join(FORMS)}, got {form!r}")
    if out.exists():
        raise ConfigError(f"--out: {out} exists; choose a new directory (an export never overwrites)")
    cfg = load_config(run_dir / "config.yaml")
    method = cfg.adapter.type
    refusals = {
        ("peft", "dept"): "DePT's position-wise offset has no PEFT counterpart; use --to standalone",
        ("peft", "full"): "a full fine-tune is a whole model, not a PEFT adapter; use --to merged",
        ("merged", "prompt_tuning"): "a soft prompt adds input positions and cannot be merged into weights; use "
                                     "--to peft or --to standalone",
        ("merged", "dept"): "a soft prompt and DePT's offset cannot be merged into weights; use --to standalone",
    }
    if (form, method) in refusals:
        raise ConfigError(f"--to {form}: {refusals[(form, method)]}")
    return cfg


def export_run(run_dir: str | Path, form: str, out: str | Path) -> Path:
    """Write ``run_dir``'s final weights to ``out`` in ``form`` (see the module docstring); returns ``out``."""
    from .api import load_run

    run_dir, out = Path(run_dir), Path(out)
    cfg = _check(run_dir, form, out)
    staging = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if form == "standalone":
            _standalone(run_dir, cfg, staging)
        elif form == "peft" and cfg.adapter.type == "lora":
            shutil.copytree(run_dir / "final", staging)
        else:
            model, tokenizer = load_run(run_dir, precision="none")  # the weights, not the run's autocast
            if form == "peft":  # prompt tuning
                from .methods.soft_prompt_io import export_peft_prompt_tuning

                export_peft_prompt_tuning(model, staging, base_model_name=str(cfg.model.name_or_path))
            else:  # merged: LoRA folded into the base weights, or a full fine-tune as it is
                merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
                merged.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(model_card(run_dir, form, cfg))
        staging.rename(out)  # the directory appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _standalone(run_dir: Path, cfg, staging: Path) -> None:
    """base/ = the run's base model as loaded (GGUF dequantised, hub id resolved), final/ copied, config.yaml with
    ``model.name_or_path: base`` (read relative to the run directory)."""
    from .models import load_model_and_tokenizer

    staging.mkdir(parents=True)
    shutil.copytree(run_dir / "final", staging / "final")
    if (run_dir / "run_meta.json").is_file():  # its precision: the moved run reloads and scores as the run did
        shutil.copy2(run_dir / "run_meta.json", staging / "run_meta.json")
    if cfg.adapter.type == "full":  # final/ is the whole model: it is its own base
        moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path="final", gguf_file=None))
        write_config(moved, staging / "config.yaml")
        return
    base, tokenizer = load_model_and_tokenizer(dataclasses.replace(cfg.model, head="auto"), for_training=False)
    base.save_pretrained(staging / "base", safe_serialization=True)
    tokenizer.save_pretrained(staging / "base")
    moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path="base", gguf_file=None))
    write_config(moved, staging / "config.yaml")
