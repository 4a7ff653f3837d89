"""Models: loading any supported architecture (``loading``), the GGUF conversion cache (``gguf``) and what
family a model belongs to (``families``)."""

from .families import classification_head_names, config_kind, model_kind, resolve_head, wrapper_chain
from .gguf import cache_dir, converted_dir, default_gguf_path, ensure_converted
from .loading import HEADS, describe_model, load_model_and_tokenizer, load_model_config, load_tokenizer

__all__ = ["HEADS", "cache_dir", "classification_head_names", "config_kind", "converted_dir", "default_gguf_path",
           "describe_model", "ensure_converted", "load_model_and_tokenizer", "load_model_config", "load_tokenizer",
           "model_kind", "resolve_head", "wrapper_chain"]
