"""The few-shot grid's outputs and command: OUT/grid_results.{json,md,png} and ``posttrain grid``.

The table cell of (method, task) is mean_s test(s, h*(s)) ± std_s test(s, h*(s)) with h*(s) the best-dev grid point
of seed s (selection and statistics: pipelines/grid.py); the Markdown adds the selected cell of every seed, failed
and stale cells; the PNG shows the means with std error bars and every seed's value.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..errors import PosttrainError
from ..io_utils import atomic_write_json, atomic_write_text
from .grid import Cell, GridConfig, _axes_tag, cell_state, load_grid, run_grid, select, stale_keys


def write_report(grid: GridConfig, cells: list[Cell], states: dict | None = None) -> dict:
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


def markdown(report: dict, grid: GridConfig) -> str:
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


def plot(report: dict, grid: GridConfig, path: Path) -> None:
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


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _cmd_grid(args) -> int:
    grid, cells = load_grid(args.config, args.overrides, check_data=not (args.dry_run or args.only_report))
    if args.dry_run:
        for c in cells:
            state, info = cell_state(c)
            extra = info.get("error") or info.get("checkpoint") or ""
            stale = stale_keys(c) if state == "done" else []
            print(f"{state:8s} {c.run_dir}  {extra}{'  STALE: ' + ', '.join(stale) if stale else ''}")
        counts = {s: sum(cell_state(c)[0] == s for c in cells) for s in ("done", "failed", "partial", "pending")}
        print(f"{len(cells)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        return 0
    report = write_report(grid, cells) if args.only_report else run_grid(grid, cells, fail_fast=args.fail_fast)
    print(markdown(report, grid).split("\n## ")[0].rstrip())
    print(f"wrote {Path(grid.output_dir) / 'grid_results'}.json, .md, .png")
    if report["counts"]["failed"]:
        raise PosttrainError(f"{report['counts']['failed']} cell(s) failed (errors in grid_results.json); "
                             "re-run to retry them")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``grid`` to a parser's subparsers."""
    p = subparsers.add_parser(
        "grid", help="few-shot protocol: tasks x seeds x lr grid, best dev cell, test mean ± std (resumable)",
        description="Run every cell of a grid YAML (methods x tasks x k-shot seeds x axes) that has no "
        "final_metrics.json yet, select the best dev cell per seed and write OUT/grid_results.{json,md,png}. "
        "Schema: docs/few_shot_protocol.md.")
    p.add_argument("config", help="grid YAML (see configs/grid/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every cell")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their state; train nothing")
    p.add_argument("--only-report", action="store_true", help="rebuild the tables from finished cells; train nothing")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell")
    p.set_defaults(func=_cmd_grid)
    return p
