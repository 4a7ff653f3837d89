"""``posttrain grid``: the few-shot protocol over a grid YAML (pipelines/grid.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PosttrainError



def _cmd_grid(args) -> int:
    from ..pipelines.grid import load_grid, run_grid
    from ..pipelines.grid_report import cell_state, markdown, stale_keys, write_report

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
