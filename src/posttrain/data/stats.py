"""Instruction-dataset statistics of the IM paper's Table 5 (Shi et al., NeurIPS 2024, Sec. 4.1).

For each example, the *instruction length* is the number of whitespace-separated words in its non-assistant
messages (system and user turns, all turns of a multi-turn conversation), the *output length* the number in its
assistant messages. The table reports their means over the examples and the ratio of the means,

    ratio = mean(instruction length) / mean(output length),

the quantity whose logarithm predicts IM's gain over IT in the paper (Fig. 2: improvement% ~ 18.85 log10(ratio)
+ 25.83). The paper's counts on the three shipped sets equal ours plus one word per message (e.g. LIMA: 40.67 /
441.70 here, 41.72 / 442.75 in the paper), so they are comparable up to that constant. With a tokenizer, the same
means are also given in tokens (message contents tokenised without special tokens).
"""

from __future__ import annotations

from pathlib import Path
from .instruction import load_examples


def _words(text: str) -> int:
    return len(text.split())


def example_lengths(example: dict, count=_words) -> tuple[int, int]:
    """(instruction length, output length) of one normalised example (``{"messages"}`` or ``{"text"}``)."""
    if "text" in example:
        return 0, count(example["text"])
    instruction = sum(count(m["content"]) for m in example["messages"] if m["role"] != "assistant")
    output = sum(count(m["content"]) for m in example["messages"] if m["role"] == "assistant")
    return instruction, output


def dataset_stats(examples: list[dict], tokenizer=None) -> dict:
    """Size, mean instruction/output length in words (and tokens), their ratio, and the share of multi-turn rows."""
    n = len(examples)
    words = [example_lengths(e) for e in examples]
    out = {
        "size": n,
        "instruction_words": sum(w[0] for w in words) / n,
        "output_words": sum(w[1] for w in words) / n,
        "multi_turn": sum(1 for e in examples if sum(m["role"] == "assistant" for m in e.get("messages", [])) > 1),
    }
    out["ratio_words"] = out["instruction_words"] / out["output_words"] if out["output_words"] else float("inf")
    if tokenizer is not None:
        def count(text):
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        tokens = [example_lengths(e, count) for e in examples]
        out["instruction_tokens"] = sum(t[0] for t in tokens) / n
        out["output_tokens"] = sum(t[1] for t in tokens) / n
        out["ratio_tokens"] = out["instruction_tokens"] / out["output_tokens"] if out["output_tokens"] else float("inf")
    return out


def stats_table(rows: dict[str, dict]) -> str:
    """Markdown table of ``{name: dataset_stats(...)}`` in the layout of the paper's Table 5."""
    with_tokens = all("output_tokens" in r for r in rows.values())
    head = "| dataset | size | output len (words) | instruction len (words) | instr/output |"
    rule = "|---|---:|---:|---:|---:|"
    if with_tokens:
        head += " output len (tokens) | instruction len (tokens) | instr/output (tokens) |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    for name, r in rows.items():
        line = (f"| {name} | {r['size']:,} | {r['output_words']:.2f} | {r['instruction_words']:.2f} | "
                f"{r['ratio_words']:.4f} |")
        if with_tokens:
            line += f" {r['output_tokens']:.2f} | {r['instruction_tokens']:.2f} | {r['ratio_tokens']:.4f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def file_stats(paths: list[str], fmt: str = "auto", tokenizer=None) -> dict[str, dict]:
    return {Path(p).stem: dataset_stats(load_examples(p, fmt), tokenizer) for p in paths}
