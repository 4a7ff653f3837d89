"""The few-shot grid's results: cell states, best-dev selection, statistics and OUT/grid_results.{json,md,png}.

Cells are ``pipelines.grid.Cell`` values and ``grid`` a ``GridConfig``; this module reads them, never builds them.

The table cell of (method, task) is mean_s test(s, h*(s)) ± std_s test(s, h*(s)) with h*(s) the best-dev grid point
of seed s (selection and statistics below); the Markdown adds the selected cell of every seed, failed
and stale cells; the PNG shows the means with std error bars and every seed's value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Optional

import yaml

from ..config import to_dict
from ..io_utils import atomic_write_json, atomic_write_text


SHORT = {"train.learning_rate": "lr", "adapter.prompt_learning_rate": "plr", "adapter.offset_learning_rate": "olr",
         "train.per_device_batch_size": "bs", "train.max_steps": "steps", "train.weight_decay": "wd"}


def _fmt(value) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)


def _axes_tag(axes: dict) -> str:
    return "_".join(f"{SHORT.get(k, k.split('.')[-1])}{_fmt(v)}" for k, v in axes.items()) or "default"


def cell_state(cell) -> tuple[str, dict]:
    """("done", final metrics) | ("failed", {"error"}) | ("partial", {"checkpoint"}) | ("pending", {})."""
    for state, name in (("done", "final_metrics.json"), ("failed", "cell_error.json")):
        if (cell.run_dir / name).is_file():
            return state, json.loads((cell.run_dir / name).read_text(encoding="utf-8"))
    steps = [int(p.name[11:]) for p in (cell.run_dir / "checkpoints").glob("checkpoint-*") if p.name[11:].isdigit()]
    if steps:
        return "partial", {"checkpoint": str(cell.run_dir / "checkpoints" / f"checkpoint-{max(steps)}")}
    return ("partial", {}) if cell.run_dir.is_dir() else ("pending", {})


def dev_value(metrics: dict, metric: str) -> tuple[Optional[str], Optional[float]]:
    """The cell's dev score: ``best_eval_<m>`` (best weights kept by the engine) if present, else ``eval_<m>``."""
    for key in (f"best_eval_{metric}", f"eval_{metric}"):
        if isinstance(value := metrics.get(key), (int, float)) and math.isfinite(value):
            return key, float(value)
    return None, None


def mean_std(values: list[float], std: str = "population") -> tuple[float, float]:
    """Mean and std (population: ddof 0, as LM-BFF's numpy .std(); sample: ddof 1) of a non-empty list."""
    n, ddof = len(values), 1 if std == "sample" else 0
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - ddof)) if n > ddof else 0.0


def select(cells: list, states: dict, std: str = "population") -> tuple[list[dict], dict]:
    """Per (method, task, seed): the done cell with the best dev value (ties: the first in grid order, as LM-BFF's
    gather_result.py); per (method, task): mean ± std over seeds of the chosen cells' test metric."""
    groups: dict = {}
    for cell in cells:
        groups.setdefault((cell.method, cell.task, cell.seed), []).append(cell)
    chosen, summary = [], {}
    for (method, task, seed), members in groups.items():
        best = None
        for cell in members:
            state, metrics = states[cell.run_dir]
            key, value = dev_value(metrics, cell.dev_metric) if state == "done" else (None, None)
            score = None if key is None else (-value if "loss" in cell.dev_metric else value)
            if score is not None and (best is None or score > best[0]):
                best = (score, cell, key, value, metrics)
        if best is None:
            continue
        _, cell, key, value, metrics = best
        test_key = f"test_{cell.test_metric}"
        chosen.append({"method": method, "task": task, "seed": seed, "axes": cell.axes, "run_dir": str(cell.run_dir),
                       "dev_key": key, "dev": value, "test_key": test_key, "test": metrics.get(test_key),
                       "complete": all(states[c.run_dir][0] in ("done", "failed") for c in members)})
        entry = summary.setdefault(method, {}).setdefault(task, {"metric": test_key, "seeds": [], "values": []})
        if isinstance(metrics.get(test_key), (int, float)):
            entry["seeds"].append(seed)
            entry["values"].append(metrics[test_key])
    for entry in (e for tasks in summary.values() for e in tasks.values()):
        entry["n"] = len(entry["values"])
        entry["mean"], entry["std"] = mean_std(entry["values"], std) if entry["values"] else (None, None)
    return chosen, summary


def stale_keys(cell) -> list[str]:
    """Config keys where a finished cell's config.yaml differs from what the grid would run now."""
    path = cell.run_dir / "config.yaml"
    old = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    return [f"{s}.{k}" for s, body in to_dict(cell.cfg).items() for k, v in body.items()
            if old and (old.get(s) or {}).get(k, v) != v]


def write_report(grid, cells: list, states: dict | None = None) -> dict:
    """OUT/grid_results.json (every cell + the selection), .md (methods x tasks, mean ± std) and .png."""
    states = states or {c.run_dir: cell_state(c) for c in cells}
    chosen, summary = select(cells, states, grid.std)
    rows = []
    for c in cells:
        state, info = states[c.run_dir]
        rows.append({"method": c.method, "task": c.task, "seed": c.seed, "axes": c.axes, "run_dir": str(c.run_dir),
                     "status": state, "metrics": info if state == "done" else None, "error": info.get("error"),
                     "stale_keys": stale_keys(c) if state == "done" else []})
    report = {"output_dir": grid.output_dir, "grid": dataclasses.asdict(grid),
              "std": f"{grid.std} std, ddof={1 if grid.std == 'sample' else 0}",
              "selection_rule": "per (method, task, seed): max dev metric over the grid (min for losses); ties: first",
              "counts": {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "partial", "pending")},
              "cells": rows, "selected": chosen, "summary": summary}
    out = Path(grid.output_dir)
    atomic_write_json(out / "grid_results.json", report)
    atomic_write_text(out / "grid_results.md", markdown(report, grid))
    plot(report, grid, out / "grid_results.png")
    return report


def markdown(report: dict, grid) -> str:
    scale, n_seeds = (100.0 if grid.percent else 1.0), len(grid.seeds)
    tasks = list(dict.fromkeys(r["task"] for r in report["cells"]))
    metric_of = {r["task"]: r["test_key"].removeprefix("test_") for r in report["selected"]}
    lines = [f"# Few-shot grid: {grid.output_dir}", "",
             f"Test metric of the best-dev cell per seed, mean ± std ({report['std']}) over seeds "
             f"{', '.join(map(str, grid.seeds))}{', x100' if grid.percent else ''}; (n/N) = seeds finished.", "",
             "| method | " + " | ".join(f"{t} ({metric_of.get(t, 'test')})" for t in tasks) + " | avg |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for m in dict.fromkeys(r["method"] for r in report["cells"]):
        texts, entries = [], [report["summary"].get(m, {}).get(t) for t in tasks]
        for e in entries:
            text = "–" if not e or e["mean"] is None else f"{scale * e['mean']:.1f} ± {scale * e['std']:.1f}"
            texts.append(text + (f" ({e['n']}/{n_seeds})" if e and e["mean"] is not None and e["n"] < n_seeds else ""))
        full = all(e and e["n"] == n_seeds for e in entries)
        avg = f"{scale * sum(e['mean'] for e in entries) / len(entries):.1f}" if full else "–"
        lines.append(f"| {m} | " + " | ".join(texts) + f" | {avg} |")
    lines += ["", "## Selected cells", "", "| method | task | seed | grid point | dev | test |", "|---" * 6 + "|"]
    for r in report["selected"]:
        test = f"{r['test']:.4f}" if isinstance(r["test"], (int, float)) else "–"
        lines.append(f"| {r['method']} | {r['task']} | {r['seed']} | {_axes_tag(r['axes'])} | "
                     f"{r['dev_key']}={r['dev']:.4f} | {r['test_key']}={test} |")
    c = report["counts"]
    lines += ["", f"Cells: {c['done']} done, {c['failed']} failed, {c['partial']} partial, {c['pending']} pending."]
    lines += [f"- FAILED {r['run_dir']}: {r['error']}" for r in report["cells"] if r["status"] == "failed"]
    lines += [f"- STALE {r['run_dir']}: finished with a different {', '.join(r['stale_keys'])}"
              for r in report["cells"] if r["stale_keys"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, grid, path: Path) -> None:
    """Grouped bars (tasks on x, one colour per method): mean with std error bars, dots = the seeds' values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if grid.percent else 1.0
    tasks = list(dict.fromkeys(r["task"] for r in report["cells"]))
    methods = list(dict.fromkeys(r["method"] for r in report["cells"]))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(tasks) * len(methods) ** 0.5 + 2), 3.6), dpi=110)
    for j, m in enumerate(methods):
        entries = [(i, e) for i, t in enumerate(tasks) if (e := report["summary"].get(m, {}).get(t)) and e["n"]]
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, _ in entries]
        ax.bar(xs, [scale * e["mean"] for _, e in entries], width, yerr=[scale * e["std"] for _, e in entries],
               capsize=3, color=f"C{j}", label=m)
        for x, (_, e) in zip(xs, entries):
            ax.scatter([x] * e["n"], [scale * v for v in e["values"]], s=8, color="black", zorder=3)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(f"test metric{' (x100)' if grid.percent else ''}")
    ax.set_title(f"best dev cell per seed; mean ± std ({grid.std}) over {len(grid.seeds)} seeds", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
