"""The PCP paper's few-shot comparison, scaled to a 2-core CPU: CLS-FT, prompt-FT (hard, soft), TAPT + prompt-FT,
PCP + prompt-FT and self-training (FixMatch) on SmolLM2-135M-Instruct, 16-shot, 5 seeds, mean +- std.

    python benchmarks/fewshot_experiment.py [--out runs/fewshot_experiment] [--tasks SST-2 ...] [--seeds 13 21 ...]
        [--methods prompt_ft_hard cls ...] [--steps 16] [--learning-rate 5e-5] [--max-test 200] [--pool 128]
        [--report-only]

Every run is a posttrain command (printed before it runs, and executed in this process to save the start-up time),
so each cell can be reproduced by hand. Per task and k-shot seed s (LM-BFF split 16-s), in this order:

- ``majority``        LM-BFF's "Majority" row: the test subset's most frequent label predicted for every example,
                      scored with the task's metric (computed here from the data, no model; once per task)
- ``zero_shot``       posttrain tasks eval configs/prompt_ft/sst2_prompt_ft.yaml (the prompt-FT recipe's model scored
                      untrained with the task's template: LM-BFF's zero-shot row; once per task, no std)
- ``prompt_ft_hard``  posttrain train configs/prompt_ft/sst2_prompt_ft.yaml (the task's hard template, label words)
- ``cls``             posttrain train configs/prompt_ft/sst2_cls.yaml (new classification head on the plain input)
- ``prompt_ft_soft``  posttrain train configs/prompt_ft/sst2_prompt_ft_soft.yaml (DART-lite soft template/words)
- ``pcp``             posttrain pcp configs/pcp/sst2_pcp.yaml teacher_run=<prompt_ft_hard's run> (stages 1-5: the
                      prompt-FT baseline is the teacher, as in the paper; pseudo-labelled templated pool -> CPT ->
                      prompt-FT)
- ``tapt``            posttrain tapt configs/pcp/sst2_tapt.yaml --stages 3-4 once per task (the raw pool does not
                      depend on the seed), then posttrain train <prompt-FT recipe> model.name_or_path=<its CPT model>
- ``self_training``   posttrain self-train configs/self_training/sst2_fixmatch.yaml (FixMatch on the prompt-based
                      classifier, EDA-style strong view)

Every fine-tuning run has the same budget: ``--steps`` optimizer steps of batch 8 at ``--learning-rate`` (warmup 6 %),
an evaluation on the 16-shot dev set every steps/4 steps keeping the best (the protocol's best checkpoint), and the
test metric on a seeded subset of ``--max-test`` test examples. CPT (TAPT and PCP) is ``--steps`` steps of 8 lines
over a seeded ``--pool``-text subset of the unlabelled pool (one epoch), best by the loss on 32 dev-pool lines.
Tasks for a causal LM whose paper template puts the label slot before text the decision needs are given as task
files that move the slot last (configs/tasks/*_causal.yaml; see docs/prompt_ft.md).

A finished run (``final_metrics.json``; a pipeline's ``summary.json`` with its final stage) is skipped, so an
interrupted experiment continues where it stopped; model weights are deleted once nothing later needs them (a full
SmolLM2 run writes ~0.5 GB). ``report.{md,json,png}`` in ``--out`` hold the table (test metric of each seed's best dev
checkpoint; mean +- population std over the seeds that finished).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from posttrain.cli import main as posttrain  # noqa: E402
from posttrain.pipelines.grid_report import mean_std  # noqa: E402
from posttrain.tasks import get_task  # noqa: E402

RECIPES = {
    "prompt_ft_hard": "configs/prompt_ft/sst2_prompt_ft.yaml",
    "cls": "configs/prompt_ft/sst2_cls.yaml",
    "prompt_ft_soft": "configs/prompt_ft/sst2_prompt_ft_soft.yaml",
}
METHODS = ["majority", "zero_shot", "prompt_ft_hard", "cls", "prompt_ft_soft", "pcp", "tapt", "self_training"]
UNTRAINED = {"majority", "zero_shot"}  # scored once per task (no k-shot data used): one value, no std
TASKS = ["SST-2", "configs/tasks/trec_causal.yaml", "configs/tasks/rte_causal.yaml",
         "configs/tasks/mrpc_causal.yaml"]
SEEDS = [13, 21, 42, 87, 100]
LEDGER = ROOT / "docs" / "benchmarks" / "fewshot_experiment_runs.jsonl"
RESULT_FILES = {"final_metrics.json", "eval.json", "summary.json", "stage5.done.json"}  # what the table reads
WEIGHT_DIRS = {"final", "checkpoints", "best"}
PAIR_MAX_LENGTH = 192  # PCP: 256 for pair tasks; cut to 192 tokens here (the middle of long premises goes)


def run(argv: list[str], log_path: Path) -> None:
    line = "posttrain " + " ".join(shlex.quote(a) for a in argv)
    print(f"$ {line}", flush=True)
    start = time.time()
    code = posttrain(argv)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {line}\n# exit {code}, {time.time() - start:.0f} s\n")
    if code != 0:
        raise SystemExit(f"command failed with exit status {code}: {line}")


def task_label(task_ref: str) -> str:
    return get_task(task_ref).name


def max_length(task_ref: str) -> int:
    return PAIR_MAX_LENGTH if get_task(task_ref).kind == "pair" else 128


def budget(args, task_ref: str) -> list[str]:
    """The shared fine-tuning budget of every run on one task."""
    task = get_task(task_ref)
    every = max(1, args.steps // 4)
    return [f"task.name={task_ref}", f"data.max_length={max_length(task_ref)}", f"train.max_steps={args.steps}",
            f"train.learning_rate={args.learning_rate}", "train.per_device_batch_size=8", f"train.eval_steps={every}",
            f"train.logging_steps={every}", "train.save_steps=0", "train.progress=false",
            f"train.best_metric={task.metrics[0]}", f"task.max_test_examples={args.max_test}",
            "train.mixed_precision=none"]  # fp32, as the ledger's published runs (before auto became the default)


def cpt_settings(args, task_ref: str) -> list[str]:
    every = max(1, args.steps // 4)
    return [f"max_pool_train={args.pool}", "max_pool_dev=32", f"cpt.max_steps={args.steps}",
            f"cpt.eval_steps={every}", f"cpt.logging_steps={every}", f"cpt.max_length={max_length(task_ref)}",
            "cpt.progress=false", "cpt.mixed_precision=none"]  # fp32, as the ledger's runs


def drop_weights(run_dir: Path) -> None:
    for name in ("final", "checkpoints", "best"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def finished(run_dir: Path) -> bool:
    return (run_dir / "final_metrics.json").is_file()


def fresh(run_dir: Path) -> None:
    """A run killed before it finished starts over (runs here save no checkpoints: they are short)."""
    if run_dir.exists() and not finished(run_dir):
        shutil.rmtree(run_dir)


def train_run(args, recipe: str, task_ref: str, seed: int, run_dir: Path, extra: list[str] = ()) -> None:
    if finished(run_dir):
        return
    fresh(run_dir)
    run(["train", recipe, *budget(args, task_ref), f"task.seed={seed}", f"train.seed={seed}",
         f"train.output_dir={run_dir}", *extra], args.out / "commands.log")


def pcp_run(args, task_ref: str, seed: int, out: Path, teacher: Path) -> None:
    if (out / "stage5.done.json").is_file():
        return
    final = "[" + ", ".join(budget(args, task_ref)[1:] + [f"train.seed={seed}"]) + "]"
    run(["pcp", "configs/pcp/sst2_pcp.yaml", f"task={task_ref}", f"seed={seed}", f"output_dir={out}",
         f"teacher_run={teacher}", "teacher_recipe=", "final_recipe=configs/prompt_ft/sst2_prompt_ft.yaml",
         f"final_overrides={final}", *cpt_settings(args, task_ref)], args.out / "commands.log")
    for stage in ("stage4_cpt", "stage5_final"):
        drop_weights(out / stage)


def tapt_cpt(args, task_ref: str, out: Path) -> Path:
    settings = ["configs/pcp/sst2_tapt.yaml", f"task={task_ref}", f"output_dir={out}", *cpt_settings(args, task_ref)]
    if not (out / "stage4.done.json").is_file():
        run(["tapt", "--stages", "3-4", *settings], args.out / "commands.log")
    elif not (out / "stage4_cpt" / "best").is_dir():  # its weights were dropped after an earlier set of seeds
        run(["tapt", "--stages", "4", "--force", "4", *settings], args.out / "commands.log")
    shutil.rmtree(out / "stage4_cpt" / "checkpoints", ignore_errors=True)  # 1.5 GB each; best/ is what is used
    return out / "stage4_cpt" / "best"


def self_training_run(args, task_ref: str, seed: int, run_dir: Path) -> None:
    if finished(run_dir):
        return
    fresh(run_dir)
    run(["self-train", "configs/self_training/sst2_fixmatch.yaml", f"output_dir={run_dir}", "max_unlabeled=2000",
         *budget(args, task_ref), f"task.seed={seed}", f"train.seed={seed}"], args.out / "commands.log")


def zero_shot_run(args, task_ref: str) -> None:
    out = args.out / "zero_shot" / task_label(task_ref) / "eval.json"
    if not out.is_file():
        run(["tasks", "eval", RECIPES["prompt_ft_hard"], *budget(args, task_ref), "--out", str(out)],
            args.out / "commands.log")


def majority_metrics(args, task_ref: str) -> dict:
    """The task's metrics when every example of the (seeded) test subset gets its most frequent gold label."""
    from collections import Counter

    from posttrain.config import load_config
    from posttrain.scoring.metrics import task_metrics
    from posttrain.run_data import task_split
    from posttrain.tasks import canonical_label

    cfg = load_config(RECIPES["prompt_ft_hard"], budget(args, task_ref))  # the runs' test subset
    task = get_task(task_ref)
    gold = [canonical_label(row["label"]) for row in task_split(cfg, task, "test", cfg.task.max_test_examples)]
    majority = Counter(gold).most_common(1)[0][0]
    return {**task_metrics(task, [majority] * len(gold), gold), "label": majority}


def majority_run(args, task_ref: str) -> None:
    out = args.out / "majority" / task_label(task_ref) / "eval.json"
    if not out.is_file():  # the zero-shot file's layout, so the report and the ledger read both alike
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"metrics": majority_metrics(args, task_ref)}, indent=2))


def run_task_seed(args, task_ref: str, seed: int) -> None:
    name = task_label(task_ref)
    cell = lambda method: args.out / method / name / f"seed{seed}"  # noqa: E731
    methods = args.methods
    if "zero_shot" in methods:
        zero_shot_run(args, task_ref)
    teacher = cell("prompt_ft_hard")
    if "pcp" in methods and not (cell("pcp") / "stage5.done.json").is_file() and finished(teacher) \
            and not (teacher / "final").is_dir():  # PCP's teacher came back from the ledger without its weights
        shutil.rmtree(teacher)
    for method in ("prompt_ft_hard", "cls", "prompt_ft_soft"):
        if method in methods or (method == "prompt_ft_hard" and "pcp" in methods):
            train_run(args, RECIPES[method], task_ref, seed, cell(method))
    if "pcp" in methods:
        pcp_run(args, task_ref, seed, cell("pcp"), cell("prompt_ft_hard"))
    # weights go only from runs this invocation is responsible for (another one may be using the rest), and the
    # prompt-FT run's only once PCP, which reads them as its teacher, has finished
    teacher_free = "pcp" not in methods or (cell("pcp") / "stage5.done.json").is_file()
    for method in ("prompt_ft_hard", "cls", "prompt_ft_soft"):
        if method in methods and (method != "prompt_ft_hard" or teacher_free):
            drop_weights(cell(method))
    if "tapt" in methods and not finished(cell("tapt")):  # CPT weights are (re)made only when a run needs them
        best = tapt_cpt(args, task_ref, args.out / "tapt" / name / "cpt")
        train_run(args, RECIPES["prompt_ft_hard"], task_ref, seed, cell("tapt"),
                  [f"model.name_or_path={best}", "model.gguf_file="])
    if "tapt" in methods:
        drop_weights(cell("tapt"))
    if "self_training" in methods:
        self_training_run(args, task_ref, seed, cell("self_training"))
        drop_weights(cell("self_training"))


# ---------------------------------------------------------------------------------------------------------------
# ledger: the result files, kept in the repository


def read_ledger(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    entries = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {entry["file"]: entry["content"] for entry in entries}


def save_ledger(args) -> None:
    """Add the result files under ``--out`` to the ledger (entries of files not here are kept)."""
    entries = read_ledger(args.ledger)
    for path in args.out.rglob("*.json"):
        rel = path.relative_to(args.out)
        if path.name in RESULT_FILES and not WEIGHT_DIRS & set(rel.parts):
            entries[rel.as_posix()] = json.loads(path.read_text())
    args.ledger.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.ledger.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"file": k, "content": entries[k]}) + "\n" for k in sorted(entries)))
    tmp.replace(args.ledger)  # a killed script leaves the old ledger whole


def restore_ledger(args) -> None:
    for rel, content in read_ledger(args.ledger).items():
        path = args.out / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2))


# ---------------------------------------------------------------------------------------------------------------
# report


def final_metrics(args, method: str, name: str, seed: int) -> dict | None:
    if method in UNTRAINED:
        path = args.out / method / name / "eval.json"
        return {f"test_{k}": v for k, v in json.loads(path.read_text())["metrics"].items()} if path.is_file() else None
    base = args.out / method / name / f"seed{seed}"
    path = base / ("stage5_final" if method == "pcp" else ".") / "final_metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def report(args) -> dict:
    rows = []
    for task_ref in args.tasks:
        task = get_task(task_ref)
        metric = task.metrics[0]
        for method in args.methods:
            by_seed = {}  # seed -> (test, dev of the kept checkpoint), finished seeds only
            for seed in args.seeds[:1] if method in UNTRAINED else args.seeds:
                m = final_metrics(args, method, task.name, seed)
                if m and f"test_{metric}" in m:
                    by_seed[seed] = (100 * m[f"test_{metric}"],
                                     100 * m.get(f"best_eval_{metric}", m.get(f"eval_{metric}", float("nan"))))
            values = [test for test, _ in by_seed.values()]
            mean, std = mean_std(values) if values else (None, None)  # population std, as the grid runner
            rows.append({"method": method, "task": task.name, "metric": metric, "seeds": len(values),
                         "test": values, "dev": [dev for _, dev in by_seed.values()], "by_seed": by_seed,
                         "mean": mean, "std": std})
    out = {"setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows}
    names = [get_task(t).name for t in args.tasks]
    lines = ["| method | " + " | ".join(f"{n} ({get_task(t).metrics[0]})" for n, t in zip(names, args.tasks))
             + " | avg |", "|---" * (len(names) + 2) + "|"]
    for method in args.methods:
        parts, means = [], []
        for name in names:
            row = next(r for r in rows if r["method"] == method and r["task"] == name)
            if not row["seeds"]:
                parts.append("-")
                continue
            missing = "" if row["seeds"] == len(args.seeds) else f" ({row['seeds']}/{len(args.seeds)})"
            parts.append(f"{row['mean']:.1f}" if method in UNTRAINED else f"{row['mean']:.1f} ± {row['std']:.1f}"
                         + missing)
            means.append(row["mean"])
        avg = f"{statistics.fmean(means):.1f}" if len(means) == len(names) else "-"
        lines.append(f"| {method} | " + " | ".join(parts) + f" | {avg} |")
    lines += ["", f"Per seed (test; seeds {', '.join(map(str, args.seeds))}; dev of the kept checkpoint in brackets):",
              "", "| method | task | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
              "|---|---|" + "---|" * len(args.seeds)]
    for row in rows:
        if row["seeds"] and row["method"] not in UNTRAINED:
            values = [f"{row['by_seed'][s][0]:.1f} ({row['by_seed'][s][1]:.1f})" if s in row["by_seed"] else "-"
                      for s in args.seeds]
            lines.append(f"| {row['method']} | {row['task']} | " + " | ".join(values) + " |")
    lines += paired_table(args, rows, names)
    lines += ["", "Unlabelled-data diagnostics (means over the finished seeds): PCP pseudo-label accuracy on its pool "
              "subset (the pools keep gold labels) and CPT dev loss start -> best; self-training: share of "
              "unlabelled examples above the confidence cut (mask ratio) and their pseudo-label accuracy.", "",
              "| task | PCP pseudo-label acc | PCP CPT loss | TAPT CPT loss | FixMatch mask ratio | FixMatch pseudo-label acc |",
              "|---|---|---|---|---|---|"]
    for task_ref in args.tasks:
        diag = diagnostics(args, get_task(task_ref).name)
        out["diagnostics"] = {**out.get("diagnostics", {}), get_task(task_ref).name: diag}
        fmt = lambda key, scale=100: f"{scale * diag[key]:.1f}" if diag.get(key) is not None else "-"  # noqa: E731
        loss = lambda a, b: f"{diag[a]:.2f} -> {diag[b]:.2f}" if diag.get(a) is not None else "-"  # noqa: E731
        lines.append(f"| {get_task(task_ref).name} | {fmt('pcp_pseudo_label_acc')} | "
                     f"{loss('pcp_cpt_start', 'pcp_cpt_best')} | {loss('tapt_cpt_start', 'tapt_cpt_best')} | "
                     f"{fmt('st_mask_ratio')} | {fmt('st_pseudo_label_acc')} |")
    (args.out / "report.json").write_text(json.dumps(out, indent=2))
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    plot(args, rows, names)
    print("\n".join(lines))
    return out


def paired_table(args, rows: list[dict], names: list[str], base: str = "prompt_ft_hard") -> list[str]:
    """Each method minus prompt-FT on the same seed (same k-shot split, same test examples): the mean difference
    in points and wins/ties/losses, over the seeds both finished. Paired, so tighter than the two std columns."""
    if base not in args.methods:
        return []
    lines = ["", f"Paired with {base} (same seed, same test examples): mean difference in points, then "
             "wins/ties/losses over the seeds both finished:", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method in args.methods:
        if method == base or method in UNTRAINED:
            continue
        parts = []
        for name in names:
            ref = next(r for r in rows if r["method"] == base and r["task"] == name)["by_seed"]
            got = next(r for r in rows if r["method"] == method and r["task"] == name)["by_seed"]
            diffs = [got[s][0] - ref[s][0] for s in args.seeds if s in got and s in ref]
            wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
            parts.append(f"{statistics.fmean(diffs):+.1f} ({wins}/{ties}/{len(diffs) - wins - ties})" if diffs else "-")
        lines.append(f"| {method} | " + " | ".join(parts) + " |")
    return lines


def diagnostics(args, name: str) -> dict:
    """What the unlabelled data did: PCP pseudo-label quality and CPT losses, FixMatch's mask ratio."""
    found: dict[str, list[float]] = {}

    def add(key, value):
        if value is not None:
            found.setdefault(key, []).append(value)

    for seed in args.seeds:
        pcp = args.out / "pcp" / name / f"seed{seed}" / "summary.json"
        if pcp.is_file():
            summary = json.loads(pcp.read_text())
            add("pcp_pseudo_label_acc", summary.get("pseudo_labels", {}).get("summary", {}).get("train", {})
                .get("accuracy_vs_gold"))
            add("pcp_cpt_start", summary.get("cpt", {}).get("metrics", {}).get("start_eval_loss"))
            add("pcp_cpt_best", summary.get("cpt", {}).get("metrics", {}).get("eval_loss"))
        st = final_metrics(args, "self_training", name, seed) or {}
        add("st_mask_ratio", st.get("train_mask_ratio"))
        add("st_pseudo_label_acc", st.get("train_pseudo_label_acc"))
    tapt = args.out / "tapt" / name / "cpt" / "summary.json"
    if tapt.is_file():
        metrics = json.loads(tapt.read_text()).get("cpt", {}).get("metrics", {})
        add("tapt_cpt_start", metrics.get("start_eval_loss"))
        add("tapt_cpt_best", metrics.get("eval_loss"))
    return {key: statistics.fmean(values) for key, values in found.items()}


def plot(args, rows: list[dict], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * len(names), 4))
    width = 0.8 / len(args.methods)
    for i, method in enumerate(args.methods):
        means, stds, xs = [], [], []
        for j, name in enumerate(names):
            row = next(r for r in rows if r["method"] == method and r["task"] == name)
            if row["seeds"]:
                xs.append(j + (i - (len(args.methods) - 1) / 2) * width)
                means.append(row["mean"])
                stds.append(row["std"])
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=method)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test metric (%), mean ± std over seeds")
    ax.set_title(f"SmolLM2-135M, 16-shot, {args.steps} steps x 8, lr {args.learning_rate}")
    ax.legend(fontsize=7, ncol=2)
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(args.out / "report.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fewshot_experiment")
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-test", type=int, default=200)
    parser.add_argument("--pool", type=int, default=128, help="unlabelled pool texts for TAPT/PCP CPT")
    parser.add_argument("--ledger", type=Path, default=None,
                        help="result files kept across checkouts (default docs/benchmarks/fewshot_experiment_runs.jsonl)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.ledger = (args.ledger or LEDGER).resolve()
    args.out = args.out.resolve()
    os.chdir(ROOT)  # the recipes and task files are named relative to the repository root
    args.out.mkdir(parents=True, exist_ok=True)
    restore_ledger(args)
    if "majority" in args.methods:  # from the data alone: also for --report-only
        for task_ref in args.tasks:
            majority_run(args, task_ref)
    if not args.report_only:
        for task_ref in args.tasks:
            for seed in args.seeds:
                run_task_seed(args, task_ref, seed)
                report(args)
                save_ledger(args)
            if "tapt" in args.methods:
                drop_weights(args.out / "tapt" / task_label(task_ref) / "cpt" / "stage4_cpt")
    report(args)
    save_ledger(args)


if __name__ == "__main__":
    main()
