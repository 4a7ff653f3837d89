"""Weighted next-token loss that never materialises the full (tokens x vocabulary) logits.

For a batch with targets y_t and weights w_t (the weight of predicting token t from x_<t):

    S = sum_{t: w_t > 0} w_t * nll_t,    nll_t = logsumexp(W h_{t-1}) - (W h_{t-1})[y_t]

Two savings, both exact:

1. *Only trained positions.* ``logits_to_keep`` (a boolean (batch, seq) mask, transformers >= 5) selects the
   hidden states whose next token is trained, so masked instruction tokens and padding never reach the head.
2. *Fused, chunked head + cross-entropy.* The model runs with its LM head swapped for an identity, so it returns
   the selected hidden states H (N x d). ``FusedLinearCrossEntropy`` then walks H in row chunks: logits of one
   chunk (c x V), their log-sum-exp, the chunk's loss, and, when training, the chunk's gradients
   dS/dH_c = G_c W and dS/dW += G_c^T H_c with G_c = w * (softmax - onehot). Peak memory for the head is one
   chunk of logits instead of N x V (for SmolLM2, V = 49,152: 0.2 MB per row), and no matmul is recomputed.

Encoder-decoder batches (``decoder_input_ids`` present, ``data.seq2seq``) are aligned on the decoder side:
decoder position j predicts ``labels[j]`` (the inputs are already shifted right), so no shift is applied.

Models whose logits are post-processed (soft-capping, logit scales), or whose head is not a plain bias-free
``nn.Linear`` (e.g. LoRA on the head), use the ordinary logits path instead; the results are the same.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_ELEMENTS = 2**25  # logits per chunk (128 MiB in fp32)


def target_positions(loss_weights: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T) mask of positions whose hidden state predicts a trained next token (decoder-only)."""
    keep = torch.zeros_like(loss_weights, dtype=torch.bool)
    keep[:, :-1] = loss_weights[:, 1:] > 0
    return keep


def is_seq2seq_batch(batch: dict) -> bool:
    return "decoder_input_ids" in batch


def target_mask(batch: dict) -> torch.Tensor:
    """Boolean (B, T) mask of the output positions that predict a trained target: the position before each
    trained token (decoder-only), the target's own decoder position (encoder-decoder)."""
    if is_seq2seq_batch(batch):
        return batch["loss_weights"] > 0
    return target_positions(batch["loss_weights"])


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under DDP / PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, FSDP
            model = model.module
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            model = model.get_base_model()
        else:
            return model


def _accepts(module: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def fusable_head(model: nn.Module) -> nn.Linear | None:
    """The LM head if the fused path is exact for this model, else None."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    if config is None or not _accepts(inner, "logits_to_keep"):
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not nn.Linear or head.bias is not None:
        return None
    return head


@contextlib.contextmanager
def head_bypassed(model: nn.Module):
    """Within the block, ``model(...)`` returns hidden states in place of logits."""
    inner = _unwrap(model)
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """S = sum_i w_i * CE(H_i W^T, y_i), gradients computed chunk by chunk in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, row_weights):
        with full_precision(hidden):  # its own fp32 logits and gradients, also under train.mixed_precision
            return FusedLinearCrossEntropy._forward(ctx, hidden, weight, targets, row_weights)

    @staticmethod
    def _forward(ctx, hidden, weight, targets, row_weights):
        n, vocab = hidden.shape[0], weight.shape[0]
        chunk = max(1, CHUNK_ELEMENTS // vocab)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w32 = weight.float()
        for start in range(0, n, chunk):
            h = hidden[start : start + chunk].float()
            y = targets[start : start + chunk]
            rw = row_weights[start : start + chunk].float()
            logits = h @ w32.T
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, y[:, None]).squeeze(1)) * rw).sum()
            if need_h or need_w:
                g = torch.softmax(logits, dim=-1)  # reuse the chunk: softmax - onehot, scaled by the row weight
                g[torch.arange(len(y), device=g.device), y] -= 1.0
                g *= rw[:, None]
                if need_h:
                    grad_h[start : start + chunk] = (g @ w32).to(hidden.dtype)
                if need_w:
                    grad_w.addmm_(g.T, h)
        ctx.save_for_backward(grad_h if need_h else torch.empty(0), grad_w if need_w else torch.empty(0))
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w = ctx.saved_tensors
        dh = grad_h * grad_output.to(grad_h.dtype) if ctx.needs_input_grad[0] else None
        dw = (grad_w * grad_output).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return dh, dw, None, None


def chunked_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row NLL without gradients, one chunk of logits at a time (evaluation)."""
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    out = []
    with full_precision(hidden):
        for start in range(0, hidden.shape[0], chunk):
            logits = hidden[start : start + chunk].float() @ weight.float().T
            y = targets[start : start + chunk]
            out.append(torch.logsumexp(logits, -1) - logits.gather(1, y[:, None]).squeeze(1))
    return torch.cat(out) if out else hidden.new_zeros(0)


def full_precision(tensor: torch.Tensor):
    """Autocast off on ``tensor``'s device: a loss over the whole vocabulary keeps fp32 logits (log-sum-exp over
    ~50k entries) when the model runs under train.mixed_precision."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "decoder_input_ids", "decoder_attention_mask")


def _model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in _MODEL_INPUTS if k in batch}


def _targets(batch: dict, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if is_seq2seq_batch(batch):
        return batch["labels"][keep], batch["loss_weights"][keep]
    selected = keep[:, :-1]
    return batch["labels"][:, 1:][selected], batch["loss_weights"][:, 1:][selected]


def _selected_hidden(model, batch: dict, keep: torch.Tensor):
    with head_bypassed(model) as head:
        hidden = model(**_model_inputs(batch), logits_to_keep=keep, use_cache=False).logits
    return hidden.reshape(-1, hidden.shape[-1]), head


def _selected_logits(model, batch: dict, keep: torch.Tensor) -> torch.Tensor:
    if _accepts(_unwrap(model), "logits_to_keep"):
        logits = model(**_model_inputs(batch), logits_to_keep=keep, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1])
    return model(**_model_inputs(batch), use_cache=False).logits[keep]


def weighted_nll_sum(model, batch: dict) -> torch.Tensor:
    """S = sum_t w_t * nll_t over the batch's trained targets (differentiable)."""
    keep = target_mask(batch)
    targets, weights = _targets(batch, keep)
    if fusable_head(model) is not None:
        hidden, head = _selected_hidden(model, batch, keep)
        if not torch.is_grad_enabled():  # no gradient work when nothing will be differentiated
            return (chunked_nll(hidden, head.weight, targets) * weights).sum()
        return FusedLinearCrossEntropy.apply(hidden, head.weight, targets, weights)
    logits = _selected_logits(model, batch, keep)
    return (F.cross_entropy(logits.float(), targets, reduction="none") * weights).sum()


def token_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target NLL (N,) and weights (N,) of the batch's trained targets, row-major (no gradients needed)."""
    keep = target_mask(batch)
    targets, weights = _targets(batch, keep)
    if fusable_head(model) is not None:
        hidden, head = _selected_hidden(model, batch, keep)
        return chunked_nll(hidden, head.weight, targets), weights
    logits = _selected_logits(model, batch, keep)
    return F.cross_entropy(logits.float(), targets, reduction="none"), weights
