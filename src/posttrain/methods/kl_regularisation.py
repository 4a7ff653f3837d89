"""KL-regularised instruction tuning against the frozen starting model: the baseline of the IM paper (Shi et al.,
NeurIPS 2024, Sec. 5 / App. F, Tables 3 and 7), which keeps the model near its pre-trained distribution.

With trained positions t (the loss mode's weights w_t), the policy pi_theta and the frozen reference pi_ref:

    S = sum_t w_t * [ -log pi_theta(x_t | x_<t) + lambda * KL_t ]            (normalised like the plain loss)

``loss.kl_form`` names the KL term:
- ``full`` (the paper's objective): KL_t = sum_v pi_theta(v | x_<t) * (log pi_theta(v | x_<t) - log pi_ref(v | x_<t)),
  over the whole vocabulary;
- ``single_sample`` (the reference code's ``compute_kl_divergence_loss_target_token``): KL_t = log pi_theta(x_t |
  x_<t) - log pi_ref(x_t | x_<t), a one-sample estimate at the target token. It can be negative, and its gradient
  at pi_theta = pi_ref is -lambda times the NLL gradient (it damps the update) where the full KL's is zero.

The reference is a frozen copy of the starting weights for full fine-tuning, and the base model with the adapter
switched off for LoRA (no second copy in memory). It runs without dropout or NEFTune noise. Logits are formed
chunk by chunk from the final hidden states (one chunk of (tokens x vocabulary) at a time, recomputed in
backward), so the full KL costs no (N x V) buffers beyond one chunk.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..models.precision import autocast_forward, resolve_precision
from ..registry import method_named
from ..losses import CHUNK_ELEMENTS, _selected_hidden, _targets, fusable_head, target_positions

FORMS = ("full", "single_sample")


def reference_model(cfg, model):
    """Before the adapter wraps ``model``: a frozen copy for full fine-tuning; None for LoRA (adapter disabled)."""
    if cfg.loss.kl_coef <= 0 or method_named(cfg.adapter.type).kl_reference == "adapter_disabled":
        return None
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    # in the policy's precision (accelerate autocasts the policy's forward): else the KL at step 1, policy ==
    # reference, would be bf16 rounding instead of 0
    return autocast_forward(reference, resolve_precision(cfg.train.mixed_precision))


def _peft_model(model):
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP
        model = model.module
    return model


@contextlib.contextmanager
def _reference_view(model, reference):
    """The reference forward: the frozen copy, or ``model`` with its LoRA adapter disabled, in eval mode."""
    if reference is not None:
        yield reference
        return
    peft_model = _peft_model(model)
    was_training = peft_model.training
    peft_model.eval()  # no dropout, no NEFTune noise in the reference
    try:
        with peft_model.disable_adapter():
            yield peft_model
    finally:
        peft_model.train(was_training)


def _chunk_terms(policy, ref, targets, weights, form: str, weight=None, ref_weight=None):
    """(sum w * nll, sum w * KL) of one chunk; ``policy``/``ref`` are hidden states when the head weights are given,
    else logits."""
    logits = policy.float() @ weight.float().T if weight is not None else policy.float()
    ref_logits = ref.float() @ ref_weight.float().T if ref_weight is not None else ref.float()
    logp = torch.log_softmax(logits, dim=-1)
    logq = torch.log_softmax(ref_logits, dim=-1)
    target_logp = logp.gather(1, targets[:, None]).squeeze(1)
    if form == "full":
        kl = (logp.exp() * (logp - logq)).sum(-1)
    else:
        kl = target_logp - logq.gather(1, targets[:, None]).squeeze(1)
    return (-target_logp * weights).sum(), (kl * weights).sum()


class KLRegularisedLoss:
    """``(model, batch) -> S`` for the Trainer; keeps the NLL and KL sums for logging (``pop_logs``)."""

    def __init__(self, coef: float, form: str, reference=None):
        if form not in FORMS:
            raise ConfigError(f"loss.kl_form: expected one of {', '.join(FORMS)}, got {form!r}")
        self.coef, self.form, self.reference = coef, form, reference
        self._sums = torch.zeros(3, dtype=torch.float64)  # nll, kl, weight since the last log

    def terms(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum w * nll, sum w * KL) over the batch's trained targets; differentiable in the policy."""
        if self.reference is not None and next(self.reference.parameters()).device != batch["input_ids"].device:
            self.reference.to(batch["input_ids"].device)
        keep = target_positions(batch["loss_weights"])
        targets, weights = _targets(batch, keep)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        fused = fusable_head(model) is not None
        with torch.no_grad(), _reference_view(model, self.reference) as ref:
            if fused:
                ref_hidden, ref_head = _selected_hidden(ref, batch, keep)
                ref_weight = ref_head.weight.detach()
            else:
                ref_hidden, ref_weight = ref(**inputs, use_cache=False).logits[keep], None
        if fused:
            hidden, head = _selected_hidden(model, batch, keep)
            weight = head.weight
        else:  # logits path (soft-capped heads, LoRA on the head): chunk the logits themselves
            hidden, weight = model(**inputs, use_cache=False).logits[keep], None
        nll = hidden.new_zeros((), dtype=torch.float32)
        kl = hidden.new_zeros((), dtype=torch.float32)
        chunk = max(1, CHUNK_ELEMENTS // (weight.shape[0] if weight is not None else hidden.shape[-1]))
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)

            def chunk_fn(h, w, r, y, rw):
                return _chunk_terms(h, r, y, rw, self.form, w, ref_weight)

            args = (hidden[part], weight, ref_hidden[part], targets[part], weights[part])
            if torch.is_grad_enabled():  # recompute the chunk's logits in backward instead of keeping them
                a, b = checkpoint(chunk_fn, *args, use_reentrant=False)
            else:
                a, b = chunk_fn(*args)
            nll, kl = nll + a, kl + b
        return nll, kl

    def __call__(self, model, batch: dict) -> torch.Tensor:
        nll, kl = self.terms(model, batch)
        self._sums += torch.tensor([float(nll.detach()), float(kl.detach()),
                                    float(batch["loss_weights"][:, 1:].sum())], dtype=torch.float64)
        return nll + self.coef * kl

    def pop_logs(self) -> dict:
        """Per-token means of the NLL and KL since the last call (what ``metrics.jsonl`` records)."""
        nll, kl, count = self._sums.tolist()
        self._sums.zero_()
        if count <= 0:
            return {}
        return {"train_nll": nll / count, "train_kl": kl / count}


def train_loss(cfg, reference):
    """The Trainer's training loss for this config, or None (the plain weighted NLL)."""
    if cfg.loss.kl_coef <= 0:
        return None
    return KLRegularisedLoss(cfg.loss.kl_coef, cfg.loss.kl_form, reference)


def describe(cfg) -> dict:
    if cfg.loss.kl_coef <= 0:
        return {}
    return {"kl_coef": cfg.loss.kl_coef, "kl_form": cfg.loss.kl_form,
            "kl_reference": "frozen copy of the starting model" if method_named(cfg.adapter.type).kl_reference == "frozen_copy"
            else "base model with the LoRA adapter disabled",
            "kl_note": "full = paper's objective; single_sample = the IM reference code's log p - log p_ref estimate"}
