"""Prompt-based fine-tuning step: restricted logits (posttrain) vs a naive full-vocabulary-logit implementation.

Prompt-based fine-tuning (LM-BFF, Gao et al. 2021; PCP, Shi & Lipani, NeurIPS 2023) needs the LM head only at the
label slot. The naive implementation (what LM-BFF's RobertaForPromptFinetuning does) runs the model's full forward,
i.e. (batch x tokens x vocabulary) logits, then picks the label position and the label-word columns. posttrain's
``task.objective: verbalizer`` runs the model's own head on the slot states only ((batch x vocabulary) logits; since
session 9, so that soft-capping and logit biases apply; before, it multiplied by the C verbalizer rows only) and
reads the label rows (``methods/verbalizer_head.py``). Both give the same loss (checked here).

Setup: SmolLM2-135M-Instruct (V = 49,152), SST-2 16-shot training sentences (LM-BFF split 16-13) rendered with
the PCP template "<S1> It was <mask> ." (the label word predicted from the left context), label words
" terrible"/" great", full fine-tuning with AdamW, ``--batch-size`` examples per step; optionally every example
padded to ``--pad-to`` tokens (the reference pads to max_length: 128 for single-sentence tasks).

Each implementation runs in its own child process (peak memory is per implementation): ``--warmup`` steps, then
``--steps`` timed steps (forward + backward + optimizer). Memory = peak resident set size (CPU; sampled every
10 ms) or peak allocated (GPU) during the timed steps minus the level after set-up and warm-up, i.e. activations
plus transient buffers (gradients are kept allocated and the optimizer state exists after the warm-up step, so
neither counts).

Usage:
    python benchmarks/prompt_ft_efficiency.py                     # writes docs/benchmarks/prompt_ft_efficiency.*
    python benchmarks/prompt_ft_efficiency.py --pad-to 128 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = ROOT / "docs" / "benchmarks"

from dept_efficiency import MALLOC_ENV  # noqa: E402  (the CPU peak-memory probe's allocator settings)


def batches(tokenizer, batch_size: int, pad_to: int, n_batches: int, device):
    from posttrain.config import load_config
    from posttrain.run_data import task_split
    from posttrain.methods import prompt_ft
    from posttrain.tasks import get_task

    cfg = load_config(None, ["task.name=SST-2", "task.train=kshot:train", "task.seed=13"])
    task = get_task("SST-2")
    examples = task_split(cfg, task, "train")
    rows, _ = prompt_ft.build_rows(tokenizer, task, examples, kind="causal", form="template", max_length=128,
                                   label_tokens="first", causal_scoring="slot", source="SST-2 16-13 train")
    collate = prompt_ft.PromptCollator(tokenizer.pad_token_id)
    out = []
    for i in range(n_batches):
        chunk = [rows[(i * batch_size + j) % len(rows)] for j in range(batch_size)]
        batch = collate(chunk)
        if pad_to:
            import torch

            extra = pad_to - batch["input_ids"].shape[1]
            if extra > 0:
                batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=tokenizer.pad_token_id)
                batch["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, extra), value=0)
        out.append({k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()})
    return out


def naive_loss(model, batch):
    """Full forward (all positions x all vocabulary rows), then the label position and the label columns."""
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    words = torch.tensor([[c[0] for c in row] for row in batch["candidates"]], device=logits.device)
    at_slot = logits[torch.arange(logits.shape[0], device=logits.device), batch["position"]]
    return F.cross_entropy(at_slot.gather(1, words).float(), batch["label"])


def restricted_loss(model, batch):
    from posttrain.methods import prompt_ft

    return prompt_ft.example_losses(prompt_ft.candidate_scores(model, batch, "causal"), batch, False).mean()


def child(spec: dict) -> dict:
    import torch

    from dept_efficiency import PeakMemory
    from posttrain.config import ModelConfig
    from posttrain.models import load_model_and_tokenizer

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=spec["model"], dtype=spec["dtype"]))
    model.to(device).train()
    loss_fn = {"naive": naive_loss, "restricted": restricted_loss}[spec["impl"]]
    data = batches(tokenizer, spec["batch_size"], spec["pad_to"], spec["warmup"] + spec["steps"], device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    first_losses = []

    def step(batch):
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: the probe measures activations
        return float(loss)

    for batch in data[: spec["warmup"]]:
        first_losses.append(step(batch))
    if device.type == "cuda":
        torch.cuda.synchronize()
    probe = PeakMemory(device)
    base = probe.current()
    times = []
    with probe:
        for batch in data[spec["warmup"]:]:
            start = time.perf_counter()
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    tokens = sum(int(b["attention_mask"].sum()) for b in data[spec["warmup"]:])
    return {"impl": spec["impl"], "step_s": sum(times) / len(times), "step_times": times,
            "activation_mib": (probe.peak - base) / 2**20, "first_loss": first_losses[0],
            "sequence_length": int(data[-1]["input_ids"].shape[1]), "real_tokens_per_step": tokens / len(times)}


def run_child(spec: dict) -> dict:
    print(f"[{spec['impl']}] running ...", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, **MALLOC_ENV},
                          cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"child {spec['impl']} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][7:])
    print(f"[{spec['impl']}] {result['step_s']:.3f} s/step, +{result['activation_mib']:.0f} MiB", flush=True)
    return result


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
    for ax, key, label in ((axes[0], "step_s", "step time (s)"), (axes[1], "activation_mib", "activation memory (MiB)")):
        values = [results[n][key] for n in names]
        ax.barh(names, values, color=["#999999", "#1f77b4"])
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}" if key == "step_s" else f" {v:.0f}", va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(values) * 1.25)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pad-to", type=int, default=0, help="pad every batch to this length (0 = dynamic)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--name", default="prompt_ft_efficiency")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    import torch

    common = dict(model=args.model, batch_size=args.batch_size, pad_to=args.pad_to, warmup=args.warmup,
                  steps=args.steps, dtype=args.dtype)
    results = {impl: run_child({**common, "impl": impl}) for impl in ("naive", "restricted")}
    same = abs(results["naive"]["first_loss"] - results["restricted"]["first_loss"]) < 1e-3
    device = ("cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"cpu: {platform.machine()}, {os.cpu_count()} cores")
    ratios = {"step_time": results["restricted"]["step_s"] / results["naive"]["step_s"],
              "activation_memory": results["restricted"]["activation_mib"] / results["naive"]["activation_mib"]}
    out = {
        "command": "python benchmarks/prompt_ft_efficiency.py " + " ".join(sys.argv[1:]),
        "model": args.model, "dtype": args.dtype, "batch_size": args.batch_size, "pad_to": args.pad_to,
        "data": "SST-2 16-shot train (lm_bff_kshot/SST-2/16-13), template '<S1> It was <mask> .', words terrible/great",
        "device": device, "torch": torch.__version__, "same_first_loss": same,
        "targets": {"step_time": 0.70, "activation_memory": 0.60}, "ratios": ratios, "results": results,
    }
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{args.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(results, path / f"{args.name}.png",
         f"prompt-FT step, {args.model}, batch {args.batch_size}, "
         f"length {results['naive']['sequence_length']}, {device}")
    print(json.dumps({"ratios": ratios, "same_first_loss": same}, indent=2))
    print(f"wrote {path / (args.name + '.json')} and .png")


if __name__ == "__main__":
    main()
