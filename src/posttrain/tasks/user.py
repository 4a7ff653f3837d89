"""Task lookup: the built-in declarations (builtin.yaml) and tasks users declare in their own YAML files.

"Tasks are data, not code" (lm-evaluation-harness style): the 16 LM-BFF tasks of PCP (Gao et al., ACL 2021; Shi &
Lipani, NeurIPS 2023) and four SuperGLUE tasks (for DePT, Shi & Lipani, ICLR 2024) are declared once in
builtin.yaml. A user task is one YAML mapping with the same keys as a built-in one, for example:

    name: my-reviews
    kind: single
    labels: [neg, pos]
    verbalizer: {neg: terrible, pos: great}
    template: "{text_a} It was {mask} ."
    text_to_text: "sentence: {text_a}"
    metrics: [accuracy]
    data:
      files:                       # any source name; read with read_split(task, "files", "train")
        dir: data                  # relative to this YAML file; '{data_root}/...' for the shared data root
        files: {train: train.csv, test: test.csv}
        format: csv
        columns: {text_a: review, label: sentiment}

A task can also start from a built-in declaration and change some keys (``extends``), e.g. a template whose label
slot comes last, for a causal LM that reads the slot's left context only:

    name: RTE-causal
    extends: RTE                   # every key of RTE (files, labels, metrics, ...) unless given here
    template: "{text_a} Question : {text_b} ? Answer : {mask}"
    verbalizer: {not_entailment: "No", entailment: "Yes"}

``get_task("sst2")`` / ``get_task("SST-2")`` / ``get_task("path/to/task.yaml")`` resolve either kind.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path


from ..config.loader import parse_yaml, read_yaml_file
from ..errors import ConfigError
from .spec import Task, task_from_dict

BUILTIN_FILE = "builtin.yaml"


def normalize_name(name: str) -> str:
    """Lookup key of a task name: lower case, letters and digits only ("SST-2" -> "sst2", "MNLI-mm" -> "mnlimm")."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def load_task_file(path: str | Path) -> Task:
    """Load one task declared in a YAML file; relative data folders are resolved against the file's folder."""
    path = Path(path)
    raw = read_yaml_file(path, "task")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of task keys (name, kind, labels, verbalizer, template, ...), "
                          f"got {type(raw).__name__}")
    raw = dict(raw)
    if "extends" in raw:
        raw = _extended(raw, str(path))
    raw.setdefault("base_dir", str(path.resolve().parent))
    return task_from_dict(raw, str(path))


def _extended(raw: dict, where: str) -> dict:
    """A built-in declaration's keys, replaced by the ones the file gives (a new ``name`` is required)."""
    base_name = raw.pop("extends")
    if not isinstance(base_name, str):
        raise ConfigError(f"{where}: extends: expected the name of a built-in task, got {base_name!r}")
    if "name" not in raw:
        raise ConfigError(f"{where}: name: required with extends (a new name, so runs of the two tasks differ)")
    base_task = _builtin_name(base_name)
    if base_task is None:
        raise ConfigError(f"{where}: extends: unknown built-in task '{base_name}'{_builtin_hint(base_name)}")
    if _builtin_name(str(raw["name"])) is not None:
        raise ConfigError(f"{where}: name: '{raw['name']}' is a built-in task's name; choose a new one")
    entry = next(e for e in _builtin_raw() if e["name"] == base_task)
    # a deep copy: YAML anchors share their objects between entries
    base = json.loads(json.dumps({k: v for k, v in entry.items() if k not in ("name", "aliases")}))
    base["origin"] = f"extends {base_task} ({base.get('origin', '')})".replace(" ()", "")
    return {**base, **raw}


@lru_cache(maxsize=1)
def _builtin_raw() -> list[dict]:
    """The entries of builtin.yaml as parsed (``_extended`` copies them; ``_builtin`` checks and builds them)."""
    source = resources.files(__package__).joinpath(BUILTIN_FILE)
    return parse_yaml(source.read_text(encoding="utf-8"), f"posttrain/tasks/{BUILTIN_FILE}")["tasks"]


@lru_cache(maxsize=1)
def _builtin() -> tuple[dict[str, Task], dict[str, str]]:
    tasks: dict[str, Task] = {}
    lookup: dict[str, str] = {}
    for i, entry in enumerate(_builtin_raw()):
        task = task_from_dict(entry, f"posttrain/tasks/{BUILTIN_FILE}: tasks[{i}]")
        tasks[task.name] = task
        for key in [task.name, *task.aliases]:
            norm = normalize_name(key)
            if norm in lookup:
                raise ConfigError(f"posttrain/tasks/{BUILTIN_FILE}: '{key}' of {task.name} clashes with "
                                  f"{lookup[norm]}")
            lookup[norm] = task.name
    return tasks, lookup


def builtin_tasks() -> dict[str, Task]:
    """Name -> Task for every built-in declaration, in file order (a fresh dict; the Task objects are shared)."""
    return dict(_builtin()[0])


def task_names() -> list[str]:
    return list(_builtin()[0])


def get_task(name_or_path: str | Path | Task) -> Task:
    """A built-in task by name or alias (any case and punctuation: "sst2", "SST-2") or a task YAML file."""
    if isinstance(name_or_path, Task):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_task_file(text)
    name = _builtin_name(text)
    if name is not None:
        return _builtin()[0][name]
    raise ConfigError(f"unknown task '{text}'{_builtin_hint(text)} (built-in: {', '.join(task_names())}; or give a "
                      "task .yaml file)")


def _builtin_name(text: str) -> str | None:
    """The built-in task a name or alias refers to (any case and punctuation), or None."""
    return _builtin()[1].get(normalize_name(text))


def _builtin_hint(text: str) -> str:
    lookup = _builtin()[1]
    close = difflib.get_close_matches(normalize_name(text), list(lookup), n=1, cutoff=0.5)
    return f"; did you mean '{lookup[close[0]]}'?" if close else ""
