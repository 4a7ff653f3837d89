"""Pairwise LLM-as-a-judge win rate, AlpacaEval 1.0 style, and a judge that runs a local HF model.

AlpacaEval (Li et al., 2023, "AlpacaEval: An Automatic Evaluator of Instruction-following Models"; the
AlpacaFarm protocol of Dubois et al., NeurIPS 2023) compares a model's outputs A with reference outputs B (for 1.0:
text-davinci-003, judged by GPT-4) on the same instructions. A judge reads the instruction and two outputs,
labelled (a) and (b), and names the better one. The IM paper (Shi et al., NeurIPS 2024, App. B) reports this
win rate.

Judges prefer a position (usually the first), so every pair is asked in both orders. With

    p1 = P(first better | A shown first)     and     p2 = P(first better | B shown first)

the preference for A is the mean of the two orders' probabilities that A is better:

    pref_A = (p1 + (1 - p2)) / 2                    (pref_A = p1 without swapping)

    win rate = 100 * mean_i pref_A(i)          stderr = 100 * std(pref_A, ddof=1) / sqrt(n)

A pair is a tie when pref_A = 0.5 (AlpacaEval counts a tie as half a win, as the mean does). The two orders
*disagree* when they pick different outputs (p1 > 0.5 and p2 > 0.5, or p1 < 0.5 and p2 < 0.5; a 0.5 picks
nothing): the judge followed the position, not the content. Output lengths are reported because judges also
prefer longer answers.

A judge is any object with ``prefer_first(triples) -> list[float]``: for each (instruction, first, second) the
probability that ``first`` is better; a judge may also leave what it answered for each triple in ``last_raw`` (kept
as the ``raw_completion`` of the AlpacaEval annotations, ``alpaca_annotations``). A judge that reads a letter's probability from the next-token distribution
(``LocalJudge`` here; ``judge_http.HttpJudge`` from an API's top log-probabilities) uses

    P(first better) = softmax(lse_a, lse_b)[0],   lse_x = logsumexp of the log-probs of x's spellings

("a", " a", "A", " A": a tokenizer may spell the letter several ways).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from .. import support
from ..errors import DataError, ModelLoadError
from ..data.chat import generation_prompt, resolve_template
from ..generation import load_for_inference
from ..scoring.scorer import selected_logits

JUDGE_SYSTEM = (
    "You are a helpful assistant that judges the quality of AI assistants' answers. Given an instruction and two "
    "outputs, you decide which output follows the instruction better: the more helpful, correct and relevant one. "
    "Neither the order of the outputs nor their length should sway you."
)

JUDGE_USER = """Which of the two outputs below follows the instruction better?

## Instruction

{instruction}

## Output (a)

{first}

## Output (b)

{second}

## Your verdict

Answer with exactly "a" if Output (a) is better or exactly "b" if Output (b) is better, and write nothing else."""

LETTERS = ("a", "b")
TRUNCATION_MARK = " [...]"
TIE_TOLERANCE = 1e-9  # pref_A is a float mean of two probabilities: 0.5 within rounding is a tie


class Judge(Protocol):
    def prefer_first(self, triples: Sequence[tuple[str, str, str]]) -> list[float]: ...


def truncate(text: str, max_chars: int | None) -> str:
    """Cut an over-long output so the judge prompt fits; both outputs are cut the same way."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + TRUNCATION_MARK


def judge_messages(instruction: str, first: str, second: str, max_output_chars: int | None = 2000) -> list[dict]:
    """The chat messages asking which of two outputs follows ``instruction`` better."""
    user = JUDGE_USER.format(instruction=instruction, first=truncate(first, max_output_chars),
                             second=truncate(second, max_output_chars))
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def letter_of(token: str) -> str | None:
    """'a' or 'b' when a token spells one of the answer letters (any case, surrounding spaces), else None."""
    letter = token.strip().lower()
    return letter if letter in LETTERS else None


def preference_from_logprobs(logprob_by_token: dict[str, float]) -> float | None:
    """P(first better) from a {token: log-prob} mapping (an API's top log-probabilities); None if neither letter
    occurs. A letter missing from the mapping gets probability 0 (it is below every listed token)."""
    grouped: dict[str, list[float]] = {letter: [] for letter in LETTERS}
    for token, logprob in logprob_by_token.items():
        letter = letter_of(token)
        if letter is not None and logprob is not None and math.isfinite(logprob):
            grouped[letter].append(float(logprob))
    if not grouped["a"] and not grouped["b"]:
        return None
    return letter_softmax(_logsumexp(grouped["a"]), _logsumexp(grouped["b"]))


def _logsumexp(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def letter_softmax(lse_a: float, lse_b: float) -> float:
    """softmax([lse_a, lse_b])[0], stable for any magnitudes (and for one of them -inf)."""
    if lse_a == -math.inf:
        return 0.0
    if lse_b == -math.inf:
        return 1.0
    return 1.0 / (1.0 + math.exp(lse_b - lse_a)) if lse_b - lse_a < 700 else 0.0


_TEXT_VERDICT = re.compile(r"[\s\"'`*(\[]*([AaBb])(?![A-Za-z0-9])")


def preference_from_text(text: str | None) -> float | None:
    """1.0 for an answer "a", 0.0 for "b" (also "(a)", "**b**", "A."), None for anything else."""
    match = _TEXT_VERDICT.match(text or "")
    if not match:
        return None
    return 1.0 if match.group(1).lower() == "a" else 0.0


def pair_with_references(rows_a: list[dict], rows_b: list[dict], path_a, path_b,
                         limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """(A rows, matching B rows), paired by exact instruction text; ``limit`` keeps A's first N rows."""
    references: dict[str, dict] = {}
    for row in rows_b:
        references.setdefault(row["instruction"], row)  # a duplicated reference instruction: the first one
    kept = rows_a if limit is None else rows_a[:limit]
    paired_b = []
    for number, row in enumerate(kept):
        reference = references.get(row["instruction"])
        if reference is None:
            shown = row["instruction"][:60] + ("..." if len(row["instruction"]) > 60 else "")
            raise DataError(f"{path_b}: no reference output for the instruction of {path_a} row {number} "
                            f"({shown!r}); instructions must match exactly")
        paired_b.append(reference)
    return list(kept), paired_b


def generator_name(rows: list[dict], path) -> str:
    """The rows' ``generator`` field (the first non-empty one), else the file's stem."""
    for row in rows:
        if row.get("generator"):
            return row["generator"]
    return Path(path).stem


@dataclass
class PairVerdict:
    instruction: str
    p_a_first: float             # P(A better) when A is shown as Output (a)
    p_b_first: float | None      # P(B better) when B is shown as Output (a); None without swapping
    preference_a: float          # (p_a_first + 1 - p_b_first) / 2
    raw_a_first: object = field(default=None, compare=False)  # the judge's answer, A shown first
    raw_b_first: object = field(default=None, compare=False)  # the judge's answer, B shown first

    @property
    def orders_disagree(self) -> bool:
        if self.p_b_first is None:
            return False
        side_1 = self.p_a_first - 0.5            # > 0: A first order picks A
        side_2 = (1.0 - self.p_b_first) - 0.5    # > 0: B first order picks A
        return side_1 * side_2 < 0

    def record(self) -> dict:
        return {"instruction": self.instruction, "p_a_first": self.p_a_first, "p_b_first": self.p_b_first,
                "preference_a": self.preference_a, "orders_disagree": self.orders_disagree}


def _checked(values: list[float], expected: int) -> list[float]:
    if len(values) != expected:
        raise ValueError(f"judge returned {len(values)} probabilities for {expected} pairs")
    for value in values:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"judge returned {value!r}, not a probability")
    return [float(v) for v in values]


def evaluate_pairs(judge: Judge, rows_a: list[dict], rows_b: list[dict], swap: bool = True
                   ) -> tuple[list[PairVerdict], dict]:
    """Judge A against B pair by pair (rows_a[i] vs rows_b[i]); returns (verdicts, metrics).

    Both orders go to the judge in one call (A-first triples, then B-first triples), so a judge can batch and
    cache them together. ``metrics["unparseable"]`` counts the answers the judge could not read (a judge that
    keeps an ``unparseable`` counter, like the HTTP judge)."""
    if len(rows_a) != len(rows_b):
        raise ValueError(f"{len(rows_a)} A rows but {len(rows_b)} B rows")
    a_first = [(a["instruction"], a["output"], b["output"]) for a, b in zip(rows_a, rows_b)]
    b_first = [(a["instruction"], b["output"], a["output"]) for a, b in zip(rows_a, rows_b)] if swap else []
    unparseable_before = getattr(judge, "unparseable", 0)
    probabilities = _checked(judge.prefer_first(a_first + b_first), len(a_first) + len(b_first))
    p1, p2 = probabilities[: len(a_first)], probabilities[len(a_first):]
    raw = list(getattr(judge, "last_raw", None) or [])
    if len(raw) != len(probabilities):  # a judge that keeps no raw answers
        raw = [None] * len(probabilities)
    raw1, raw2 = raw[: len(a_first)], raw[len(a_first):]
    verdicts = []
    for i, row in enumerate(rows_a):
        if swap:
            verdicts.append(PairVerdict(row["instruction"], p1[i], p2[i], (p1[i] + 1.0 - p2[i]) / 2.0, raw1[i],
                                        raw2[i]))
        else:
            verdicts.append(PairVerdict(row["instruction"], p1[i], None, p1[i], raw1[i]))
    metrics = summarize(verdicts, rows_a, rows_b)
    metrics["unparseable"] = getattr(judge, "unparseable", 0) - unparseable_before
    return verdicts, metrics


def summarize(verdicts: list[PairVerdict], rows_a: list[dict], rows_b: list[dict]) -> dict:
    """Win rate of A (%), its standard error, ties, order disagreements and average output lengths."""
    n = len(verdicts)
    prefs = [v.preference_a for v in verdicts]
    mean = sum(prefs) / n if n else 0.0
    # one pair has no spread to estimate: report 0 rather than NaN (which JSON cannot hold)
    std = math.sqrt(sum((p - mean) ** 2 for p in prefs) / (n - 1)) if n > 1 else 0.0
    return {
        "win_rate": 100.0 * mean,
        "stderr": 100.0 * std / math.sqrt(n) if n else 0.0,
        "n": n,
        "ties": sum(abs(p - 0.5) <= TIE_TOLERANCE for p in prefs),
        "order_disagreements": sum(v.orders_disagree for v in verdicts),
        "avg_chars_a": _mean([len(r["output"]) for r in rows_a]),
        "avg_chars_b": _mean([len(r["output"]) for r in rows_b]),
        "avg_words_a": _mean([len(r["output"].split()) for r in rows_a]),
        "avg_words_b": _mean([len(r["output"].split()) for r in rows_b]),
    }


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


class LocalJudge:
    """A local causal LM as judge: P(first better) from its next-token distribution after the judge prompt.

    The prompt is rendered with the model's chat template and ends with the assistant header; one forward pass per
    batch computes LM-head rows for the last prompt token only (``scoring.scorer.selected_logits``, which also
    handles LoRA, soft-prompt/DePT and PEFT prompt-learning models). Batches are right-padded, so every row keeps
    its own position ids, and sorted by length to waste little padding."""

    def __init__(self, model, tokenizer, template_name: str = "tokenizer", *, batch_size: int = 8,
                 max_output_chars: int | None = 2000, progress: bool = True, description: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.template = resolve_template(tokenizer, template_name)
        self.batch_size, self.max_output_chars, self.progress = batch_size, max_output_chars, progress
        self.description = description or f"local:{type(model).__name__}"
        self.letter_ids = {letter: self._spellings(letter) for letter in LETTERS}
        self.unparseable = 0  # reading probabilities never fails; kept for the common judge interface
        self.last_raw: list = []  # per prompt: the log-masses of the two letters

    @classmethod
    def from_spec(cls, spec: str, dtype: str = "float32", **kwargs) -> "LocalJudge":
        model, tokenizer, template_name = load_for_inference(spec, dtype=dtype, families=("causal",),
                                                           what="a local judge's letter probabilities")
        return cls(model, tokenizer, template_name, description=f"local:{spec}", **kwargs)

    def _spellings(self, letter: str) -> list[int]:
        """Token ids of the letter's single-token spellings ("a", " a", "A", " A")."""
        ids = set()
        for spelling in (letter, " " + letter, letter.upper(), " " + letter.upper()):
            tokens = self.tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                ids.add(tokens[0])
        if not ids:
            raise ModelLoadError(f"judge model: its tokenizer has no single token for the answer {letter!r}")
        return sorted(ids)

    def prompts(self, triples: Sequence[tuple[str, str, str]]) -> list[str]:
        return [generation_prompt(self.tokenizer, judge_messages(*t, self.max_output_chars), self.template)
                for t in triples]

    def prefer_first(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        import torch
        from tqdm.auto import tqdm

        encoded = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in self.prompts(triples)]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        a_ids, b_ids = (torch.tensor(self.letter_ids[x], device=device) for x in LETTERS)
        result = [0.5] * len(encoded)
        self.last_raw = [None] * len(encoded)
        with torch.no_grad(), tqdm(total=len(encoded), desc="judge", unit="prompt", disable=not self.progress,
                                   dynamic_ncols=True) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.bool)
                last = torch.zeros_like(mask)
                for row, i in enumerate(batch):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = True
                    last[row, len(encoded[i]) - 1] = True  # only this row's last prompt token reaches the LM head
                logits = selected_logits(self.model, ids.to(device), mask.to(device), last.to(device)).float()
                lse_a = torch.logsumexp(logits[:, a_ids], dim=-1)
                lse_b = torch.logsumexp(logits[:, b_ids], dim=-1)
                p_first = torch.sigmoid(lse_a - lse_b)  # = softmax over the two letters
                for row, i in enumerate(batch):
                    result[i] = float(p_first[row])
                    self.last_raw[i] = {"logsumexp_a": float(lse_a[row]), "logsumexp_b": float(lse_b[row])}
                bar.update(len(batch))
        return result
