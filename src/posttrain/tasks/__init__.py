"""Task declarations: templates, verbalizers, metrics and data locations ("tasks are data, not code").

The 16 LM-BFF tasks of PCP (Gao et al., ACL 2021; Shi & Lipani, NeurIPS 2023) and SuperGLUE BoolQ, CB, RTE and WiC
(for DePT, Shi & Lipani, ICLR 2024) are declared in builtin.yaml; users declare their own in YAML (see
``load_task_file``). ``posttrain tasks list`` / ``posttrain tasks show NAME`` print them.
"""

from .readers import (
    ENV_VAR, default_data_root, find_file, read_kshot, read_pool, read_split, read_superglue,
)
from .render import label_word, label_words, render_template, render_text_to_text, soft_target
from .spec import DataSpec, Regression, Task, canonical_label, task_from_dict
from .user import builtin_tasks, get_task, load_task_file, normalize_name, task_names

__all__ = [
    "Task", "DataSpec", "Regression", "task_from_dict", "canonical_label",
    "render_template", "render_text_to_text", "label_words", "label_word", "soft_target",
    "get_task", "load_task_file", "builtin_tasks", "task_names", "normalize_name",
    "read_kshot", "read_pool", "read_superglue", "read_split", "find_file", "default_data_root", "ENV_VAR",
]
