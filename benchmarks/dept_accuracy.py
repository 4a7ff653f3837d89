"""Accuracy check: DePT vs prompt tuning vs LoRA at equal training steps, several seeds (Shi & Lipani, ICLR 2024).

Runs the shipped recipes ``configs/dept/sst2_{dept,pt,lora}.yaml`` (or another task's, ``--recipes``) with the
same overrides (steps, batch, seeds, test subset) through ``posttrain train``, one run at a time, then writes the
mean ± std of the test metric per method as JSON, a Markdown table and a PNG (docs/dept_accuracy.*). Runs go seed
by seed (all methods of seed 1 first), finished runs are skipped, a run killed mid-way starts over. A zero-shot row
(the recipes' base model scored untrained on the same test subset, ``posttrain tasks eval``) gives the floor.

The paper's claim to check: at the same parameter budget, DePT matches or beats vanilla prompt tuning.

Usage:
    python benchmarks/dept_accuracy.py --steps 200 --batch-size 8 --seeds 1 2 3 --max-test 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["configs/dept/sst2_dept.yaml", "configs/dept/sst2_pt.yaml", "configs/dept/sst2_lora.yaml"]


def posttrain(argv: list[str], label: str) -> None:
    """Run ``posttrain ARGV`` in a child process (printed first); its last error line stops the script."""
    print(f"[{label}] posttrain {' '.join(argv)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "posttrain", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"[{label}] failed: {proc.stderr.strip().splitlines()[-1:]}")


def run(recipe: str, seed: int, args, run_dir: Path) -> dict:
    final = run_dir / "final_metrics.json"
    if final.is_file() and not args.force:  # re-running the script resumes the grid
        return json.loads(final.read_text())
    if run_dir.exists():  # killed before it finished (no checkpoints are kept): start it over
        shutil.rmtree(run_dir)
    overrides = [f"train.seed={seed}", f"train.max_steps={args.steps}", f"train.per_device_batch_size={args.batch_size}",
                 f"train.output_dir={run_dir}", "train.eval_steps=0", "train.save_steps=0", "task.eval=",
                 f"task.max_test_examples={args.max_test}", "train.logging_steps=10"]
    start = time.time()
    posttrain(["train", recipe, *overrides], run_dir.name)
    metrics = json.loads(final.read_text())
    print(f"[{run_dir.name}] {time.time() - start:.0f} s, " + ", ".join(
        f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test_") and isinstance(v, float)), flush=True)
    return metrics


def zero_shot_metrics(args, path: Path) -> dict:
    """The recipes' base model scored untrained on the same test subset (``posttrain tasks eval``), once."""
    if not path.is_file() or args.force:
        posttrain(["tasks", "eval", args.recipes[0], f"task.max_test_examples={args.max_test}", "--out", str(path)],
                  "zero-shot")
    return json.loads(path.read_text())["metrics"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-test", type=int, default=400, help="seeded subset of the test set (same for all runs)")
    parser.add_argument("--runs", default="runs/dept_accuracy", help="where the individual runs go")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--name", default="dept_accuracy")
    parser.add_argument("--force", action="store_true", help="re-run runs that already finished")
    args = parser.parse_args()

    finished = {}
    for seed in args.seeds:  # seed-major: a stopped script leaves whole seeds, i.e. paired comparisons
        for recipe in args.recipes:
            method = Path(recipe).stem
            finished[recipe, seed] = run(recipe, seed, args, ROOT / args.runs / f"{method}-seed{seed}")
    zero_shot = zero_shot_metrics(args, ROOT / args.runs / "zero_shot.json")
    table = {}
    for recipe in args.recipes:
        method = Path(recipe).stem
        results = [finished[recipe, seed] for seed in args.seeds]
        metric = next(k for k in results[0] if k.startswith("test_") and k != "test_examples")
        values = [r[metric] for r in results]
        meta = json.loads((ROOT / args.runs / f"{method}-seed{args.seeds[0]}" / "run_meta.json").read_text())
        table[method] = {
            "recipe": recipe, "metric": metric, "values": values, "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "trainable_parameters": meta["adapter"]["trainable_parameters"],
            "test_examples": results[0].get("test_examples"),
        }
    metric = next(iter(table.values()))["metric"]
    table["zero-shot (untrained)"] = {
        "recipe": args.recipes[0], "metric": metric, "values": [zero_shot[metric.removeprefix("test_")]],
        "mean": zero_shot[metric.removeprefix("test_")], "std": 0.0, "trainable_parameters": 0,
        "test_examples": zero_shot["examples"], "untrained": True,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/dept_accuracy.py " + " ".join(sys.argv[1:]),
        "steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds, "max_test": args.max_test,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "methods": table,
    }
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| method | trainable params | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std |",
             "|---|---|" + "---|" * len(args.seeds) + "---|"]
    for method, row in table.items():
        seeds = ["-"] * len(args.seeds) if row.get("untrained") else [f"{100 * v:.1f}" for v in row["values"]]
        mean = f"{100 * row['mean']:.1f}" + ("" if row.get("untrained") else f" ± {100 * row['std']:.1f}")
        lines.append(f"| {method} | {row['trainable_parameters']:,} | " + " | ".join(seeds) + f" | {mean} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    names = list(table)
    ax.bar(names, [100 * table[n]["mean"] for n in names], yerr=[100 * table[n]["std"] for n in names], capsize=5,
           color=["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd"][: len(names)])
    for i, n in enumerate(names):
        ax.scatter([i] * len(table[n]["values"]), [100 * v for v in table[n]["values"]], color="black", s=10, zorder=3)
    ax.set_ylabel(f"{table[names[0]]['metric']} (%)")
    ax.set_title(f"{args.steps} steps x batch {args.batch_size}, seeds {args.seeds}, {args.max_test} test examples",
                 fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{args.name}.png")
    print(f"wrote {out / (args.name + '.json')}, .md, .png")


if __name__ == "__main__":
    main()
