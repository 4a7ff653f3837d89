"""DePT efficiency: prompt tuning vs DePT vs LoRA vs full fine-tuning, dynamic vs fixed padding, and posttrain's
prompt tuning vs PEFT's, on SmolLM2-135M-Instruct with SST-2 sentences (Shi & Lipani, ICLR 2024, Sec. 4).

Every configuration runs in its own child process, one after another, so peak memory is per configuration.
A child loads the model, builds the method, and trains ``--warmup + --steps`` optimizer steps on text-to-text
SST-2 examples ("sentence: <text>" -> " positive"/" negative", loss on the label word only, logits only there),
then times inference (no-grad scoring of the label position). It reports:

- step time (forward + backward + AdamW step) and examples/s over the measured steps;
- peak memory during training minus the memory after the model and method were set up (CPU: resident set size
  sampled every 10 ms; GPU: ``torch.cuda.max_memory_allocated``), i.e. activations + gradients + optimizer state;
- inference latency per example;
- model TFLOP/s and MFU over the measured training steps (benchmarks/mfu.py: (4 N_frozen + 6 N_trainable) per
  token + 12 n_layer d_attn sum L_i^2, PaLM appendix B; the tokens are each row's real tokens plus its m virtual
  ones; DePT's low-rank embedding update, 2 r d FLOPs per token, is left out) against the measured matmul peak of
  ``--dtype`` (``--peak``: a hardware_peak.py JSON, ``measure`` = a quick square matmul now, or ``none``).

Three comparisons:
1. fixed input length s (``--s``, default 256, left-padded as in the reference): PT(100), DePT(60, r), DePT(40, r)
   with r from the equal-budget rule, LoRA (r=8, attention + MLP projections), full fine-tuning;
2. DePT(60) with dynamic padding (pad to the batch's longest example) vs fixed padding to s, on SST-2's real
   length distribution;
3. posttrain PT(100) vs PEFT ``PromptTuningConfig`` on identical inputs and prompt values (same loss checked).

Usage:
    python benchmarks/dept_efficiency.py                    # everything, writes docs/benchmarks/dept_efficiency.*
    python benchmarks/dept_efficiency.py --steps 2 --warmup 1 --batch-size 2 --only fixed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# glibc keeps freed heap pages and adapts its mmap threshold, so the resident set size would not fall back after
# a step; a fixed, low mmap threshold and no trim threshold make RSS follow live memory (CPU peak-memory probe).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
POOL = ROOT / ".." / "shared" / "data" / "pcp_unlabeled" / "SST-2" / "train.json"
OUT = ROOT / "docs" / "benchmarks"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/mfu.py
import mfu  # noqa: E402

WORDS = {"0": " negative", "1": " positive"}


def load_examples(n: int, pool: Path = POOL) -> list[tuple[str, str]]:
    rows = json.loads(Path(pool).read_text(encoding="utf-8"))
    items = [rows[k] for k in sorted(rows, key=int)][:n]
    return [(f"sentence: {r['text_a']}", WORDS[str(r["label"])]) for r in items]


# ------------------------------------------------------------------------------------------------ child process


class PeakMemory:
    def __init__(self, device):
        self.device, self.peak, self._stop = device, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.memory_allocated()
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.01)

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        self._stop.set()
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        elif self._thread.is_alive():
            self._thread.join()


def make_batches(tokenizer, examples, batch_size, pad_to, side, device):
    """Batches with labels/loss_weights on the label word's tokens only (as posttrain's SFT path builds them)."""
    import torch

    batches = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        encoded = []
        for text, word in chunk:
            prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
            target = tokenizer(word, add_special_tokens=False)["input_ids"]
            budget = (pad_to or 10**9) - len(target)
            encoded.append((prompt[:budget] + target, len(target)))
        length = pad_to or max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(chunk), length), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        weights = torch.zeros(ids.shape, dtype=torch.float32)
        for row, (seq, n_target) in enumerate(encoded):
            span = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
            ids[row, span] = torch.tensor(seq)
            mask[row, span] = 1
            labels[row, span] = torch.tensor(seq)
            weights[row, span.stop - n_target : span.stop] = 1.0
        batches.append({k: v.to(device) for k, v in
                        dict(input_ids=ids, attention_mask=mask, labels=labels, loss_weights=weights).items()})
    return batches


def build(spec, base, tokenizer):
    from posttrain.config import load_config
    import posttrain.methods  # noqa: F401  (registers every method)
    from posttrain.registry import method_named

    if spec["method"] == "peft_pt":
        from peft import PromptTuningConfig, TaskType, get_peft_model

        return get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=spec["m"]))
    overrides = [f"adapter.type={spec['method']}", f"data.max_length={spec['s']}", "adapter.prompt_init=vocab"]
    if spec["method"] in ("prompt_tuning", "dept"):
        overrides += [f"adapter.num_virtual_tokens={spec['m']}", f"adapter.dept_rank={max(spec.get('r', 0), 1)}",
                      f"adapter.offset_positions={spec.get('offset_positions', 'real_tokens')}"]
    return method_named(spec["method"]).wrap(base, load_config(None, overrides), tokenizer)


def child(spec: dict) -> dict:
    import torch

    from posttrain.config import ModelConfig
    from posttrain.losses import weighted_nll_sum
    from posttrain.models import load_model_and_tokenizer

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, spec.get("dtype", "float32"))
    if spec.get("random_init"):  # same architecture, random weights: timings and memory do not depend on values
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(spec["model"]), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    else:
        base, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=spec["model"], dtype=spec.get(
            "dtype", "float32")), for_training=True)
    model = build(spec, base.to(device), tokenizer).to(device)
    if spec.get("prompt_from") == "vocab_seed0":  # identical prompt values for posttrain and PEFT
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 5000, (spec["m"],), generator=gen)
        values = base.get_input_embeddings().weight[ids].detach().clone()
        target = (model.prompt if hasattr(model, "prompt") and isinstance(model.prompt, torch.nn.Parameter)
                  else model.prompt_encoder["default"].embedding.weight)
        with torch.no_grad():
            target.copy_(values)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    examples = load_examples(spec["batch_size"] * (spec["warmup"] + spec["steps"]), spec.get("pool", POOL))
    batches = make_batches(tokenizer, examples, spec["batch_size"], spec["pad_to"], spec["side"], device)

    def loss_of(batch):
        if spec["method"] == "peft_pt":  # PEFT computes full logits over the virtual and real positions
            labels = torch.where(batch["loss_weights"] > 0, batch["labels"], -100)
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        return weighted_nll_sum(model, batch) / batch["loss_weights"][:, 1:].sum()

    model.train()
    memory = PeakMemory(device)
    baseline = memory.current()
    times, losses = [], []
    with memory:
        for i, batch in enumerate(batches):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = loss_of(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - start)
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        for batch in batches[spec["warmup"]:]:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        infer = (time.perf_counter() - start) / (spec["steps"] * spec["batch_size"])
    step = sum(times) / len(times)
    lengths = [int(n) + (spec.get("m") or 0) for b in batches[spec["warmup"]:] for n in b["attention_mask"].sum(1)]
    frozen, trainable_matmul = mfu.linear_params(model)
    flops = mfu.training_flops(sum(lengths), sum(n * n for n in lengths), base.config.num_hidden_layers,
                               mfu.attention_width(base.config), frozen, trainable_matmul)
    return {
        "name": spec["name"], "method": spec["method"], "m": spec.get("m"), "r": spec.get("r"),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "step_time_s": round(step, 4), "examples_per_s": round(spec["batch_size"] / step, 3),
        "peak_memory_minus_model_mb": round((memory.peak - baseline) / 2**20, 1),
        "inference_ms_per_example": round(infer * 1000, 2),
        "mean_tokens_per_row": round(sum(int(b["input_ids"].shape[1]) for b in batches) / len(batches), 1),
        "first_loss": round(losses[0], 6), "device": str(device),
        "model_flops_per_step": flops // spec["steps"], "tokens_per_step": sum(lengths) // spec["steps"],
        "measured_seconds": round(sum(times), 4),
    }


# ------------------------------------------------------------------------------------------------ parent process


def configurations(args, d: int) -> dict[str, list[dict]]:
    from posttrain.methods.dept import budget_rank

    s = args.s
    r60, r40 = budget_rank(100, 60, s, d), budget_rank(100, 40, s, d)
    common = {"model": args.model, "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps, "s": s,
              "dtype": args.dtype, "random_init": args.random_init, "pool": str(args.pool)}
    fixed = dict(common, pad_to=s, side="left", offset_positions="absolute")
    dynamic = dict(common, pad_to=None, side="right")
    return {
        "fixed": [
            dict(fixed, name="PT(100)", method="prompt_tuning", m=100, r=0),
            dict(fixed, name=f"DePT(60, r={r60})", method="dept", m=60, r=r60),
            dict(fixed, name=f"DePT(40, r={r40})", method="dept", m=40, r=r40),
            dict(fixed, name="LoRA(r=8)", method="lora"),
            dict(fixed, name="full FT", method="full"),
        ],
        "padding": [
            dict(fixed, name=f"DePT(60, r={r60}) fixed s={s}", method="dept", m=60, r=r60),
            dict(dynamic, name=f"DePT(60, r={r60}) dynamic", method="dept", m=60, r=r60),
        ],
        "peft": [
            dict(dynamic, name="posttrain PT(100)", method="prompt_tuning", m=100, r=0, prompt_from="vocab_seed0"),
            dict(dynamic, name="PEFT PromptTuning(100)", method="peft_pt", m=100, prompt_from="vocab_seed0"),
        ],
    }


def run_child(spec: dict) -> dict:
    print(f"[{spec['name']}] running ...", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, **MALLOC_ENV, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        print(f"[{spec['name']}] failed: {tail}", flush=True)
        return {"name": spec["name"], "error": tail}
    result = json.loads(line[7:])
    print(f"[{spec['name']}] {result['step_time_s']:.3f} s/step, {result['examples_per_s']:.2f} ex/s, "
          f"+{result['peak_memory_minus_model_mb']:.0f} MiB, {result['inference_ms_per_example']:.1f} ms/ex inference",
          flush=True)
    return result


def ratio(a: dict, b: dict, key: str) -> float | None:
    if "error" in a or "error" in b or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def summarise(groups: dict[str, list[dict]]) -> dict:
    out = {}
    fixed = {r["name"]: r for r in groups.get("fixed", [])}
    pt = next((r for n, r in fixed.items() if n.startswith("PT(")), None)
    if pt:
        for name, r in fixed.items():
            if name.startswith("DePT"):
                out[f"{name} / PT(100) step time"] = ratio(r, pt, "step_time_s")
                out[f"{name} / PT(100) training memory"] = ratio(r, pt, "peak_memory_minus_model_mb")
                out[f"{name} / PT(100) inference latency"] = ratio(r, pt, "inference_ms_per_example")
    padding = groups.get("padding", [])
    if len(padding) == 2:
        out["DePT(60) dynamic / fixed examples per s"] = ratio(padding[1], padding[0], "examples_per_s")
    peft = groups.get("peft", [])
    if len(peft) == 2:
        out["posttrain PT / PEFT PT examples per s"] = ratio(peft[0], peft[1], "examples_per_s")
        if "error" not in peft[0] and "error" not in peft[1]:
            out["posttrain PT vs PEFT PT first-step loss |diff|"] = abs(peft[0]["first_loss"] - peft[1]["first_loss"])
    return out


def plot(groups: dict[str, list[dict]], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for g in groups.values() for r in g if "error" not in r]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(rows) + 1.8), dpi=110)
    colours = {"fixed": "#1f77b4", "padding": "#2ca02c", "peft": "#ff7f0e"}
    names = [f"{r['name']}" for r in rows]
    cols = [colours[g] for g, rs in groups.items() for r in rs if "error" not in r]
    for ax, key, label in zip(axes, ("step_time_s", "peak_memory_minus_model_mb", "examples_per_s"),
                              ("train step time, s (lower is better)", "training memory above the model, MiB",
                               "training examples / s (higher is better)")):
        ax.barh(names, [r[key] for r in rows], color=cols)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--s", type=int, default=256, help="fixed input length s (the reference pads to it)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=["fixed", "padding", "peft"], default=["fixed", "padding", "peft"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--random-init", action="store_true",
                        help="--model is a config+tokenizer directory; weights are random (for machines without them)")
    parser.add_argument("--pool", type=Path, default=POOL, help="SST-2 pool json (text_a/label rows)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--name", default="dept_efficiency")
    parser.add_argument("--peak", default="measure", help="hardware_peak.py JSON for MFU, 'measure' (quick "
                        "square matmul now) or 'none'")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if not args.pool.is_file():
        sys.exit(f"error: {args.pool}: SST-2 pool not found (expected the shared data folder beside the repository)")
    import torch
    import transformers

    if args.random_init:
        from transformers import AutoConfig

        d = AutoConfig.from_pretrained(args.model).hidden_size
    else:
        from posttrain.models import load_model_config

        d = load_model_config(args.model).hidden_size
    groups = {g: [run_child(spec) for spec in specs] for g, specs in configurations(args, d).items() if g in args.only}
    peak, peak_note = mfu.resolve_peak(args.peak, "bf16" if args.dtype == "bfloat16" else "fp32",
                                       "cuda" if torch.cuda.is_available() else "cpu")
    for runs in groups.values():
        for r in runs:
            if "error" not in r:
                r.update(mfu.mfu_fields(r["model_flops_per_step"] * args.steps, r["measured_seconds"], peak))
    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    result = {
        "command": "python benchmarks/dept_efficiency.py " + " ".join(sys.argv[1:]),
        "model": args.model + (" (random weights, same architecture)" if args.random_init else ""),
        "dtype": args.dtype, "hidden_size": d, "s": args.s, "batch_size": args.batch_size,
        "warmup_steps": args.warmup, "measured_steps": args.steps,
        "data": "SST-2 unlabelled pool (pcp_unlabeled/SST-2/train.json, first rows), 'sentence: <text>' -> label word",
        "device": device, "torch": torch.__version__, "transformers": transformers.__version__,
        "mfu": peak_note, "peak": peak,
        "ratios": summarise(groups), "results": groups,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(groups, out / f"{args.name}.png", f"{args.model}, batch {args.batch_size}, s={args.s}, {device}")
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {out / (args.name + '.json')} and .png")


if __name__ == "__main__":
    main()
