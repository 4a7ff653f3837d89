"""Model FLOPs per training token and model FLOPs utilisation (MFU), shared by the training benchmarks.

Formula (PaLM, Chowdhery et al. 2022, appendix B; Kaplan et al. 2020, "Scaling laws", Sec. 2.1): a decoder with
N matmul parameters trained on a sequence of length T costs per token

    6 * N  +  12 * n_layer * n_heads * head_dim * T          FLOPs

- N counts the weights of every matrix product a token goes through: per layer the q, k, v, o projections and
  the MLP matrices, plus the LM head (d x vocab; counted once even when tied to the input embedding, since the
  tie shares the weight, not the product). The embedding lookup is a gather (no FLOPs); norms, biases,
  activations and rotary embeddings are elementwise and left out, as in both papers.
- 6 = 2 (multiply + add) in the forward pass + 4 in the backward pass (the gradient with respect to the layer
  input and with respect to the weight, 2 each). A frozen weight needs no weight gradient, so it costs 4 while
  the input gradient must still flow through it; hence, with N = N_frozen + N_trainable,

      matmul FLOPs per token = 4 * N_frozen + 6 * N_trainable,

  which is 6 * N for full fine-tuning. This assumes gradients flow through every layer, which holds for full
  fine-tuning, LoRA on every layer, and prompt tuning / DePT (their trainable parameters sit at the input).
- Attention scores Q K^T and the weighted sum A V are two products of 2 * T * n_heads * head_dim FLOPs per token
  and layer in the forward pass, times 3 with the backward pass: 12 * n_layer * n_heads * head_dim * T. Like
  PaLM we count the full T x T product (no halving for the causal mask), so figures compare with published MFU.
  With several sequences of lengths L_i in a step (padding, or padding-free packing, each example attending only
  to itself), the attention FLOPs of the step are 12 * n_layer * n_heads * head_dim * sum_i L_i^2.

MFU = (model FLOPs of the measured steps / their wall time) / peak FLOP/s, with the peak *measured* on the same
machine by benchmarks/hardware_peak.py (matmul throughput of the run's precision). These are *model* FLOPs:
work an implementation skips (posttrain computes the LM head only at trained positions; TRL at every position)
or repeats (gradient checkpointing recomputes the forward pass) does not change them, so at equal model and data
MFU ratios equal throughput ratios.
"""

from __future__ import annotations

import json
from pathlib import Path


def matmul_params_from_config(config, mlp_matrices: int = 3) -> int:
    """N of a Llama-family config: per layer q, k, v, o and the MLP's ``mlp_matrices`` d x d_ff matrices (3 for the
    gated MLP: gate, up, down), plus the LM head d x vocab.

    Uses ``head_dim`` when the config sets it (else hidden_size / num_attention_heads) and
    ``num_key_value_heads`` for grouped-query attention. For other architectures count the model's modules
    with ``linear_params``.
    """
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    attention = 2 * d * heads * head_dim + 2 * d * kv_heads * head_dim  # q and o; k and v
    mlp = mlp_matrices * d * config.intermediate_size
    return config.num_hidden_layers * (attention + mlp) + d * config.vocab_size


def attention_width(config) -> int:
    """n_heads * head_dim (query heads: grouped-query attention shares K/V, not the score computations)."""
    heads = config.num_attention_heads
    return heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)


def linear_params(model) -> tuple[int, int]:
    """(N_frozen, N_trainable): weights of the model's ``nn.Linear`` modules (LoRA's A and B included), each
    distinct tensor once, split by ``requires_grad``. The LM head is an ``nn.Linear`` even when tied."""
    from torch import nn

    seen, frozen, trainable = set(), 0, 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            if module.weight.requires_grad:
                trainable += module.weight.numel()
            else:
                frozen += module.weight.numel()
    return frozen, trainable


def training_flops(tokens: int, sum_sq_lengths: int, n_layer: int, attn_width: int, frozen: int,
                   trainable: int) -> int:
    """Model FLOPs of training steps over ``tokens`` tokens in sequences whose squared lengths sum to
    ``sum_sq_lengths``: (4 * N_frozen + 6 * N_trainable) * tokens + 12 * n_layer * attn_width * sum L_i^2."""
    return (4 * frozen + 6 * trainable) * tokens + 12 * n_layer * attn_width * sum_sq_lengths


def sequence_lengths(input_ids, attention_mask=None, position_ids=None) -> list[int]:
    """Lengths of the sequences that attend within themselves in one forward: the attention-mask row sums of a
    padded batch; the spans between position-id restarts of a padding-free packed row; else whole rows."""
    if attention_mask is not None and attention_mask.dim() == 2:
        return [int(n) for n in attention_mask.sum(dim=1)]
    if position_ids is not None:
        lengths = []
        for row in position_ids.reshape(-1, position_ids.shape[-1]):
            restarts = (row[1:] != row[:-1] + 1).nonzero().flatten() + 1  # a new example where positions jump
            bounds = [0, *restarts.tolist(), int(row.shape[0])]
            lengths += [b - a for a, b in zip(bounds, bounds[1:])]
        return lengths
    return [int(input_ids.shape[-1])] * int(input_ids.numel() // input_ids.shape[-1])


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: tokens/s * FLOPs/token / peak FLOP/s (a fraction, 1.0 = the measured peak)."""
    return tokens_per_s * flops_per_token / peak_flops_per_s


def load_peak(path: str | Path, precision: str) -> dict:
    """The peak for ``precision`` ("fp32" or "bf16") from a hardware_peak.py JSON: the highest median TFLOP/s
    of any matmul measured in that precision (usually the large square one), with what it was measured on."""
    report = json.loads(Path(path).read_text())
    rows = [r for r in report["results"] if r["dtype"] == precision]
    if not rows:
        raise ValueError(f"{path}: no {precision} matmul measured")
    best = max(rows, key=lambda r: r["tflops_median"])
    return {"tflops": best["tflops_median"], "shape": best["name"], "dtype": precision, "source": str(path),
            "machine": report["machine"].get("cpu_model") or report["machine"].get("device"),
            "threads": report["machine"].get("torch_threads")}


def mfu_fields(flops: float, seconds: float, peak: dict | None) -> dict:
    """The report columns: model TFLOP/s of a run and its MFU against ``peak`` (``load_peak``), or None."""
    achieved = flops / seconds / 1e12
    return {"model_tflops_per_s": round(achieved, 4),
            "mfu": round(achieved / peak["tflops"], 4) if peak else None}


def resolve_peak(choice: str, precision: str, device: str = "cpu") -> tuple[dict | None, str]:
    """``--peak`` of the training benchmarks: a hardware_peak.py JSON path, ``measure`` (a quick square-matmul
    measurement now, in this process), or ``none``. Returns (peak or None, a note for the report)."""
    if choice == "none":
        return None, "MFU not computed (--peak none)"
    if choice != "measure":
        peak = load_peak(choice, precision)
        return peak, f"MFU against the {precision} peak in {choice} ({peak['shape']}: {peak['tflops']} TFLOP/s)"
    import hardware_peak  # beside this file: benchmarks/ is on sys.path when a benchmark script runs

    size = 8192 if device.startswith("cuda") else 2048  # a GPU needs a larger product to reach its peak
    row = hardware_peak.measure_square(size, precision, device=device, warmup=2, repeats=5)
    peak = {"tflops": row["tflops_median"], "shape": row["name"], "dtype": precision, "source": "measured now",
            "machine": hardware_peak.machine_info(device).get("cpu_model"), "threads": row["threads"]}
    return peak, (f"MFU against a quick {precision} peak measured by this run ({row['name']}, median of 5: "
                  f"{row['tflops_median']} TFLOP/s); for the reference peak run benchmarks/hardware_peak.py on a "
                  f"quiet machine and pass --peak its JSON")
