"""Export StepGame as an lm-evaluation-harness task: ``posttrain stepgame export-lm-eval``.

StepGame (Shi, Zhang, Lipani, "StepGame: A New Benchmark for Robust Multi-Hop Spatial Reasoning in Texts",
AAAI 2022) has no task in lm-evaluation-harness. This writes one, with the prompt of posttrain's MC mode
(``prompts.LM_EVAL_DOC_TO_TEXT`` renders to ``prompts.example_prompt``), so both harnesses score the same
continuations and their accuracies are comparable::

    DIR/stepgame.yaml                   group "stepgame" over every subtask (accuracy weighted by size)
    DIR/_stepgame_template_yaml         shared fields: output_type multiple_choice, doc_to_text, doc_to_choice ...
    DIR/stepgame_{kind}_k{k}.yaml       one task per (kind, k), e.g. stepgame_noise_k7
    DIR/data/{kind}_k{k}.jsonl          its examples: story (sentences joined by spaces), question, label, gold
    DIR/data/fewshot.jsonl              few-shot pool sampled from training files (lm-eval's ``train`` split)

    lm_eval --model hf --model_args pretrained=MODEL_DIR --tasks stepgame --include_path DIR [--num_fewshot N]

``data_files`` are absolute paths (lm-eval resolves them from its working directory): re-export after moving DIR.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_text
from . import prompts
from .harness import kind_of, load_files, load_shot_pool

TEMPLATE_NAME = "_stepgame_template_yaml"


def _doc(ex: dict, path: Path) -> dict:
    return {"id": ex["id"], "story": prompts.story_text(ex), "question": ex["question"].strip(), "label": ex["label"],
            "gold": prompts.ANSWER_WORDS.index(ex["label"]), "k_hop": ex.get("k_hop"), "source": str(path)}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "x"


def template_config() -> dict:
    """The fields shared by every subtask (the multiple-choice definition)."""
    return {
        "dataset_path": "json",
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": prompts.LM_EVAL_DOC_TO_TEXT,
        "doc_to_choice": list(prompts.ANSWER_WORDS),
        "doc_to_target": "gold",
        "target_delimiter": prompts.TARGET_DELIMITER,
        "fewshot_delimiter": prompts.FEWSHOT_DELIMITER,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "source": "posttrain stepgame export-lm-eval (Shi, Zhang, Lipani, AAAI 2022)"},
    }


def export_lm_eval(out_dir, files, *, limit: int = 0, ks=None, shots_from=(), fewshot_pool: int = 1000,
                   seed: int = 0) -> dict:
    """Write the task folder; returns {"tasks": [...], "n": {...}, "dir": ...}."""
    import yaml

    if fewshot_pool < 0:
        raise ConfigError(f"--fewshot-pool {fewshot_pool}: must be >= 0")
    if limit < 0:
        raise ConfigError(f"--limit {limit}: must be >= 0")
    out = Path(out_dir).resolve()
    data = load_files(files, limit, ks)
    groups: dict[str, list[dict]] = defaultdict(list)
    for path, examples in data:
        for ex in examples:
            groups[f"{_slug(kind_of(path))}_k{ex.get('k_hop') or 0}"].append(_doc(ex, path))
    pool_file = None
    if shots_from and fewshot_pool:
        pool = load_shot_pool(shots_from, [p for p, _ in data])
        picked = random.Random(seed).sample(pool, min(fewshot_pool, len(pool)))
        pool_file = out / "data" / "fewshot.jsonl"
        atomic_write_text(pool_file, "".join(json.dumps(_doc(ex, Path("train"))) + "\n" for ex in picked))
    template = template_config()
    if pool_file:
        template.update({"training_split": "train", "fewshot_split": "train"})
    class Dumper(yaml.SafeDumper):  # multi-line prompts as readable literal blocks
        pass

    Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                style="|" if "\n" in s else None))
    dump = lambda obj: yaml.dump(obj, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)  # noqa: E731
    atomic_write_text(out / TEMPLATE_NAME, dump(template))
    tasks, sizes = [], {}
    for name in sorted(groups, key=lambda g: (g.rsplit("_k", 1)[0], int(g.rsplit("_k", 1)[1]))):
        task = f"stepgame_{name}"
        data_path = out / "data" / f"{name}.jsonl"
        atomic_write_text(data_path, "".join(json.dumps(doc) + "\n" for doc in groups[name]))
        data_files = {"test": str(data_path)}
        if pool_file:
            data_files["train"] = str(pool_file)
        atomic_write_text(out / f"{task}.yaml", dump({"include": TEMPLATE_NAME, "task": task,
                                                      "dataset_kwargs": {"data_files": data_files}}))
        tasks.append(task)
        sizes[task] = len(groups[name])
    header = (f"# StepGame for lm-evaluation-harness, written by posttrain stepgame export-lm-eval.\n"
              f"# lm_eval --model hf --model_args pretrained=MODEL_DIR --tasks stepgame --include_path {out}\n")
    atomic_write_text(out / "stepgame.yaml", header + dump({
        "group": "stepgame", "task": tasks,
        "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": True}
                                  for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0}}))
    return {"dir": str(out), "tasks": tasks, "n": sizes, "fewshot_pool": str(pool_file) if pool_file else None}
