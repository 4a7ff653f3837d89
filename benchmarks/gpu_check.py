"""The GPU check of issue 20, part 4: one command, under 8 minutes on one GPU, JSON + PNG.

Parts, each in its own time limit (a part that runs over is recorded as ``timeout``, the rest still run):

1. ``peak``: benchmarks/hardware_peak.py on the device (bf16 and fp32 square products, the model's step products),
   the peak every MFU below is measured against;
2. ``sft``: benchmarks/sft_throughput.py, tokens/s, peak memory and MFU of posttrain vs TRL vs TRL with Liger
   kernels (``use_liger_kernel``), bf16 autocast;
3. ``attention``: sft_throughput.py's padding-free configurations: SDPA with a block mask vs posttrain_varlen vs
   FlashAttention-2 varlen (``flash_attention_2``, where flash-attn is installed);
4. ``cross_entropy``: posttrain's ``FusedLinearCrossEntropy`` vs Liger's ``LigerFusedLinearCrossEntropyLoss`` vs
   eager ``F.linear`` + ``F.cross_entropy``: forward + backward time, peak memory, loss and gradients compared;
5. ``dept``: benchmarks/dept_efficiency.py, DePT vs prompt tuning vs LoRA vs full, and posttrain's prompt tuning
   vs PEFT's ``PromptTuningConfig``.

The model is SmolLM2-135M's architecture with random weights (timings do not depend on the values; the weights
are too large to carry), its tokenizer, the first LIMA conversations and SST-2 sentences: ``prepare`` writes
them, and the wheels the GPU machine lacks, into an assets folder (default runs/gpu_check_assets/, git-ignored).

``--dry-run`` runs the same code on the CPU with a tiny random model and tokenizer built here, 1 warm-up + 1
measured step and tiny products; the GPU-only parts (Liger's Triton kernels, flash-attn) are skipped with the
reason recorded. tests/test_gpu_check.py runs it.

Usage:
    python benchmarks/gpu_check.py prepare                        # here, with network: assets + wheels
    bash benchmarks/gpu_check.sh                                  # on the GPU machine (installs, runs, packs)
    python benchmarks/gpu_check.py run --dry-run --out /tmp/gc    # CPU dry run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ASSETS = ROOT / "runs" / "gpu_check_assets"  # runs/ is git-ignored; name it in the device tool's carry
SHARED = ROOT / ".." / "shared" / "data"
# Missing on the lent GPU machine's image (see .library/device KINDS.md); pinned as in constraints.txt
WHEELS = ["trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "liger-kernel==0.8.5"]
SFT_CONFIGS = ["posttrain-full-bf16", "trl-full-bf16", "trl-full-bf16-liger"]
ATTENTION_CONFIGS = ["posttrain-full-bf16-packing", "posttrain-full-bf16-packing-varlen",
                     "posttrain-full-bf16-packing-flash"]
# (name, tokens, d, vocab): SmolLM2-135M's head, and a Llama-3-8B-sized head
CE_SHAPES = {"gpu": [("smollm2-135m head", 16384, 576, 49152), ("llama3-8b head", 8192, 4096, 128256)],
             "dry": [("tiny head", 64, 32, 512)]}
# part -> seconds: 410 in all; with gpu_check.sh's install (45 s at most) and start-up, under 8 minutes
LIMITS = {"peak": 40, "sft": 130, "attention": 90, "cross_entropy": 40, "dept": 110}


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_only_reason(config: str) -> str | None:
    """Why an sft_throughput configuration cannot run here, or None."""
    if config.endswith("-liger"):
        if not cuda():
            return "Liger kernels are Triton GPU kernels: no CUDA device"
        if importlib.util.find_spec("liger_kernel") is None:
            return "liger-kernel is not installed"
    if config.endswith("-flash"):
        if not cuda():
            return "FlashAttention-2 needs a CUDA device"
        if importlib.util.find_spec("flash_attn") is None:
            return ("flash-attn is not installed (PyPI has it as source only, a build takes longer than this "
                    "check; put a prebuilt wheel matching the machine's torch/CUDA into the assets' wheels/)")
    return None


# ------------------------------------------------------------------------------------------------ assets


def tiny_assets(folder: Path) -> None:
    """A tiny random-model directory (Llama config + a byte-level BPE tokenizer with a ChatML template), messages
    rows and an SST-2-shaped pool, all generated here: the dry run needs no download and no bundled model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    sentences = ["the film is a delight from start to finish", "a dull and tired story with no surprises",
                 "what is the capital of france ? paris is the capital .", "write a short poem about the sea"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(sentences * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
                               "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}"
                               "{{'<|im_start|>assistant\n'}}{% endif %}")
    model_dir = folder / "model"
    tokenizer.save_pretrained(model_dir)
    # 5120 rows: dept_efficiency draws prompt initialisations from the first 5000 token ids
    LlamaConfig(vocab_size=5120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                tie_word_embeddings=True).save_pretrained(model_dir)
    rows = [{"messages": [{"role": "user", "content": a}, {"role": "assistant", "content": b}]}
            for a, b in zip(sentences * 4, sentences[1:] * 4 + sentences[:1])]
    (folder / "sft_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = {str(i): {"text_a": s, "label": str(i % 2)} for i, s in enumerate(sentences * 8)}
    (folder / "sst2_pool.json").write_text(json.dumps(pool))


def prepare(folder: Path, wheels: bool) -> None:
    """SmolLM2-135M's config and tokenizer (no weights), 128 LIMA conversations, 512 SST-2 sentences, wheels."""
    sys.path.insert(0, str(ROOT / "src"))
    from posttrain.config import ModelConfig
    from posttrain.models import load_model_config, load_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    load_model_config("default").save_pretrained(folder / "model")
    load_tokenizer(ModelConfig()).save_pretrained(folder / "model")
    lima = (SHARED / "instruction" / "lima_data.jsonl").read_text(encoding="utf-8").splitlines()[:128]
    (folder / "sft_rows.jsonl").write_text("\n".join(lima) + "\n")
    rows = json.loads((SHARED / "pcp_unlabeled" / "SST-2" / "train.json").read_text(encoding="utf-8"))
    (folder / "sst2_pool.json").write_text(json.dumps({k: rows[k] for k in sorted(rows, key=int)[:512]}))
    if wheels:  # the GPU machine cannot reach PyPI: carry them (wheels for its Python 3.12, no dependencies)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                        "-d", str(folder / "wheels"), *WHEELS], check=True)
    print(f"wrote {folder}")


# ------------------------------------------------------------------------------------------------ parts


def run_script(script: str, args: list[str], limit: float, out: Path) -> dict:
    """One benchmark script as a child process within ``limit`` seconds; its log beside its results."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired as err:
        text = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        (out / "log.txt").write_text(text)
        return {"status": "timeout", "seconds": round(time.perf_counter() - start, 1), "limit_s": limit}
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    status = {"status": "ok" if proc.returncode == 0 else "failed", "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode != 0:
        status["error"] = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return status


def sft_part(configs: list[str], assets: Path, out: Path, dry: bool, peak: Path | None, limit: float) -> dict:
    skipped = {c: reason for c in configs if (reason := gpu_only_reason(c))}
    runnable = [c for c in configs if c not in skipped]
    size = ["--rows", "8", "--batch-size", "2", "--max-length", "128", "--warmup", "1", "--steps", "1"] if dry else \
        ["--rows", "128", "--batch-size", "16", "--max-length", "512", "--warmup", "2", "--steps", "6"]
    result = run_script("sft_throughput.py", ["--configs", *runnable, "--model", str(assets / "model"),
                                              "--random-init", "--data", str(assets / "sft_rows.jsonl"),
                                              "--peak", str(peak) if peak else "none", "--out", str(out), *size],
                        limit, out)
    result["skipped"] = skipped
    if (out / "sft_throughput.json").is_file():
        report = json.loads((out / "sft_throughput.json").read_text())
        result["results"] = [{k: r.get(k) for k in ("name", "tokens_per_s", "peak_cuda_mb", "peak_rss_mb",
                                                      "model_tflops_per_s", "mfu", "error")}
                             for r in report["results"]]
        result["ratios"] = report["ratios"]
    return with_child_errors(result)


def with_child_errors(part: dict) -> dict:
    """A part whose script ran but some configuration failed is ``failed``, naming them."""
    failed = [r["name"] for r in part.get("results", []) if r.get("error")]
    if failed and part["status"] == "ok":
        part.update(status="failed", error=f"configurations failed: {', '.join(failed)} (see results)")
    return part


def time_ce(impl, hidden, weight, targets, repeats: int) -> dict:
    """Median forward+backward ms of ``impl`` and its peak memory above the inputs (CUDA only)."""
    import statistics

    import torch

    on_gpu = hidden.is_cuda
    times = []
    for i in range(repeats + 1):  # the first call warms up (kernel compilation, allocator)
        hidden.grad = weight.grad = None
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        loss = impl(hidden, weight, targets)
        loss.backward()
        if on_gpu:
            torch.cuda.synchronize()
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return {"ms_median": round(statistics.median(times), 3), "loss": float(loss.detach()),
            "peak_mb_above_inputs": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1) if on_gpu else None,
            "grads": (hidden.grad.float().clone(), weight.grad.float().clone())}


def cross_entropy_part(dry: bool) -> dict:
    """Sum-reduced CE of a linear head, three implementations, on the CE_SHAPES; gradients compared to eager."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT / "src"))
    from posttrain.losses import FusedLinearCrossEntropy

    impls = {"eager": lambda h, w, y: F.cross_entropy(F.linear(h, w).float(), y, reduction="sum"),
             "posttrain": lambda h, w, y: FusedLinearCrossEntropy.apply(h, w, y, torch.ones_like(y, dtype=h.dtype))}
    skipped = {}
    if not cuda():
        skipped["liger"] = "Liger kernels are Triton GPU kernels: no CUDA device"
    elif importlib.util.find_spec("liger_kernel") is None:
        skipped["liger"] = "liger-kernel is not installed"
    else:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(reduction="sum")

        def liger_loss(h, w, y):
            out = liger(w, h, y)  # Liger's order: (head weight, hidden states, targets)
            return out[0] if isinstance(out, tuple) else out

        impls["liger"] = liger_loss
    device, dtype = ("cuda", torch.bfloat16) if cuda() else ("cpu", torch.float32)
    shapes = []
    for name, n, d, vocab in CE_SHAPES["dry" if dry else "gpu"]:
        gen = torch.Generator(device=device).manual_seed(0)
        hidden = torch.randn(n, d, device=device, dtype=dtype, generator=gen).requires_grad_()
        weight = (torch.randn(vocab, d, device=device, dtype=dtype, generator=gen) * 0.02).requires_grad_()
        targets = torch.randint(0, vocab, (n,), device=device, generator=gen)
        runs = {k: time_ce(f, hidden, weight, targets, 2 if dry else 5) for k, f in impls.items()}
        ref_h, ref_w = runs["eager"].pop("grads")
        for run in runs.values():
            if "grads" in run:
                gh, gw = run.pop("grads")
                run["max_abs_grad_diff_vs_eager"] = round(max(float((gh - ref_h).abs().max()),
                                                              float((gw - ref_w).abs().max())), 6)
                run["loss_rel_diff_vs_eager"] = abs(run["loss"] - runs["eager"]["loss"]) / abs(runs["eager"]["loss"])
        shapes.append({"name": name, "tokens": n, "d": d, "vocab": vocab, "dtype": str(dtype), "runs": runs})
        del hidden, weight
    return {"skipped": skipped, "shapes": shapes}


# ------------------------------------------------------------------------------------------------ report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), dpi=100)
    sft = [r for part in ("sft", "attention") for r in report["parts"][part].get("results", []) if not r.get("error")]
    memory = "peak_cuda_mb" if sft and all(r.get("peak_cuda_mb") for r in sft) else "peak_rss_mb"
    for ax, key, label in ((axes[0][0], "tokens_per_s", "SFT tokens/s"), (axes[0][1], memory, f"SFT {memory}")):
        ax.barh([r["name"] for r in sft], [r[key] for r in sft], color="#1f77b4")
        ax.set_xlabel(label)
        ax.invert_yaxis()
    ce = [(f"{s['name']}: {k}", v["ms_median"]) for s in report["parts"]["cross_entropy"].get("shapes", [])
          for k, v in s["runs"].items()]
    axes[1][0].barh([n for n, _ in ce], [v for _, v in ce], color="#2ca02c")
    axes[1][0].set_xlabel("linear + cross-entropy forward+backward, ms")
    axes[1][0].invert_yaxis()
    dept = report["parts"]["dept"].get("results", [])
    axes[1][1].barh([r["name"] for r in dept], [r.get("step_time_s") or 0 for r in dept], color="#ff7f0e")
    axes[1][1].set_xlabel("DePT / PT / PEFT train step, s")
    axes[1][1].invert_yaxis()
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"gpu_check on {report['device']}" + (" (dry run: tiny model, not a measurement)"
                                                       if report["dry_run"] else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(assets: Path, out: Path, dry: bool) -> dict:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if dry:
        assets = out / "assets"
        tiny_assets(assets)
    elif not (assets / "model" / "config.json").is_file():
        sys.exit(f"error: {assets}: no assets; run `python benchmarks/gpu_check.py prepare` first")
    device = torch.cuda.get_device_name(0) if cuda() else "cpu"
    parts: dict[str, dict] = {}
    peak_args = ["--sizes", "64", "--tokens", "16", "--repeats", "2", "--warmup", "1"] if dry else \
        ["--sizes", "4096", "8192", "--tokens", "8192", "--repeats", "10"]
    parts["peak"] = run_script("hardware_peak.py", [*peak_args, "--model", str(assets / "model"), "--device",
                                                    "cuda" if cuda() else "cpu", "--out", str(out / "peak")],
                               LIMITS["peak"], out / "peak")
    peak = out / "peak" / "hardware_peak.json"
    if peak.is_file():
        parts["peak"]["model_step"] = json.loads(peak.read_text())["model_step"]
    peak = peak if peak.is_file() else None
    for name, configs in (("sft", SFT_CONFIGS), ("attention", ATTENTION_CONFIGS)):
        parts[name] = sft_part(configs, assets, out / name, dry, peak, LIMITS[name])
    # a child process too: a hanging kernel compilation or a crash must not lose the other parts' results
    ce_file = out / "cross_entropy" / "cross_entropy.json"
    parts["cross_entropy"] = run_script("gpu_check.py", ["cross-entropy", *(["--dry-run"] if dry else []), "--out",
                                                         str(ce_file)], LIMITS["cross_entropy"], ce_file.parent)
    if ce_file.is_file():
        parts["cross_entropy"].update(json.loads(ce_file.read_text()))
    size = ["--s", "32", "--batch-size", "2", "--warmup", "1", "--steps", "1", "--dtype", "float32"] if dry else \
        ["--s", "256", "--batch-size", "16", "--warmup", "2", "--steps", "5", "--dtype", "bfloat16"]
    parts["dept"] = run_script("dept_efficiency.py", [*size, "--only", "fixed", "peft", "--random-init", "--model",
                                                      str(assets / "model"), "--pool", str(assets / "sst2_pool.json"),
                                                      "--peak", str(peak) if peak else "none", "--out",
                                                      str(out / "dept")], LIMITS["dept"], out / "dept")
    if (out / "dept" / "dept_efficiency.json").is_file():
        dept = json.loads((out / "dept" / "dept_efficiency.json").read_text())
        parts["dept"]["ratios"] = dept["ratios"]
        parts["dept"]["results"] = [{k: r.get(k) for k in ("name", "step_time_s", "examples_per_s", "mfu",
                                                            "peak_memory_minus_model_mb", "error")}
                                    for g in dept["results"].values() for r in g]
        with_child_errors(parts["dept"])
    report = {"command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]), "dry_run": dry,
              "device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
              "date": time.strftime("%Y-%m-%d %H:%M"), "limits_s": LIMITS, "parts": parts}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "gpu_check.png")
    print(json.dumps({k: v["status"] for k, v in parts.items()}), flush=True)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the assets (model config, tokenizer, data) and download wheels")
    p.add_argument("--assets", type=Path, default=ASSETS)
    p.add_argument("--no-wheels", action="store_true")
    r = sub.add_parser("run", help="run every part and write gpu_check.json + gpu_check.png")
    r.add_argument("--assets", type=Path, default=ASSETS)
    r.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    r.add_argument("--dry-run", action="store_true", help="CPU, tiny random model, 1+1 steps")
    c = sub.add_parser("cross-entropy", help="part 4 alone (run by `run` as a child process)")
    c.add_argument("--dry-run", action="store_true")
    c.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if getattr(args, "dry_run", False):  # the CPU code path also on a GPU machine, for this process and its children
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.command == "prepare":
        prepare(args.assets, not args.no_wheels)
    elif args.command == "cross-entropy":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(cross_entropy_part(args.dry_run), indent=2) + "\n")
    else:
        run(args.assets, args.out, args.dry_run)


if __name__ == "__main__":
    main()
