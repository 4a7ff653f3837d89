"""Files of soft prompts / DePT adapters (``methods/soft_prompt.py``): writing, reading, checking, exporting.

An adapter directory holds ``soft_prompt_config.json`` (m, r, s, alpha, offset positions, model kind and width)
and ``soft_prompt.safetensors`` (``prompt`` = P, ``offset_a`` = A, ``offset_b`` = B, and for a classification head
``head.<module>.<parameter>``, e.g. ``head.bert.pooler.dense.weight``). Both are written atomically
(temporary file + rename). Loading checks every tensor's presence and shape against the config and the base
model, so a mismatched adapter fails with a one-line error instead of a silent broadcast.

Vanilla prompt tuning (r = 0) can also be exported in PEFT's PROMPT_TUNING format (``adapter_config.json`` +
``adapter_model.safetensors`` with the ``prompt_embeddings`` tensor), loadable with ``PeftModel.from_pretrained``.
DePT has no PEFT format (its offset is not a PEFT tuner), so it is not exported there.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..io_utils import atomic_write_json

CONFIG_NAME = "soft_prompt_config.json"
WEIGHTS_NAME = "soft_prompt.safetensors"
FORMAT_VERSION = 1


def is_soft_prompt_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def adapter_config(model) -> dict:
    """What ``soft_prompt_config.json`` records of a ``SoftPromptModel``."""
    return {
        "format": "posttrain-soft-prompt",
        "version": FORMAT_VERSION,
        "method": "dept" if model.rank else "prompt_tuning",
        "num_virtual_tokens": model.num_virtual_tokens,
        "dept_rank": model.rank,
        "dept_max_length": model.max_length,
        "dept_alpha": model.alpha,
        "offset_positions": model.offset_positions,
        "model_kind": model.kind,
        "hidden_size": model.prompt.shape[1],
        "base_model_class": type(model.base).__name__,
        "head_modules": list(model.head_names),
        "base_model": getattr(model.base.config, "_name_or_path", None),
    }


def save_soft_prompt(model, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_save_tensors(dict(model.trainable_parameters()), directory / WEIGHTS_NAME, {"format": "pt"})
    atomic_write_json(directory / CONFIG_NAME, adapter_config(model))


def config_path(directory: str | Path) -> Path:
    return Path(directory) / CONFIG_NAME


def read_config(directory: str | Path) -> dict:
    """The adapter's ``soft_prompt_config.json``, with its required fields checked."""
    path = config_path(directory)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable soft-prompt config ({exc})") from None
    for key in ("num_virtual_tokens", "dept_rank", "dept_max_length", "dept_alpha", "offset_positions", "hidden_size"):
        if key not in cfg:
            raise ModelLoadError(f"{path}: missing field {key!r}")
    return cfg


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = directory / WEIGHTS_NAME
    if not path.is_file():
        pickles = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
        hint = f" (found {pickles[0]}; pickle files are not loaded)" if pickles else ""
        raise ModelLoadError(f"{path}: missing{hint}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise ModelLoadError(f"{path}: not a valid safetensors file ({exc})") from None


LEGACY_HEAD_MODULES = ("classifier", "score")  # all an adapter saved before ``head_modules`` was recorded holds


def _saved_heads(directory: Path) -> tuple[str, ...] | None:
    """The head modules the adapter in ``directory`` saved; None where there is no config to say."""
    if not config_path(directory).is_file():
        return None
    return tuple(read_config(directory).get("head_modules", LEGACY_HEAD_MODULES))


def load_weights(model, directory: str | Path) -> None:
    """Copy P (and A, B, and the head's weights) from ``directory`` into ``model``, checking names and shapes.

    A head module the adapter's config says it did not save (an adapter written before the pooler/pre_classifier
    were saved) keeps the base model's weights: that is what it was trained and evaluated with."""
    directory = Path(directory)
    tensors = _read_tensors(directory)
    saved_heads = _saved_heads(directory)
    expected = model.trainable_parameters()
    for name in [n for n in expected if n not in tensors and n.startswith("head.") and saved_heads is not None]:
        if not any(name.startswith(f"head.{head}.") for head in saved_heads):
            del expected[name]
    for name, param in expected.items():
        if name not in tensors:
            raise ModelLoadError(f"{directory / WEIGHTS_NAME}: missing tensor {name!r}")
        if tuple(tensors[name].shape) != tuple(param.shape):
            raise ModelLoadError(
                f"{directory / WEIGHTS_NAME}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"expected {tuple(param.shape)}"
            )
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name].to(param))


def export_peft_prompt_tuning(model, directory: str | Path, base_model_name: str | None = None):
    """Write P in PEFT's PROMPT_TUNING adapter format (vanilla prompt tuning only)."""
    if model.rank:
        raise ModelLoadError("PEFT export: DePT's offset has no PEFT equivalent; only prompt_tuning exports")
    if model.head_names:
        raise ModelLoadError(f"PEFT export: the trained classification head ({', '.join(model.head_names)}) has no "
                             "place in PEFT's PROMPT_TUNING files; use the posttrain adapter directory")
    task_type = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "encoder": "FEATURE_EXTRACTION"}[model.kind]
    config = model.base.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft_config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": task_type,
        "num_virtual_tokens": model.num_virtual_tokens,
        "token_dim": model.prompt.shape[1],
        "num_transformer_submodules": 1,
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": base_model_name or getattr(config, "_name_or_path", None),
        "inference_mode": True,
    }
    _atomic_save_tensors({"prompt_embeddings": model.prompt}, directory / "adapter_model.safetensors",
                         {"format": "pt"})
    atomic_write_json(directory / "adapter_config.json", peft_config)
