"""StepGame multiple-choice scoring speed: posttrain's scorer vs lm-evaluation-harness (StepGame: Shi, Zhang,
Lipani, AAAI 2022), plus generator and solver throughput.

    .venv/bin/python benchmarks/stepgame_eval_speed.py [--per-file 5] [--batch-size 8] \\
        [--lm-eval-python /work/lmeval-venv/bin/python]

On a CPU shared with other jobs, run it with ``OMP_NUM_THREADS=1`` (both sides then use one thread; with more
threads than free cores, OpenMP's waiting threads make timings meaningless).

Both harnesses score the same examples (the first --per-file stories of each shared noise valid file, k=1..10)
with the same model (the bundled SmolLM2-135M-Instruct, as its converted safetensors directory), the same plain
zero-shot prompt (``posttrain stepgame export-lm-eval`` writes the lm-eval task) and the same batch size, on CPU.
Timed: scoring only (models loaded before the clock starts; lm-eval's time includes building its requests).
posttrain runs one context pass per story and feeds only the choice tokens against the cached context; lm-eval
runs context + choice sequences (sharing one pass among choices whose continuations differ only in the last token)
and computes logits for every position. The per-choice log-likelihoods of the two are compared too.
lm-eval runs in its own interpreter (``--lm-eval-python``, default: this one if it can import lm_eval).
Writes docs/benchmarks/stepgame_eval_speed.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "stepgame"

LM_EVAL_SCRIPT = r"""
import json, sys, time
import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
model_dir, task_dir, batch_size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lm = HFLM(pretrained=model_dir, device="cpu", batch_size=batch_size, dtype="float32")
manager = TaskManager(include_path=task_dir)
t0 = time.perf_counter()
res = simple_evaluate(model=lm, tasks=["stepgame"], task_manager=manager, log_samples=True, num_fewshot=0,
                      bootstrap_iters=0)
seconds = time.perf_counter() - t0
samples = {}
for task, rows in res["samples"].items():
    for row in rows:
        samples[task + ":" + str(row["doc"]["id"])] = [float(r[0]) for r in row["filtered_resps"]]
acc = {t: v.get("acc,none") for t, v in res["results"].items()}
from importlib.metadata import version
json.dump({"seconds": seconds, "samples": samples, "acc": acc, "threads": torch.get_num_threads(),
           "lm_eval_version": version("lm_eval"), "transformers": version("transformers"),
           "torch": torch.__version__}, open(out, "w"))
"""


def can_import_lm_eval(python: str) -> bool:
    return subprocess.run([python, "-c", "import lm_eval"], capture_output=True).returncode == 0


def run_posttrain(files, per_file: int, batch_size: int):
    import torch

    from posttrain.generation import load_for_inference
    from posttrain.stepgame.harness import evaluate

    model, tokenizer, _ = load_for_inference("default")
    t0 = time.perf_counter()
    res = evaluate(model, tokenizer, files, mode="mc", chat="off", limit=per_file, batch_size=batch_size,
                   progress=False, model_name="default")
    seconds = time.perf_counter() - t0
    samples = {f"stepgame_{p['kind']}_k{p['k']}:{p['id']}": p["logprobs"] for p in res["predictions"]}
    return {"seconds": seconds, "samples": samples, "accuracy": res["overall"]["accuracy"],
            "threads": torch.get_num_threads()}


def generator_solver_throughput(n: int = 1000) -> dict:
    from posttrain.stepgame.generator import iter_pairs
    from posttrain.stepgame.solver import solve

    t0 = time.perf_counter()
    pairs = [p for k in range(1, 11) for p in iter_pairs(k, n, 0, "corrected")]
    gen_s = time.perf_counter() - t0
    noisy = [noisy for _, noisy in pairs]
    t0 = time.perf_counter()
    ok = sum(solve(ex["story"], ex["question"]) == ex["label"] for ex in noisy)
    solve_s = time.perf_counter() - t0
    return {"generate_stories": len(pairs), "generate_seconds": round(gen_s, 3),
            "generate_stories_per_second": round(len(pairs) / gen_s), "solve_examples": len(noisy),
            "solve_seconds": round(solve_s, 3), "solve_examples_per_second": round(len(noisy) / solve_s),
            "solver_accuracy_on_corrected_templates": ok / len(noisy)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=110, gridspec_kw={"width_ratios": [1.2, 1]})
    names, rates = ["posttrain"], [result["posttrain"]["examples_per_second"]]
    if result.get("lm_eval"):
        names.append("lm-eval")
        rates.append(result["lm_eval"]["examples_per_second"])
    bars = ax.bar(names, rates, color=["tab:blue", "tab:grey"][: len(names)])
    for bar, rate in zip(bars, rates):
        ax.text(bar.get_x() + bar.get_width() / 2, rate, f"{rate:.2f}", ha="center", va="bottom")
    title = f"StepGame 9-way MC, SmolLM2-135M, {result['examples']} stories"
    if result.get("speedup"):
        title += f"\nspeedup {result['speedup']:.2f}x"
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("examples / s (CPU, shared machine)")
    gs = result["generator_solver"]
    ax2.bar(["generate", "solve"], [gs["generate_stories_per_second"], gs["solve_examples_per_second"]],
            color="tab:green")
    ax2.set_ylabel("stories / s")
    ax2.set_title("generator and solver throughput", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-file", type=int, default=5, help="stories per noise valid file (k=1..10)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--lm-eval-python", default=sys.executable, help="interpreter that can import lm_eval")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "stepgame_eval_speed.json"))
    args = ap.parse_args()

    from posttrain.models import default_gguf_path, ensure_converted
    from posttrain.stepgame.lm_eval_export import export_lm_eval

    files = [Path(args.data) / "noise" / f"qa{k}_valid.json" for k in range(1, 11)]
    model_dir = ensure_converted(default_gguf_path())
    result = {"examples": args.per_file * len(files), "per_file": args.per_file, "batch_size": args.batch_size,
              "files": [str(f) for f in files], "model_dir": str(model_dir), "python": platform.python_version(),
              "cpus": os.cpu_count(), "machine": platform.machine(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "note": "2-core CPU machine shared with other workers; timings are noisy"}
    print(f"posttrain: scoring {result['examples']} stories x 9 answers ...", flush=True)
    ours = run_posttrain(files, args.per_file, args.batch_size)
    import torch
    import transformers

    result["posttrain"] = {"seconds": round(ours["seconds"], 2), "accuracy": ours["accuracy"],
                           "examples_per_second": round(result["examples"] / ours["seconds"], 3),
                           "torch_threads": ours["threads"], "transformers": transformers.__version__,
                           "torch": torch.__version__}
    print(f"  {ours['seconds']:.1f} s = {result['posttrain']['examples_per_second']:.2f} examples/s", flush=True)
    if can_import_lm_eval(args.lm_eval_python):
        with tempfile.TemporaryDirectory() as tmp:
            export_lm_eval(Path(tmp) / "task", files, limit=args.per_file, shots_from=())
            out = Path(tmp) / "lm_eval.json"
            print("lm-eval: same examples ...", flush=True)
            subprocess.run([args.lm_eval_python, "-c", LM_EVAL_SCRIPT, str(model_dir), str(Path(tmp) / "task"),
                            str(args.batch_size), str(out)], check=True,
                           env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
            theirs = json.loads(out.read_text())
        shared = sorted(set(theirs["samples"]) & set(ours["samples"]))
        diffs = [abs(a - b) for key in shared for a, b in zip(theirs["samples"][key], ours["samples"][key])]
        agree = sum(max(range(9), key=theirs["samples"][k].__getitem__) == max(range(9), key=ours["samples"][k]
                                                                                 .__getitem__) for k in shared)
        result["lm_eval"] = {"seconds": round(theirs["seconds"], 2),
                             "examples_per_second": round(result["examples"] / theirs["seconds"], 3),
                             "accuracy": theirs["acc"].get("stepgame"), "torch_threads": theirs["threads"],
                             "python": args.lm_eval_python, "lm_eval_version": theirs["lm_eval_version"],
                             "transformers": theirs["transformers"], "torch": theirs["torch"]}
        result["speedup"] = round(theirs["seconds"] / ours["seconds"], 2)
        result["agreement"] = {"examples_compared": len(shared), "max_abs_logprob_diff": max(diffs, default=None),
                               "same_argmax": agree}
        print(f"  {theirs['seconds']:.1f} s = {result['lm_eval']['examples_per_second']:.2f} examples/s; speedup "
              f"{result['speedup']:.2f}x; logprobs max |diff| {result['agreement']['max_abs_logprob_diff']:.2e}, "
              f"same argmax {agree}/{len(shared)}", flush=True)
    else:
        result["lm_eval"] = None
        result["lm_eval_missing"] = f"{args.lm_eval_python} cannot import lm_eval (pass --lm-eval-python)"
        print(f"lm-eval not measured: {result['lm_eval_missing']}")
    result["generator_solver"] = generator_solver_throughput()
    gs = result["generator_solver"]
    print(f"generator {gs['generate_stories_per_second']:,} stories/s; solver {gs['solve_examples_per_second']:,} "
          "examples/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
