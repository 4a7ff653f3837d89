"""The one scorer: log-likelihood of continuations, multiple choice and greedy generation, computing only the
LM-head rows it needs.

Used by the StepGame harness (Shi, Zhang, Lipani, "StepGame: A New Benchmark for Robust Multi-Hop Spatial
Reasoning in Texts", AAAI 2022) and by anything else that scores choices. For a request (context c, continuation
y_1..y_m) it returns

    log p(y | c) = sum_j log softmax(W h_{|c|+j-1})[y_j]      and      greedy = all_j argmax(W h_{|c|+j-1}) == y_j

Only the m hidden states that predict continuation tokens reach the LM head (a boolean ``logits_to_keep`` mask,
transformers >= 5), so the full (tokens x vocabulary) logits are never built. Two paths:

* *plain*: each request is one right-padded sequence ``c + y[:-1]`` (with right padding the default position ids
  are already correct). Batches are sorted by length, so padding is small.
* *prefix cache* (``choose`` and ``greedy_generate`` on models that allow it): many choices share one long
  context (a StepGame story of 100-400 tokens, 9 short answers). The contexts of a batch run once with
  ``use_cache=True`` (a token prefix common to the whole batch, e.g. the instruction, runs once and its cache is
  repeated); the last context row scores every choice's first token; for longer choices the KV cache is gathered
  once per distinct choice input (``Cache.reorder_cache``; " lower-left" and " lower-right" share the inputs
  " lower", "-") and only those tokens run, with explicit position ids (context length + j) and an attention mask
  that hides the context padding. Exact up to float rounding.

Soft-prompt models: a posttrain soft-prompt/DePT wrapper takes ``input_ids, attention_mask, logits_to_keep`` (a mask
over the *real* tokens) and ``use_cache=False``, strips its virtual positions itself and sets
``supports_prefix_cache = False``; the scorer then uses the plain path only. A PEFT prompt-learning model (whose
logits carry ``num_virtual_tokens`` extra leading rows: the offset trap of lm-evaluation-harness PR #533) is
scored from full logits with those rows sliced off.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F


class Score(NamedTuple):
    logprob: float  # summed log-probability of the continuation given the context
    greedy: bool    # every continuation token is the argmax of its row


def _peft_virtual_tokens(model) -> int:
    """num_virtual_tokens of an active PEFT prompt-learning adapter, else 0."""
    config = getattr(model, "active_peft_config", None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        return int(config.num_virtual_tokens)
    return 0


def supports_prefix_cache(model) -> bool:
    """May ``choose`` / ``greedy_generate`` reuse a KV cache with this model?"""
    return bool(getattr(model, "supports_prefix_cache", True)) and not _peft_virtual_tokens(model)


def _inner(model):
    """The module to call: a PEFT LoRA model's base model (its layers hold the adapters), else the model."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return model
    if isinstance(model, PeftModel) and not _peft_virtual_tokens(model):
        return model.get_base_model()
    return model


def _params(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _pad(rows: Sequence[Sequence[int]], pad_token_id: int, width: int | None = None):
    """Right-padded (ids, mask) tensors."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), max(width, 1)), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def selected_logits(model, input_ids, attention_mask, keep) -> torch.Tensor:
    """Float32 logits of the positions where ``keep`` is True, row-major, shape (N, V); no cache."""
    virtual = _peft_virtual_tokens(model)
    call = _inner(model)
    if not virtual and _takes_mask(call):
        logits = call(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1]).float()
    logits = call(input_ids=input_ids, attention_mask=attention_mask.long(), use_cache=False).logits
    return logits[:, virtual:][keep].float()


def _takes_mask(model) -> bool:
    """Plain HF models declare ``logits_to_keep``; posttrain wrappers promise it by ``supports_prefix_cache``."""
    return "logits_to_keep" in _params(model) or hasattr(model, "supports_prefix_cache")


def _progress(total: int, enabled, desc: str):
    """A tqdm bar; ``enabled`` may be a string, used as the bar's description."""
    from tqdm.auto import tqdm

    label = enabled if isinstance(enabled, str) else desc
    return tqdm(total=total, disable=not enabled, desc=label, unit="ex", dynamic_ncols=True)


def _check_request(context, continuation) -> None:
    if not context:
        raise ValueError("scorer: empty context (give at least one token, e.g. BOS)")
    if not continuation:
        raise ValueError("scorer: empty continuation")


@torch.no_grad()
def score_continuations(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                        pad_token_id: int = 0, progress: bool | str = False) -> list[Score]:
    """Per (context_ids, continuation_ids) request: summed log p(continuation | context) and greedy-ness."""
    for context, continuation in requests:
        _check_request(context, continuation)
    device = _device(model)
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
    out: list[Score | None] = [None] * len(requests)
    with _progress(len(requests), progress, "scoring") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows, targets = [], []
            for i in chunk:
                context, continuation = requests[i]
                rows.append(list(context) + list(continuation)[:-1])
                targets.append(list(continuation))
            ids, mask = _pad(rows, pad_token_id)
            keep = torch.zeros_like(mask)
            for r, i in enumerate(chunk):
                n_ctx = len(requests[i][0])
                keep[r, n_ctx - 1 : n_ctx - 1 + len(targets[r])] = True
            logits = selected_logits(model, ids.to(device), mask.to(device), keep.to(device))
            _fill_scores(out, chunk, targets, logits)
            bar.update(len(chunk))
    return out  # type: ignore[return-value]


def _fill_scores(out, indices, targets, logits) -> None:
    """Split row-major kept logits into per-request scores."""
    flat = torch.tensor([t for target in targets for t in target], device=logits.device)
    logp = F.log_softmax(logits, dim=-1)
    token_lp = logp.gather(1, flat[:, None]).squeeze(1).tolist()
    hits = (logits.argmax(-1) == flat).tolist()
    pos = 0
    for i, target in zip(indices, targets):
        n = len(target)
        out[i] = Score(sum(token_lp[pos : pos + n]), all(hits[pos : pos + n]))
        pos += n


def _cache_call(model, **kwargs):
    """Call a plain HF causal LM with a KV cache, whatever it names the cache argument (``cache`` in 5.x)."""
    cache = kwargs.pop("cache", None)
    if cache is not None:
        kwargs["cache" if "cache" in _params(model) else "past_key_values"] = cache
    out = model(use_cache=True, **kwargs)
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = getattr(out, "past_key_values", None)
    return out.logits, new_cache


@torch.no_grad()
def choose(model, contexts: Sequence[Sequence[int]], choices: Sequence[Sequence[Sequence[int]]], *,
           batch_size: int = 8, pad_token_id: int = 0, progress: bool | str = False,
           prefix_cache: bool | None = None) -> list[list[Score]]:
    """Multiple choice: ``choices[i]`` are the candidate continuations of ``contexts[i]``; returns their scores.

    ``batch_size`` counts contexts. With ``prefix_cache`` (default: ``supports_prefix_cache(model)``) each context
    runs once and its cache is shared by its choices; otherwise every (context, choice) pair is one sequence.
    """
    if len(contexts) != len(choices):
        raise ValueError(f"choose: {len(contexts)} contexts but {len(choices)} choice lists")
    for context, options in zip(contexts, choices):
        for option in options:
            _check_request(context, option)
    if prefix_cache is None:
        prefix_cache = supports_prefix_cache(model)
    if not prefix_cache:
        flat = [(c, o) for c, options in zip(contexts, choices) for o in options]
        scores = score_continuations(model, flat, batch_size=batch_size * max(1, max(map(len, choices), default=1)),
                                     pad_token_id=pad_token_id, progress=progress)
        out, pos = [], 0
        for options in choices:
            out.append(scores[pos : pos + len(options)])
            pos += len(options)
        return out
    call, device = _inner(model), _device(model)
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    result: list[list[Score] | None] = [None] * len(contexts)
    with _progress(len(contexts), progress, "choices") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, scores in zip(chunk, _choose_batch(call, [contexts[i] for i in chunk], [choices[i] for i in chunk],
                                                      pad_token_id, device)):
                result[i] = scores
            bar.update(len(chunk))
    return result  # type: ignore[return-value]


MIN_SHARED_PREFIX = 8  # tokens; a batch whose contexts share at least this many runs them once


def _prefill(call, contexts, pad_token_id, device):
    """Run right-padded contexts with a KV cache. Returns (logits of each last context token (B, V), cache,
    attention mask over the cache (B, W), context lengths (B,)). A token prefix shared by every context of the batch
    (an instruction, a chat header) runs once and its cache is repeated over the batch."""
    batch = len(contexts)
    shared = 0
    cap = min(len(c) for c in contexts) - 1  # every row keeps >= 1 token: its last row gives the next-token logits
    while shared < cap and all(c[shared] == contexts[0][shared] for c in contexts):
        shared += 1
    cache, extra = None, {}
    if batch > 1 and shared >= MIN_SHARED_PREFIX:
        prefix = torch.tensor([list(contexts[0][:shared])], device=device)
        _, cache = _cache_call(call, input_ids=prefix, attention_mask=torch.ones_like(prefix, dtype=torch.bool),
                               logits_to_keep=1)
        cache.batch_repeat_interleave(batch)
    else:
        shared = 0
    ids, tail_mask = _pad([c[shared:] for c in contexts], pad_token_id)
    mask = torch.cat([torch.ones(batch, shared, dtype=torch.bool), tail_mask], dim=1).to(device)
    lengths = torch.tensor([len(c) for c in contexts], device=device)
    last = torch.zeros_like(tail_mask)
    last[torch.arange(batch), lengths.cpu() - shared - 1] = True
    if shared:
        extra = {"cache": cache, "position_ids": shared + torch.arange(ids.shape[1], device=device)[None, :]
                 .expand(batch, -1)}
    logits, cache = _cache_call(call, input_ids=ids.to(device), attention_mask=mask, logits_to_keep=last.to(device),
                                **extra)
    return logits.reshape(batch, -1).float(), cache, mask, lengths


def _choose_batch(call, contexts, choices, pad_token_id, device) -> list[list[Score]]:
    logits, cache, mask, lengths = _prefill(call, contexts, pad_token_id, device)
    first_lp = F.log_softmax(logits, dim=-1)
    first_best = logits.argmax(-1)
    # Choices longer than one token: their inputs choice[:-1] run against the context cache. Choices sharing those
    # inputs (" lower-left" / " lower-right" both feed " lower", "-") share one row.
    rows = sorted({(b, tuple(option[:-1])) for b, options in enumerate(choices) for option in options
                   if len(option) > 1})
    rest: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    if rows:
        index = torch.tensor([b for b, _ in rows], device=device)
        cache.reorder_cache(index)
        tail_ids, tail_mask = _pad([list(x) for _, x in rows], pad_token_id)
        attention = torch.cat([mask[index], tail_mask.to(device)], dim=1)
        positions = lengths[index][:, None] + torch.arange(tail_ids.shape[1], device=device)[None, :]
        tail_logits, _ = _cache_call(call, input_ids=tail_ids.to(device), attention_mask=attention,
                                     position_ids=positions, cache=cache, logits_to_keep=tail_mask.to(device))
        tail_logits = tail_logits.reshape(-1, tail_logits.shape[-1]).float()
        pos = 0
        for key in rows:  # kept rows are row-major: each row's real positions in order
            n = len(key[1])
            chunk = tail_logits[pos : pos + n]
            rest[key] = (F.log_softmax(chunk, dim=-1), chunk.argmax(-1))
            pos += n
    out = []
    for b, options in enumerate(choices):
        row = []
        for option in options:
            lp, greedy = first_lp[b, option[0]].item(), bool(first_best[b].item() == option[0])
            if len(option) > 1:
                logp, best = rest[(b, tuple(option[:-1]))]
                targets = torch.tensor(option[1:], device=logp.device)
                lp += logp.gather(1, targets[:, None]).sum().item()
                greedy = greedy and bool((best == targets).all())
            row.append(Score(lp, greedy))
        out.append(row)
    return out


@torch.no_grad()
def greedy_generate(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 16,
                    stop_ids: Sequence[int] = (), pad_token_id: int = 0, batch_size: int = 8,
                    progress: bool | str = False) -> list[list[int]]:
    """Greedy continuation ids of each prompt (stop token excluded), at most ``max_new_tokens``.

    Plain HF models decode with a KV cache from right-padded prompts (explicit position ids); models without
    ``supports_prefix_cache`` re-run the whole right-padded sequence each step with one kept row per sequence.
    """
    for prompt in prompts:
        _check_request(prompt, [0])
    stop = set(stop_ids)
    use_cache = supports_prefix_cache(model)
    call, device = (_inner(model) if use_cache else model), _device(model)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int] | None] = [None] * len(prompts)
    with _progress(len(prompts), progress, "generating") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = [list(prompts[i]) for i in chunk]
            step = _generate_cached if use_cache else _generate_plain
            for i, new in zip(chunk, step(call, rows, max_new_tokens, stop, pad_token_id, device)):
                out[i] = new
            bar.update(len(chunk))
    return out  # type: ignore[return-value]


def _generate_cached(call, rows, max_new_tokens, stop, pad_token_id, device):
    logits, cache, mask, lengths = _prefill(call, rows, pad_token_id, device)
    new: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    for step in range(max_new_tokens):
        token = logits.reshape(len(rows), -1).argmax(-1)
        for r, t in enumerate(token.tolist()):
            if not done[r]:
                if t in stop:
                    done[r] = True
                else:
                    new[r].append(t)
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.bool, device=device)], dim=1)
        logits, cache = _cache_call(call, input_ids=token[:, None], attention_mask=mask,
                                    position_ids=(lengths + step)[:, None], cache=cache, logits_to_keep=1)
    return new


def _generate_plain(model, rows, max_new_tokens, stop, pad_token_id, device):
    new: list[list[int]] = [[] for _ in rows]
    live = list(range(len(rows)))
    for _ in range(max_new_tokens):
        seqs = [rows[r] + new[r] for r in live]
        ids, mask = _pad(seqs, pad_token_id)
        keep = torch.zeros_like(mask)
        keep[torch.arange(len(seqs)), torch.tensor([len(s) for s in seqs]) - 1] = True
        tokens = selected_logits(model, ids.to(device), mask.to(device), keep.to(device)).argmax(-1).tolist()
        still = []
        for r, t in zip(live, tokens):
            if t not in stop:
                new[r].append(t)
                still.append(r)
        live = still
        if not live:
            break
    return new
