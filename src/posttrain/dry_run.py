"""``posttrain train CONFIG --dry-run``: everything a run would check and build, then stop before training.

It reads and tokenises the data, checks the model's family against the run (``support``), loads and wraps the
model as the run would (``engine.load_for_run`` + the method's ``wrap``), and reports what the run would train:
trainable parameters per optimizer group (DePT's two learning rates, or one group), token-length statistics of the
training and held-out rows, the optimizer steps, and an estimate of the memory the weights, their gradients and
AdamW's two moments take (fp32 moments and gradients for trainable parameters; activations, which depend on batch
shape and attention backend, are not included). Nothing is written: no run directory, no checkpoint.
"""

from __future__ import annotations

import math
import statistics

from .config import RunConfig
from .engine import load_for_run
from .registry import method_named


def _lengths(dataset) -> dict | None:
    if dataset is None or "input_ids" not in dataset.column_names:
        return None
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return {"rows": len(lengths), "min": min(lengths), "median": statistics.median(lengths), "max": max(lengths),
            "mean": round(sum(lengths) / len(lengths), 1), "tokens": sum(lengths)}


def _groups(model, cfg: RunConfig) -> list[dict]:
    groups_of = method_named(cfg.adapter.type).optimizer_groups
    if groups_of is None:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"name": "all trainable", "lr": cfg.train.learning_rate, "parameters": sum(p.numel() for p in params)}]
    return [{"name": g.get("name", f"group {i}"), "lr": g["lr"], "parameters": sum(p.numel() for p in g["params"])}
            for i, g in enumerate(groups_of(model, cfg))]


def plan(cfg: RunConfig, model=None, tokenizer=None) -> dict:
    """What ``engine.train(cfg)`` would train, without training or writing anything."""
    cfg, model, tokenizer, data, packing = load_for_run(cfg, model, tokenizer)
    model = method_named(cfg.adapter.type).wrap(model, cfg, tokenizer)
    seen, total, trainable, weight_bytes = set(), 0, 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        weight_bytes += p.numel() * p.element_size()
        trainable += p.numel() if p.requires_grad else 0
    train_rows = len(data.train)
    per_step = cfg.train.per_device_batch_size * cfg.train.gradient_accumulation_steps
    steps = cfg.train.max_steps if cfg.train.max_steps > 0 else math.ceil(train_rows / per_step) * cfg.train.num_epochs
    return {
        "model": type(model).__name__, "parameters": total, "trainable": trainable,
        "groups": _groups(model, cfg), "train": _lengths(data.train), "eval": _lengths(data.eval),
        "optimizer_steps": steps, "examples_per_step": per_step, "packing": packing,
        "memory_mib": {"weights": round(weight_bytes / 2**20, 1),
                       "gradients_and_adamw": round(trainable * 12 / 2**20, 1)},
    }


def format_plan(result: dict) -> str:
    lines = [f"model: {result['model']}, {result['parameters']:,} parameters, {result['trainable']:,} trainable"]
    lines += [f"  group {g['name']}: {g['parameters']:,} parameters at lr {g['lr']:g}" for g in result["groups"]]
    for split in ("train", "eval"):
        s = result[split]
        if s:
            lines.append(f"{split}: {s['rows']} rows, tokens per row min {s['min']} / median {s['median']} / "
                         f"max {s['max']} (mean {s['mean']}), {s['tokens']:,} tokens")
    lines.append(f"optimizer steps: {result['optimizer_steps']} of {result['examples_per_step']} examples")
    packing = result["packing"]
    lines.append(f"batches: {'packed (padding-free)' if packing['used'] else 'padded'}"
                 + (f" ({packing['why_off']})" if "why_off" in packing else ""))
    m = result["memory_mib"]
    lines.append(f"memory (estimate, activations excluded): weights {m['weights']} MiB + gradients and AdamW state "
                 f"{m['gradients_and_adamw']} MiB")
    lines.append("dry run: nothing trained, nothing written")
    return "\n".join(lines)
