"""Accuracy check: DePT vs prompt tuning vs LoRA at equal training steps, several seeds (Shi & Lipani, ICLR 2024).

Runs the shipped recipes ``configs/dept/sst2_{dept,pt,lora}.yaml`` (or another task's, ``--recipes``) with the
same overrides (steps, batch, seeds, test subset) through ``posttrain train``, one run at a time, then writes the
mean ± std of the test metric per method as JSON, a Markdown table and a PNG (docs/benchmarks/dept_accuracy.*). Runs go seed
by seed (all methods of seed 1 first); a run killed mid-way starts over. A zero-shot row (the recipes' base model
scored untrained on the same test subset, ``posttrain tasks eval``) gives the floor.

Each finished run appends one line to a ledger kept in the repository (``--ledger``, default
docs/benchmarks/dept_accuracy_runs.jsonl: method, seed, settings, test metrics, seconds, machine). A run whose line is there
with the same settings is skipped, so the check can be spread over several sessions or machines whose ``runs/``
folders do not survive: commit the ledger and rerun the same command. The table is built from the ledger alone;
seeds not finished yet show as "-" and the mean is over the seeds that did (``n`` in the JSON).
``--report-only`` rewrites the table without running anything.

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
ZERO_SHOT = "zero-shot (untrained)"


def posttrain(argv: list[str], label: str) -> None:
    """Run ``posttrain ARGV`` in a child process (printed first); its last error line stops the script."""
    print(f"[{label}] posttrain {' '.join(argv)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "posttrain", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"[{label}] failed: {proc.stderr.strip().splitlines()[-1:]}")


def settings(args, recipe: str, seed: int | None) -> dict:
    """What makes two runs the same run: a ledger line counts only for these exact values."""
    return {"recipe": recipe, "seed": seed, "steps": args.steps, "batch_size": args.batch_size,
            "max_test": args.max_test, "mixed_precision": args.mixed_precision}


def zero_shot_key(args) -> dict:
    return {"recipe": args.recipes[0], "seed": None, "steps": 0, "max_test": args.max_test}


def read_ledger(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find(ledger: list[dict], key: dict) -> dict | None:
    """The latest ledger line with these settings (a ``--force`` rerun appends a newer one)."""
    return next((entry for entry in reversed(ledger) if all(entry.get(k) == v for k, v in key.items())), None)


def record(args, key: dict, method: str, metrics: dict, trainable: int, seconds: float) -> dict:
    entry = {**key, "method": method, "metrics": metrics, "trainable_parameters": trainable,
             "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d"),
             "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    with open(args.ledger, "a") as f:  # one line per finished run: a killed script loses only the run it was in
        f.write(json.dumps(entry) + "\n")
    return entry


def run(recipe: str, seed: int, args, ledger: list[dict]) -> None:
    key = settings(args, recipe, seed)
    if find(ledger, key) and not args.force:  # finished in this or an earlier session
        return
    method = Path(recipe).stem
    run_dir = ROOT / args.runs / f"{method}-seed{seed}"
    if run_dir.exists():  # killed before it finished (no checkpoints are kept), or --force: start it over
        shutil.rmtree(run_dir)
    overrides = [f"train.seed={seed}", f"train.max_steps={args.steps}", f"train.per_device_batch_size={args.batch_size}",
                 f"train.output_dir={run_dir}", "train.eval_steps=0", "train.save_steps=0", "task.eval=",
                 f"task.max_test_examples={args.max_test}", "train.logging_steps=10",
                 f"train.mixed_precision={args.mixed_precision}"]
    start = time.time()
    posttrain(["train", recipe, *overrides], run_dir.name)
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    meta = json.loads((run_dir / "run_meta.json").read_text())
    tests = {k: v for k, v in metrics.items() if k.startswith("test_")}
    seconds = time.time() - start
    ledger.append(record(args, key, method, tests, meta["adapter"]["trainable_parameters"], seconds))
    print(f"[{run_dir.name}] {seconds:.0f} s, " + ", ".join(
        f"{k}={v:.4f}" for k, v in tests.items() if isinstance(v, float)), flush=True)


def zero_shot(args, ledger: list[dict]) -> None:
    """The recipes' base model scored untrained on the same test subset (``posttrain tasks eval``), once."""
    key = zero_shot_key(args)
    if find(ledger, key) and not args.force:
        return
    path = ROOT / args.runs / "zero_shot.json"
    start = time.time()
    posttrain(["tasks", "eval", args.recipes[0], f"task.max_test_examples={args.max_test}", "--out", str(path)],
              "zero-shot")
    scores = json.loads(path.read_text())["metrics"]
    tests = {f"test_{k}": v for k, v in scores.items()}  # the names a run's final metrics use
    ledger.append(record(args, key, ZERO_SHOT, tests, 0, time.time() - start))


def table(args, ledger: list[dict]) -> dict:
    """Per method: the test metric of each requested seed found in the ledger (None where not run yet)."""
    rows = {}
    for recipe in args.recipes:
        found = {seed: find(ledger, settings(args, recipe, seed)) for seed in args.seeds}
        done = [entry for entry in found.values() if entry]
        if not done:
            continue
        metric = next(k for k in done[0]["metrics"] if k != "test_examples")
        values = [entry["metrics"][metric] for entry in done]
        rows[Path(recipe).stem] = {
            "recipe": recipe, "metric": metric, "n": len(values), "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": {seed: (entry["metrics"][metric] if entry else None) for seed, entry in found.items()},
            "trainable_parameters": done[0]["trainable_parameters"],
            "test_examples": done[0]["metrics"].get("test_examples"),
            "seconds": [entry["seconds"] for entry in done],
        }
    untrained = find(ledger, zero_shot_key(args))
    if rows and untrained:
        metric = next(iter(rows.values()))["metric"]
        value = untrained["metrics"][metric]
        rows[ZERO_SHOT] = {"recipe": args.recipes[0], "metric": metric, "n": 1, "mean": value, "std": 0.0,
                           "values": {}, "trainable_parameters": 0,
                           "test_examples": untrained["metrics"].get("test_examples"), "untrained": True}
    return rows


def write_report(args, rows: dict) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/dept_accuracy.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only"),
        "ledger": str(args.ledger), "steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds,
        "max_test": args.max_test, "mixed_precision": args.mixed_precision, "methods": rows,
    }
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| method | trainable params | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std (n) |",
             "|---|---|" + "---|" * len(args.seeds) + "---|"]
    for method, row in rows.items():
        seeds = [("-" if row["values"].get(s) is None else f"{100 * row['values'][s]:.1f}") for s in args.seeds]
        mean = f"{100 * row['mean']:.1f}" + ("" if row.get("untrained") else f" ± {100 * row['std']:.1f} ({row['n']})")
        lines.append(f"| {method} | {row['trainable_parameters']:,} | " + " | ".join(seeds) + f" | {mean} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(args, rows, out / f"{args.name}.png")
    print(f"wrote {out / (args.name + '.json')}, .md, .png")


def plot(args, rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    names = list(rows)
    ax.bar(names, [100 * rows[n]["mean"] for n in names], yerr=[100 * rows[n]["std"] for n in names], capsize=5,
           color=["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd"][: len(names)])
    for i, n in enumerate(names):
        values = [v for v in rows[n]["values"].values() if v is not None]
        ax.scatter([i] * len(values), [100 * v for v in values], color="black", s=10, zorder=3)
    ax.set_ylabel(f"{rows[names[0]]['metric']} (%)" if names else "")
    ax.set_title(f"{args.steps} steps x batch {args.batch_size}, seeds {args.seeds}, {args.max_test} test examples"
                 + ("" if args.mixed_precision == "none" else f", {args.mixed_precision} autocast"), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-test", type=int, default=400, help="seeded subset of the test set (same for all runs)")
    parser.add_argument("--mixed-precision", default="none", choices=["none", "bf16", "fp16"],
                        help="train.mixed_precision of every run (part of the settings a ledger line must match)")
    parser.add_argument("--runs", default="runs/dept_accuracy", help="where the individual runs go")
    parser.add_argument("--ledger", type=Path, default=ROOT / "docs" / "benchmarks" / "dept_accuracy_runs.jsonl",
                        help="one line per finished run; runs found here with the same settings are skipped")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    parser.add_argument("--name", default="dept_accuracy")
    parser.add_argument("--force", action="store_true", help="re-run runs that already finished")
    parser.add_argument("--report-only", action="store_true", help="write the table from the ledger, run nothing")
    args = parser.parse_args(argv)

    ledger = read_ledger(args.ledger)
    if not args.report_only:
        zero_shot(args, ledger)
        for seed in args.seeds:  # seed-major: a stopped script leaves whole seeds, i.e. paired comparisons
            for recipe in args.recipes:
                run(recipe, seed, args, ledger)
    write_report(args, table(args, ledger))


if __name__ == "__main__":
    main()
