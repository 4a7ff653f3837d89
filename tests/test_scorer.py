"""scoring/scorer.py: every path equals a brute-force full-logit computation on the tiny Llama.

The scorer (used by the StepGame harness; Shi, Zhang, Lipani, AAAI 2022) must give the same log-likelihoods with
right padding, mixed lengths, the KV-cache fast path, soft-prompt wrappers that strip their virtual positions
(``supports_prefix_cache = False``) and PEFT prompt tuning (the logit-offset trap), while sending only the needed
rows through the LM head.
"""

import random

import pytest
import torch
from torch import nn

from posttrain.scoring.scorer import Score, choose, greedy_generate, score_continuations, supports_prefix_cache

TOL = 1e-4


def brute_logits(model, ids: list[int]) -> torch.Tensor:
    """Full (T, V) logits of one unpadded sequence."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def brute_score(full_logits_fn, context, continuation) -> Score:
    logits = full_logits_fn(list(context) + list(continuation))
    logp = torch.log_softmax(logits, -1)
    n = len(context)
    rows = [n - 1 + j for j in range(len(continuation))]
    lp = sum(logp[r, t].item() for r, t in zip(rows, continuation))
    return Score(lp, all(logits[r].argmax().item() == t for r, t in zip(rows, continuation)))


def assert_same(got: Score, want: Score):
    assert got.logprob == pytest.approx(want.logprob, abs=TOL)
    assert got.greedy == want.greedy


def random_requests(vocab: int, n: int, seed: int = 0, ctx=(1, 24), cont=(1, 4)):
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(rng.randint(*ctx))],
             [rng.randrange(vocab) for _ in range(rng.randint(*cont))]) for _ in range(n)]


def random_choices(vocab: int, n: int, seed: int = 1):
    rng = random.Random(seed)
    return [[[rng.randrange(vocab) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 5))]
            for _ in range(n)]


def test_score_continuations_matches_brute_force(tiny_llama):
    vocab = tiny_llama.config.vocab_size
    requests = random_requests(vocab, 11)
    scores = score_continuations(tiny_llama, requests, batch_size=4, pad_token_id=3)
    for (context, continuation), score in zip(requests, scores):
        assert_same(score, brute_score(lambda ids: brute_logits(tiny_llama, ids), context, continuation))


def test_greedy_flag_true_for_the_argmax_continuation(tiny_llama):
    context = [5, 9, 12, 40]
    seq = list(context)
    for _ in range(3):
        seq.append(brute_logits(tiny_llama, seq)[-1].argmax().item())
    (score,) = score_continuations(tiny_llama, [(context, seq[len(context):])], pad_token_id=0)
    assert score.greedy


@pytest.mark.parametrize("prefix_cache, shared", [(True, 0), (True, 10), (False, 10)])
def test_choose_matches_brute_force(tiny_llama, prefix_cache, shared):
    """``shared``: every context starts with the same tokens (run once per batch on the cache path)."""
    vocab = tiny_llama.config.vocab_size
    contexts = [[11 + i for i in range(shared)] + c for c, _ in random_requests(vocab, 9, seed=2)]
    choices = random_choices(vocab, len(contexts))
    choices[0] = [[7], [8], [9]]  # a batch row whose choices are all single tokens
    choices[1] = [[7, 8, 1], [7, 8, 2], [7, 9], [7]]  # choices sharing inputs share a row
    result = choose(tiny_llama, contexts, choices, batch_size=4, pad_token_id=0, prefix_cache=prefix_cache)
    for context, options, scores in zip(contexts, choices, result):
        assert len(scores) == len(options)
        for option, score in zip(options, scores):
            assert_same(score, brute_score(lambda ids: brute_logits(tiny_llama, ids), context, option))


def test_prefix_cache_sends_only_needed_rows_to_the_head(tiny_llama):
    """Context pass: one row per context; choice pass: one row per non-first choice token. Never T x V."""
    rows = []
    handle = tiny_llama.lm_head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape))
    try:
        contexts = [[5] * 30, [6] * 17]
        choices = [[[1], [2, 3], [4, 5, 6], [2, 7]], [[1], [2, 3]]]  # [2, 3] and [2, 7] share the input row [2]
        choose(tiny_llama, contexts, choices, pad_token_id=0)
        score_continuations(tiny_llama, [([5] * 30, [1, 2, 3])], pad_token_id=0)
    finally:
        handle.remove()
    # context pass: 2 rows (one per context); choice pass: [2] + [4, 5] (context 0) + [2] (context 1); plain: 3
    assert [r[:-1] for r in rows] == [(2,), (4,), (3,)]
    assert all(r[-1] == tiny_llama.config.hidden_size for r in rows)


class SoftPromptWrapper(nn.Module):
    """What a posttrain soft-prompt model promises: strips its virtual positions itself; no KV cache."""

    supports_prefix_cache = False

    def __init__(self, lm, n_virtual: int = 3):
        super().__init__()
        self.lm = lm
        torch.manual_seed(1)
        self.prompt = nn.Parameter(torch.randn(n_virtual, lm.config.hidden_size) * 0.5)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, use_cache=False):
        assert use_cache is False
        self.calls += 1
        batch, n = input_ids.shape[0], self.prompt.shape[0]
        embeds = torch.cat([self.prompt.expand(batch, -1, -1), self.lm.get_input_embeddings()(input_ids)], 1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = torch.cat([torch.ones(batch, n, dtype=torch.long), attention_mask.long()], 1)
        if logits_to_keep is None:
            return type("Out", (), {"logits": self.lm(inputs_embeds=embeds, attention_mask=mask).logits[:, n:]})()
        assert logits_to_keep.dtype == torch.bool and logits_to_keep.shape == input_ids.shape
        keep = torch.cat([torch.zeros(batch, n, dtype=torch.bool), logits_to_keep], 1)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=keep, use_cache=False)


def test_soft_prompt_wrapper_goes_through_the_plain_path(tiny_llama):
    wrapper = SoftPromptWrapper(tiny_llama).eval()
    assert not supports_prefix_cache(wrapper) and supports_prefix_cache(tiny_llama)

    def full(ids):
        with torch.no_grad():
            return wrapper(torch.tensor([ids])).logits[0].float()

    vocab = tiny_llama.config.vocab_size
    contexts = [c for c, _ in random_requests(vocab, 5, seed=4)]
    choices = random_choices(vocab, len(contexts), seed=5)
    for context, options, scores in zip(contexts, choices, choose(wrapper, contexts, choices, batch_size=2)):
        for option, score in zip(options, scores):
            assert_same(score, brute_score(full, context, option))
    assert wrapper.calls > 0
    # the wrapper's numbers differ from the bare model's: the soft prompt really is in play
    plain = choose(tiny_llama, contexts[:1], choices[:1])[0][0].logprob
    assert abs(plain - choose(wrapper, contexts[:1], choices[:1])[0][0].logprob) > 1e-3


def test_peft_prompt_tuning_offset_is_removed(tiny_llama):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_llama, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    model.eval()
    assert not supports_prefix_cache(model)

    def full(ids):
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 4:].float()

    requests = random_requests(tiny_llama.config.vocab_size, 5, seed=6)
    for (context, continuation), score in zip(requests, score_continuations(model, requests, batch_size=2)):
        assert_same(score, brute_score(full, context, continuation))


def naive_greedy(full_logits_fn, prompt, steps, stop=()):
    seq = list(prompt)
    for _ in range(steps):
        token = full_logits_fn(seq)[-1].argmax().item()
        if token in stop:
            break
        seq.append(token)
    return seq[len(prompt):]


def test_greedy_generate_matches_naive_loop(tiny_llama):
    prompts = [c for c, _ in random_requests(tiny_llama.config.vocab_size, 6, seed=7)]
    prompts += [[3] * 12 + p for p in prompts]  # with a shared prefix (in the batch of the longest four)
    full = lambda ids: brute_logits(tiny_llama, ids)  # noqa: E731
    want = [naive_greedy(full, p, 5) for p in prompts]
    assert greedy_generate(tiny_llama, prompts, max_new_tokens=5, batch_size=4) == want
    stop = {want[0][2]}  # a stop token ends that row early (and is not returned)
    want_stop = [naive_greedy(full, p, 5, stop) for p in prompts]
    assert greedy_generate(tiny_llama, prompts, max_new_tokens=5, stop_ids=stop, batch_size=4) == want_stop
    wrapper = SoftPromptWrapper(tiny_llama).eval()

    def wrapped(ids):
        with torch.no_grad():
            return wrapper(torch.tensor([ids])).logits[0]

    assert greedy_generate(wrapper, prompts, max_new_tokens=4, batch_size=4) == [naive_greedy(wrapped, p, 4)
                                                                               for p in prompts]


def test_empty_context_is_rejected(tiny_llama):
    with pytest.raises(ValueError, match="empty context"):
        score_continuations(tiny_llama, [([], [1])])
