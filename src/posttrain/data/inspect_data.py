"""``posttrain inspect-data``: show which tokens are trained on, and dataset-level mask statistics.

On a terminal, trained tokens are highlighted (green: output, yellow: instruction, cyan: trained template) and
masked tokens are dimmed. Elsewhere (pipes, files, CI logs) plain markers are used, in wdiff style: masked
runs as ``[-...-]`` and trained runs as ``{+...+}`` (``{+0.5:...+}`` when the weight is not 1).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TextIO

from ..config import LossConfig, RunConfig
from .instruction_loss import labels_and_weights
from .chat import INSTRUCTION, OUTPUT, TEMPLATE, render_example, resolve_template

_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_COLOURS = {OUTPUT: "\x1b[1;32m", INSTRUCTION: "\x1b[1;33m", TEMPLATE: "\x1b[1;36m"}
MODES = {
    "output_only (IT)": LossConfig(mode="output_only"),
    "instruction_and_output, im_mask=paper (IM)": LossConfig(mode="instruction_and_output"),
    "instruction_and_output, im_mask=reference_code": LossConfig(mode="instruction_and_output", im_mask="reference_code"),
    "all_tokens": LossConfig(mode="all_tokens"),
}


def show_tokens(pieces: list[str], segments, weights, colour: bool) -> str:
    if colour:
        return "".join(
            (f"{_COLOURS[s]}{p}{_RESET}" if w > 0 else f"{_DIM}{p}{_RESET}") for p, s, w in zip(pieces, segments, weights)
        )
    out, run, run_w = [], [], None
    for piece, w in zip(pieces, weights):
        if run and w != run_w:
            out.append(_wrap("".join(run), run_w))
            run = []
        run.append(piece)
        run_w = w
    if run:
        out.append(_wrap("".join(run), run_w))
    return "".join(out)


def _wrap(text: str, weight: float) -> str:
    if weight == 0:
        return f"[-{text}-]"
    return f"{{+{text}+}}" if weight == 1 else f"{{+{weight:g}:{text}+}}"


@dataclasses.dataclass
class MaskCounts:
    examples: int = 0
    tokens: int = 0
    trained: int = 0
    masked: int = 0
    instruction_tokens: int = 0
    output_tokens: int = 0
    template_tokens: int = 0
    instruction_words: int = 0
    output_words: int = 0


def count_masks(tokenizer, examples, template, losses: dict, max_length: int) -> dict:
    """Mask counts per loss mode (each example rendered once)."""
    counts = {name: MaskCounts() for name in losses}
    for example in examples:
        rendered = render_example(tokenizer, example, template)
        ids, segs = rendered.input_ids[:max_length], rendered.segments[:max_length]
        words_in = sum(len(m["content"].split()) for m in example.get("messages", []) if m["role"] != "assistant")
        words_out = sum(len(m["content"].split()) for m in example.get("messages", []) if m["role"] == "assistant")
        words_out += len(example["text"].split()) if "text" in example else 0  # IM paper Table 5: whitespace words
        for name, loss in losses.items():
            c = counts[name]
            _, weights = labels_and_weights(ids, segs, loss)
            trained = sum(1 for w in weights if w > 0)
            c.examples += 1
            c.tokens += len(ids)
            c.trained += trained
            c.masked += len(ids) - trained
            c.instruction_tokens += segs.count(INSTRUCTION)
            c.output_tokens += segs.count(OUTPUT)
            c.template_tokens += segs.count(TEMPLATE)
            c.instruction_words += words_in
            c.output_words += words_out
    return counts


def inspect(cfg: RunConfig, tokenizer, examples: list[dict], *, n: int = 2, all_modes: bool = False,
            stream: TextIO | None = None, colour: bool | None = None) -> dict:
    """Print the first ``n`` examples with their masks, then mask counts; returns the counts per mode."""
    stream = stream or sys.stdout  # looked up per call: sys.stdout may be replaced (pipes, test capture)
    colour = stream.isatty() if colour is None else colour
    template = resolve_template(tokenizer, cfg.data.chat_template)
    modes = MODES if all_modes else {describe_mode(cfg.loss): cfg.loss}
    write = lambda s="": print(s, file=stream)  # noqa: E731
    legend = (
        "legend: highlighted = trained (green output, yellow instruction, cyan template), dim = masked"
        if colour else "legend: [-masked-] {+trained+} {+w:weighted+}"
    )
    write(legend)
    for index, example in enumerate(examples[:n]):
        rendered = render_example(tokenizer, example, template)
        ids, segs = rendered.input_ids[: cfg.data.max_length], rendered.segments[: cfg.data.max_length]
        for name, loss in modes.items():
            _, weights = labels_and_weights(ids, segs, loss)
            write(f"=== example {index} | {name} | {len(ids)} tokens, {sum(w > 0 for w in weights)} trained ===")
            write(show_tokens(rendered.pieces()[: len(ids)], segs, weights, colour))
    results = {}
    write("")
    write(f"{'mode':<48} {'examples':>8} {'tokens':>9} {'trained':>9} {'masked':>9} {'trained%':>8}")
    for name, c in count_masks(tokenizer, examples, template, modes, cfg.data.max_length).items():
        results[name] = dataclasses.asdict(c)
        pct = 100.0 * c.trained / max(c.tokens, 1)
        write(f"{name:<48} {c.examples:>8} {c.tokens:>9} {c.trained:>9} {c.masked:>9} {pct:>7.1f}%")
    c = next(iter(results.values()))
    tok_ratio = c["instruction_tokens"] / max(c["output_tokens"], 1)
    word_ratio = c["instruction_words"] / max(c["output_words"], 1)
    n_ex = max(c["examples"], 1)
    write(
        f"instruction/output length ratio: {tok_ratio:.4f} (tokens), {word_ratio:.4f} (whitespace words; "
        f"mean instruction {c['instruction_words'] / n_ex:.2f}, output {c['output_words'] / n_ex:.2f} words)"
    )
    return results


def describe_mode(loss: LossConfig) -> str:
    if loss.mode == "instruction_and_output":
        w = "" if loss.prompt_loss_weight == 1 else f", prompt_loss_weight={loss.prompt_loss_weight:g}"
        return f"instruction_and_output, im_mask={loss.im_mask}{w}"
    return loss.mode
