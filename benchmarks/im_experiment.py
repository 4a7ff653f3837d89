"""The IM paper's analyses, scaled to a CPU: IT vs IM vs NEFTune (and KL) on LIMA and AlpaGasus Dolly-3k.

    python benchmarks/im_experiment.py [--out runs/im_experiment] [--stages data,train,eval,report]
        [--datasets dolly3k,lima] [--methods it,im,neftune] [--train-rows 160] [--heldout-rows 64]
        [--steps 40] [--prompts 24] [--max-new-tokens 128]

Every step is a posttrain command (printed before it runs), so each figure can be reproduced by hand:

1. data: a seeded split of each dataset into ``--train-rows`` training rows and ``--heldout-rows`` held-out rows;
2. train: ``posttrain train configs/<dataset>_<method>.yaml`` with the same steps, batch, lr and data order for
   every method (full fine-tuning of the bundled SmolLM2-135M-Instruct);
3. eval, for the starting model and every run: ``loss-eval`` (output-token loss on the training rows and the
   held-out rows: the overfitting gap), ``generate-set`` + ``bleu-train`` on the first ``--prompts`` training
   instructions (memorisation), ``generate-set`` on the first ``--prompts`` AlpacaEval prompts and ``judge`` against
   the text-davinci-003 references with the local judge (the bundled SmolLM2 itself: a weak judge);
4. report: ``posttrain im-report`` over all summaries -> report.md / report.json / report.png.

A stage whose output exists is skipped, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = {"dolly3k": DATA / "instruction" / "alpagasus_3k_dolly.jsonl", "lima": DATA / "instruction" / "lima_data.jsonl"}
ALPACA_EVAL = DATA / "alpaca_eval" / "alpaca_eval_text_davinci_003.json"
# per dataset: (max_length, per-device batch); LIMA's outputs (~600 tokens) are cut at 256 tokens: a CPU budget
SHAPES = {"dolly3k": (256, 8), "lima": (256, 8)}


def run(cmd: list[str], log) -> None:
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {line}", flush=True)
    log.write(f"$ {line}\n")
    log.flush()
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    log.write(f"# {time.time() - start:.0f} s\n")
    log.flush()


def split_data(out: Path, datasets: list[str], train_rows: int, heldout_rows: int, seed: int = 0) -> None:
    for name in datasets:
        train, held = out / "data" / f"{name}_train.jsonl", out / "data" / f"{name}_heldout.jsonl"
        if train.is_file() and held.is_file():
            continue
        lines = [line for line in FILES[name].read_text(encoding="utf-8").splitlines() if line.strip()]
        order = list(range(len(lines)))
        random.Random(seed).shuffle(order)
        train.parent.mkdir(parents=True, exist_ok=True)
        held.write_text("".join(lines[i] + "\n" for i in order[:heldout_rows]), encoding="utf-8")
        train.write_text("".join(lines[i] + "\n" for i in order[heldout_rows:heldout_rows + train_rows]),
                         encoding="utf-8")


def train_runs(out: Path, args, log) -> None:
    posttrain = [sys.executable, "-m", "posttrain"]
    for name in args.datasets:
        max_length, batch = SHAPES[name]
        for method in args.methods:
            run_dir = out / "runs" / f"{name}_{method}"
            if (run_dir / "final_metrics.json").is_file():
                continue
            run(posttrain + ["train", f"configs/{name}_{method}.yaml",
                             f"data.train_file={out / 'data' / f'{name}_train.jsonl'}",
                             f"data.eval_file={out / 'data' / f'{name}_heldout.jsonl'}", "data.eval_size=0",
                             f"data.max_length={max_length}", f"train.per_device_batch_size={batch}",
                             "train.gradient_accumulation_steps=1", f"train.max_steps={args.steps}",
                             f"train.learning_rate={args.lr}", "train.warmup_ratio=0.05", "train.packing=true",
                             f"train.eval_steps={max(1, args.steps // 4)}", "train.save_steps=0",
                             "train.mixed_precision=none",  # fp32, as the published runs (auto came later)
                             f"train.output_dir={run_dir}"], log)


def models(out: Path, args) -> list[str]:
    runs = [str(out / "runs" / f"{name}_{method}") for name in args.datasets for method in args.methods]
    return ["default", *runs]


def evaluate(out: Path, args, log) -> None:
    posttrain = [sys.executable, "-m", "posttrain"]
    summaries = out / "summaries"
    for model in models(out, args):
        tag = Path(model).name
        datasets = args.datasets if model == "default" else [tag.split("_")[0]]
        for name in datasets:
            max_length, _ = SHAPES[name]
            train_file, held = out / "data" / f"{name}_train.jsonl", out / "data" / f"{name}_heldout.jsonl"
            target = summaries / f"{tag}__loss_{name}.json"
            if not target.is_file():
                run(posttrain + ["loss-eval", "--model", model, "--train", str(train_file), "--test", str(held),
                                 "--limit", str(args.loss_rows), "--max-length", str(max_length), "--out", str(target)],
                    log)
            gen = out / "generations" / f"{tag}__train_{name}.json"
            if not gen.is_file():
                run(posttrain + ["generate-set", "--model", model, "--prompts", str(train_file), "--limit",
                                 str(args.prompts), "--max-new-tokens", str(args.max_new_tokens), "--out", str(gen)],
                    log)
            target = summaries / f"{tag}__bleu_{name}.json"
            if not target.is_file():
                run(posttrain + ["bleu-train", "--outputs", str(gen), "--references", str(train_file),
                                 "--summary", str(target)], log)
        gen = out / "generations" / f"{tag}__alpaca_eval.json"
        if not gen.is_file():
            run(posttrain + ["generate-set", "--model", model, "--prompts", str(ALPACA_EVAL), "--limit",
                             str(args.prompts), "--max-new-tokens", str(args.max_new_tokens), "--out", str(gen)], log)
        judged = out / "judge" / tag
        if not (judged / "judge_summary.json").is_file():
            run(posttrain + ["judge", str(gen), "--references", str(ALPACA_EVAL), "--judge", "local",
                             "--judge-model", "default", "--out", str(judged)], log)


def report(out: Path, args, log) -> None:
    posttrain = [sys.executable, "-m", "posttrain"]
    for name in args.datasets:  # one report per training set, with the starting model as the first row
        files = sorted((out / "summaries").glob(f"default__*_{name}.json"))
        files += [out / "judge" / "default" / "judge_summary.json"]
        labels = ["--label", "default=start (no training)"]
        for method in args.methods:
            tag = f"{name}_{method}"
            files += sorted((out / "summaries").glob(f"{tag}__*.json"))
            files += [out / "judge" / tag / "judge_summary.json"]
            labels += ["--label", f"{out / 'runs' / tag}={method.upper()}"]
        files += sorted((out / "generations").glob("*__alpaca_eval.summary.json"))
        wanted = {"default", *(str(out / "runs" / f"{name}_{m}") for m in args.methods)}
        files = [f for f in files if f.is_file() and json.loads(f.read_text())["model"] in wanted]
        run(posttrain + ["im-report", *map(str, files), "--out", str(out / f"report_{name}"), *labels,
                         "--title", f"{name}: IT vs IM vs baselines ({args.steps} steps)"], log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/im_experiment")
    parser.add_argument("--stages", default="data,train,eval,report")
    parser.add_argument("--datasets", default="dolly3k,lima")
    parser.add_argument("--methods", default="it,im,neftune")
    parser.add_argument("--train-rows", type=int, default=160)
    parser.add_argument("--heldout-rows", type=int, default=64)
    parser.add_argument("--loss-rows", type=int, default=64, help="rows of each file for loss-eval")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--prompts", type=int, default=24, help="AlpacaEval prompts and training prompts generated")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    args.datasets = args.datasets.split(",")
    args.methods = args.methods.split(",")
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    with open(out / "commands.log", "a", encoding="utf-8") as log:
        if "data" in stages:
            split_data(out, args.datasets, args.train_rows, args.heldout_rows)
        if "train" in stages:
            train_runs(out, args, log)
        if "eval" in stages:
            evaluate(out, args, log)
        if "report" in stages:
            report(out, args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
