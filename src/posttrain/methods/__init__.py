"""One file per method; the trainable-parameter methods (``adapter.type``) are registered here, once.

The engine, config validation, run loading and run metadata find a method through ``registry.method_named``;
adding a method means adding its file and one line below.
"""

from ..registry import register
from . import dept, full_finetune, lora, prompt_tuning

for _module in (full_finetune, lora, prompt_tuning, dept):
    register(_module.METHOD)
