"""Matmul throughput of this machine (fp32 and bf16): the peak that the training benchmarks' MFU is measured against.

Measures ``torch.matmul`` on all cores (``torch.set_num_threads(--threads)``, default every CPU) for

- large square products (``--sizes``, default 2048 and 4096): the machine's reachable matmul peak;
- the products of one training step of a model's linear layers (``--model``, default the bundled
  SmolLM2-135M: d=576, d_ff=1536, 9 query / 3 key-value heads of 64, vocab 49,152), at T = ``--tokens`` rows
  (default 8 x 128 = 1024): for each weight W (out x in) the forward X W^T (T x in x out), the input gradient
  G W (T x out x in) and the weight gradient G^T X (out x T x in), in the layouts autograd uses.

FLOPs of an (M x K) @ (K x N) product: 2 * M * K * N. Each measurement is ``--warmup`` untimed calls, then
``--repeats`` timed ones (each a batch of calls long enough to be timed, ~20 ms), reported as the median and range
of TFLOP/s. The *model step* row divides the FLOPs of all of a step's linear-layer products (each layer's
products times n_layer, the head once) by the sum of their median times: the ceiling for this model's matmuls at
this T, below the square peak because small products do not fill the cores.

Writes hardware_peak.json (machine: CPU model, flags, cores, threads, torch; load average before and after, as
a quietness check), hardware_peak.md (table) and hardware_peak.png to ``--out``.

Usage:
    python benchmarks/hardware_peak.py                                  # docs/benchmarks/hardware_peak/
    python benchmarks/hardware_peak.py --sizes 256 --tokens 64 --repeats 3 --out /tmp/peak   # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "hardware_peak"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
MIN_TIMED_S = 0.02  # one timed repeat runs the product this long or longer, so timer resolution does not matter


def machine_info(device: str = "cpu") -> dict:
    import torch

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": device,
            "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
            "mkldnn": torch.backends.mkldnn.is_available()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), None)
        flags = set(next((l.split(":", 1)[1].split() for l in cpuinfo.splitlines() if l.startswith("flags")), []))
        info["cpu_model"] = model
        info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
    except OSError:
        info["cpu_model"] = platform.processor() or platform.machine()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _operands(m: int, k: int, n: int, layout: str, dtype, device):
    """Tensors whose product has shape (m x k) @ (k x n) in the memory layout autograd gives that product."""
    import torch

    def rand(*shape):
        return torch.randn(*shape, dtype=dtype, device=device)

    if layout == "x_wT":  # forward: X (T x in) times W^T, W stored (out x in)
        return rand(m, k), rand(n, k).t()
    if layout == "gT_x":  # weight gradient: G^T (out x T), G stored (T x out)
        return rand(k, m).t(), rand(k, n)
    return rand(m, k), rand(k, n)  # plain row-major (square products, input gradient G W)


def measure_matmul(name: str, m: int, k: int, n: int, precision: str, *, layout: str = "plain", device: str = "cpu",
                   warmup: int = 3, repeats: int = 10) -> dict:
    """Median / min / max TFLOP/s of ``torch.matmul`` on one shape: 2*m*k*n FLOPs per product."""
    import torch

    a, b = _operands(m, k, n, layout, getattr(torch, DTYPES[precision]), device)
    out = torch.empty(m, n, dtype=a.dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(calls: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b, out=out)
        sync()
        return time.perf_counter() - start

    for _ in range(warmup):
        timed(1)
    calls = max(1, math.ceil(MIN_TIMED_S / max(timed(1), 1e-7)))
    rates = [2 * m * k * n * calls / timed(calls) / 1e12 for _ in range(repeats)]
    return {"name": name, "dtype": precision, "m": m, "k": k, "n": n, "layout": layout, "calls_per_repeat": calls,
            "repeats": repeats, "tflops_median": significant(statistics.median(rates)),
            "tflops_min": significant(min(rates)), "tflops_max": significant(max(rates)),
            "threads": torch.get_num_threads()}


def significant(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (tiny products on a CPU run at a few GFLOP/s: 0.00x TFLOP/s)."""
    return float(f"{x:.{digits}g}")


def measure_square(size: int, precision: str, **kwargs) -> dict:
    return measure_matmul(f"square {size}", size, size, size, precision, **kwargs)


def model_linears(config) -> list[tuple[str, int, int, int]]:
    """(name, in, out, count per step) of a Llama-family model's linear layers; count = n_layer (head: 1)."""
    d, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    return [("q_proj", d, heads * head_dim, layers), ("k_proj/v_proj", d, kv, 2 * layers),
            ("o_proj", heads * head_dim, d, layers), ("gate_proj/up_proj", d, config.intermediate_size, 2 * layers),
            ("down_proj", config.intermediate_size, d, layers), ("lm_head", d, config.vocab_size, 1)]


def step_products(config, tokens: int) -> list[tuple[str, int, int, int, str, int]]:
    """(name, m, k, n, layout, count) of the three products per linear layer in a training step at T=tokens."""
    rows = []
    for name, fan_in, fan_out, count in model_linears(config):
        rows += [(f"{name} forward", tokens, fan_in, fan_out, "x_wT", count),
                 (f"{name} input grad", tokens, fan_out, fan_in, "plain", count),
                 (f"{name} weight grad", fan_out, tokens, fan_in, "gT_x", count)]
    return rows


def load_config(model: str):
    if Path(model, "config.json").is_file():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model)
    from posttrain.models import load_model_config

    return load_model_config(model)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Command: `{report['command']}`", "",
             f"Machine: {m.get('cpu_model')}, {m['cpu_count']} CPUs, torch {m['torch']} on {m['torch_threads']} "
             f"threads, CPU capability {m.get('cpu_capability')}, flags {', '.join(m.get('cpu_flags', []))}"
             + (f"; GPU {m['gpu']}" if m.get("gpu") else "") + f"; load average before/after "
             f"{report['load_average_before']} / {report['load_average_after']}; {report['date']}", "",
             "| product | dtype | M x K x N | per step | TFLOP/s median | min - max |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['name']} | {r['dtype']} | {r['m']} x {r['k']} x {r['n']} | {r.get('count', '')} | "
                     f"{r['tflops_median']:.4g} | {r['tflops_min']:.4g} - {r['tflops_max']:.4g} |")
    for precision, row in report["model_step"].items():
        lines.append(f"| **model step, FLOP-weighted** | {precision} | T = {report['tokens']} | all | "
                     f"{row['tflops']:.4g} | |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["name"] for r in report["results"]}, key=[r["name"] for r in report["results"]].index)
    names += ["model step (FLOP-weighted)"]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.5), dpi=110)
    height = 0.8 / len(report["precisions"])
    for i, precision in enumerate(report["precisions"]):
        by_name = {r["name"]: r["tflops_median"] for r in report["results"] if r["dtype"] == precision}
        by_name["model step (FLOP-weighted)"] = report["model_step"].get(precision, {}).get("tflops", 0)
        ax.barh([j + i * height for j in range(len(names))], [by_name.get(n, 0) for n in names], height=height,
                label=precision)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("TFLOP/s (median)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend()
    ax.set_title(f"torch.matmul, {report['machine'].get('gpu') or report['machine'].get('cpu_model')}, "
                 f"{report['machine']['torch_threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096], help="square products")
    parser.add_argument("--model", default="default", help="model spec or a directory with config.json")
    parser.add_argument("--tokens", type=int, default=8 * 128, help="T = batch x sequence length of the products")
    parser.add_argument("--no-model", action="store_true", help="square products only")
    parser.add_argument("--precisions", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    import sys

    import torch

    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    timing = {"device": args.device, "warmup": args.warmup, "repeats": args.repeats}
    results, model_step = [], {}
    products = [] if args.no_model else step_products(load_config(args.model), args.tokens)
    for precision in args.precisions:
        for size in args.sizes:
            results.append(measure_square(size, precision, **timing))
            print(f"{results[-1]['name']} {precision}: {results[-1]['tflops_median']} TFLOP/s", flush=True)
        step_flops = step_seconds = 0.0
        for name, m, k, n, layout, count in products:
            row = dict(measure_matmul(name, m, k, n, precision, layout=layout, **timing), count=count)
            results.append(row)
            step_flops += 2 * m * k * n * count
            step_seconds += 2 * m * k * n * count / (row["tflops_median"] * 1e12)
            print(f"{name} {precision} ({m}x{k}x{n}): {row['tflops_median']} TFLOP/s", flush=True)
        if products:
            model_step[precision] = {"tflops": significant(step_flops / step_seconds / 1e12),
                                     "flops": int(step_flops), "seconds": round(step_seconds, 6)}
    report = {"command": "python benchmarks/hardware_peak.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(args.device), "model": None if args.no_model else args.model,
              "tokens": args.tokens, "precisions": args.precisions, "warmup": args.warmup, "repeats": args.repeats,
              "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "date": time.strftime("%Y-%m-%d"), "results": results, "model_step": model_step}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hardware_peak.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "hardware_peak.md").write_text(markdown(report))
    plot(report, out / "hardware_peak.png")
    print(f"wrote {out}/hardware_peak.json, .md, .png")
    return report


if __name__ == "__main__":
    main()
