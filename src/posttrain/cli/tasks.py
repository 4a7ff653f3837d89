"""``posttrain tasks`` subcommands: list the declared tasks and show one with a rendered example.

    posttrain tasks list [--data-root DIR]
    posttrain tasks show NAME|TASK.yaml [--data-root DIR] [--source kshot] [--split train] [--seed 13]
    posttrain tasks eval RUN_DIR|RECIPE.yaml [key=value ...] [--split test] [--out F.json] [--predictions F.jsonl]

The tasks are the LM-BFF/PCP few-shot tasks (Gao et al., ACL 2021; Shi & Lipani, NeurIPS 2023) and SuperGLUE tasks
for DePT (Shi & Lipani, ICLR 2024). Wire into the main parser with ``register(subparsers)``; handlers raise
``PosttrainError`` subclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..io_utils import atomic_write_json, atomic_write_text
from ..tasks.readers import ENV_VAR, default_data_root, find_file, read_split
from ..tasks.render import render_template, render_text_to_text
from ..tasks.spec import Task
from ..tasks.user import builtin_tasks, get_task

SOURCES = ("kshot", "pool", "superglue")


def _seeded(task: Task, source: str, split: str) -> bool:
    return any("{seed}" in name for name in task.data[source].files[split])


def data_status(task: Task, source: str, root) -> str:
    """Short presence summary of one source: "5 seeds + test", "train, dev", "-" (absent) or "" (not declared)."""
    if source not in task.data:
        return ""
    spec = task.data[source]
    if spec.seeds and any(_seeded(task, source, split) for split in spec.files):
        seeds = [s for s in spec.seeds
                 if all(find_file(task, source, split, root=root, seed=s) for split in spec.files
                        if split != "test" and _seeded(task, source, split))]
        if not seeds:
            return "-"
        has_test = "test" in spec.files and find_file(task, source, "test", root=root, seed=seeds[0]) is not None
        return f"{len(seeds)} seeds" + (" + test" if has_test else ", no test")
    present = [split for split in spec.files if find_file(task, source, split, root=root) is not None]
    return ", ".join(present) if present else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _cmd_list(args) -> int:
    root = args.data_root or default_data_root()
    rows = [["NAME", "KIND", "LABELS", "METRIC", "K-SHOT", "POOL", "SUPERGLUE"]]
    for task in builtin_tasks().values():
        kind = task.kind + (", regression" if task.is_regression else "")
        labels = f"{len(task.labels)}: " + "/".join(task.verbalizer[label][0] for label in task.labels)
        rows.append([task.name, kind, labels, ", ".join(task.metrics),
                     *[data_status(task, source, root) for source in SOURCES]])
    print(_table(rows))
    print(f"\ndata root: {root} (set ${ENV_VAR} or --data-root); '-' = declared but not present")
    return 0


def declaration(task: Task) -> dict:
    """The task as a plain mapping (what a user YAML for it would contain)."""
    out = dataclasses.asdict(task)
    out.pop("base_dir")
    out["verbalizer"] = {k: v[0] if len(v) == 1 else v for k, v in out["verbalizer"].items()}
    for spec in out["data"].values():
        spec["files"] = {k: v[0] if len(v) == 1 else v for k, v in spec["files"].items()}
        if spec["format"] in ("json", "jsonl"):
            spec.pop("header")
        for key in ("seeds", "unlabeled", "missing"):
            if not spec[key]:
                spec.pop(key)
    for key in ("aliases", "positive_label", "regression"):
        if not out[key]:
            out.pop(key)
    return out


def _first_example(task: Task, root, args) -> tuple[str, dict] | None:
    sources = [args.source] if args.source else list(task.data)
    for source in sources:
        if source not in task.data:
            raise ConfigError(f"task '{task.name}' declares no '{source}' data (it has: {', '.join(task.data)})")
        spec = task.data[source]
        splits = [args.split] if args.split else list(spec.files)
        for split in splits:
            if split not in spec.files:
                raise ConfigError(f"task '{task.name}': {source} has no split '{split}' "
                                  f"(splits: {', '.join(spec.files)})")
            seed = (args.seed if args.seed is not None else spec.seeds[0] if spec.seeds else 13) \
                if _seeded(task, source, split) else None
            if find_file(task, source, split, root=root, seed=seed) is None:
                continue
            rows = read_split(task, source, split, root=root, seed=seed)
            where = f"{source} {split}" + (f", seed {seed}" if seed is not None else "")
            return where, rows[0]
    return None


def _cmd_show(args) -> int:
    task = get_task(args.task)
    root = args.data_root or default_data_root()
    print(f"# {task.name}: {task.description}" if task.description else f"# {task.name}")
    print(yaml.safe_dump(declaration(task), sort_keys=False, allow_unicode=True, width=120,
                         default_flow_style=None).rstrip())
    found = _first_example(task, root, args)
    if found is None:
        print(f"\n(no data of {task.name} under {root}; set ${ENV_VAR} or --data-root)")
        return 0
    where, example = found
    print(f"\nfirst example ({where}):")
    for key, value in example.items():
        print(f"  {key}: {value!r}")
    print(f"template, mask:       {render_template(task, example, '<mask>')}")
    if example.get("label") is not None:
        source_input, target = render_text_to_text(task, example)
        if not task.is_regression:
            print(f"template, gold word:  {render_template(task, example, target)}")
        print(f"text-to-text input:   {source_input}")
        print(f"text-to-text target:  {target}")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``tasks`` (with ``list``, ``show`` and ``eval``) to a parser's subparsers."""
    p = subparsers.add_parser(
        "tasks", help="list the declared tasks, show one with a rendered example, score a run on one",
        description="Task declarations: template, verbalizer, metrics and data files of each task.")
    sub = p.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    lst = sub.add_parser("list", help="table of the built-in tasks and whether their data is present",
                         description="Name, kind, labels, metrics and data presence of every built-in task.")
    lst.add_argument("--data-root", help=f"data root (default ${ENV_VAR}, else ../shared/data)")
    lst.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", help="a task's declaration and its first example rendered",
                          description="Print the declaration of NAME (a built-in name or a task .yaml) and the "
                          "first example of its data rendered with the template and the text-to-text form.")
    show.add_argument("task", metavar="NAME", help="built-in task (sst2, SST-2, mnli-mm, ...) or a task .yaml file")
    show.add_argument("--data-root", help=f"data root (default ${ENV_VAR}, else ../shared/data)")
    show.add_argument("--source", help="data source to take the example from (kshot, pool, superglue, ...)")
    show.add_argument("--split", help="split to take the example from (default: the first present)")
    show.add_argument("--seed", type=int, help="k-shot seed (default: the first declared)")
    show.set_defaults(func=_cmd_show)

    _register_eval(sub)
    return p


def _cmd_eval(args) -> int:
    from ..evaluation.task_split_eval import evaluate_split, load_task_model, scored_examples, task_config

    cfg = task_config(args.spec, args.overrides, args.split)
    name = get_task(cfg.task.name).name  # an unknown task fails here, before the model loads
    examples = scored_examples(cfg, args.split)  # a bad data file fails here too
    model, tokenizer, what = load_task_model(args.spec, cfg)
    metrics, records = evaluate_split(cfg, model, tokenizer, args.split, f"{name} {args.split}", examples)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "examples" and not math.isnan(v))
    print(f"{name} {args.split} ({getattr(cfg.task, args.split)}, {metrics['examples']} examples), {what}: {shown}")
    if args.out:
        atomic_write_json(Path(args.out), {"spec": args.spec, "model": what, "task": name,
                                          "split": args.split, "source": getattr(cfg.task, args.split),
                                          "objective": cfg.task.objective, "form": cfg.task.form,
                                          "overrides": list(args.overrides), "metrics": metrics})
    if args.predictions:
        atomic_write_text(Path(args.predictions), "".join(json.dumps(r) + "\n" for r in records))
    return 0


def _register_eval(sub) -> None:
    """``tasks eval`` under the ``tasks`` command's subparsers."""
    p = sub.add_parser("eval", help="score a run, or a recipe's untrained model (zero-shot), on a task split",
                       description="Score a finished run (its config.yaml and final/ weights) or a recipe's base "
                       "model without training (zero-shot) on the test (or eval) split of the task, with the run's "
                       "template, objective and metrics.")
    p.add_argument("spec", metavar="RUN_DIR|RECIPE.yaml", help="a finished run directory or a training recipe")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. task.max_test_examples=0")
    p.add_argument("--split", default="test", choices=("test", "eval"), help="which split of the task (default test)")
    p.add_argument("--out", metavar="FILE.json", help="write the metrics (and what was scored) as JSON")
    p.add_argument("--predictions", metavar="FILE.jsonl", help="write one line per example: gold, prediction, "
                   "label probabilities")
    p.set_defaults(func=_cmd_eval)
