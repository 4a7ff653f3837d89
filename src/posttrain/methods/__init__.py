"""One module per method. ``ADAPTERS`` maps ``adapter.type`` to the function that makes a model trainable."""

from . import full_finetune, lora

ADAPTERS = {"full": full_finetune.apply, "lora": lora.apply}
