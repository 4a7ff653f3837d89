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
from ..methods.instruction_loss import labels_and_weights
from .chat import INSTRUCTION, OUTPUT, TEMPLATE, render_example, resolve_template

_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_COLOURS = {OUTPUT: "\x1b[1;32m", INSTRUCTION: "\x1b[1;33m", TEMPLATE: "\x1b[1;36m"}
MODES = {
    "output_only (IT)": LossConfig(mode="output_only"),
    "instruction_and_output, im_mask=paper (IM)": LossConfig(mode="instruction_and_output"),
    "instruction_and_output, im_mask=reference_code": LossConfig(mode="instruction_and_output", im_mask="reference_code"),
    "all_tokens": LossConfig(mode="all_tokens"),
}


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    """Token strings whose concatenation is the decoded text (so markers sit between real characters)."""
    out, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(text[len(prev):] if text.startswith(prev) else tokenizer.decode([ids[i]]))
        prev = text
    return out


def show_tokens(tokenizer, ids, segments, weights, colour: bool) -> str:
    pieces = _pieces(tokenizer, ids) if len(ids) <= 4096 else [tokenizer.decode([i]) for i in ids]
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


def count_masks(tokenizer, examples, template, loss: LossConfig, max_length: int) -> MaskCounts:
    c = MaskCounts()
    for example in examples:
        rendered = render_example(tokenizer, example, template)
        ids, segs = rendered.input_ids[:max_length], rendered.segments[:max_length]
        _, weights = labels_and_weights(ids, segs, loss)
        c.examples += 1
        c.tokens += len(ids)
        c.trained += sum(1 for w in weights if w > 0)
        c.masked += sum(1 for w in weights if w == 0)
        c.instruction_tokens += segs.count(INSTRUCTION)
        c.output_tokens += segs.count(OUTPUT)
        c.template_tokens += segs.count(TEMPLATE)
        for m in example.get("messages", []):  # whitespace words, as the IM paper's Table 5
            words = len(m["content"].split())
            if m["role"] == "assistant":
                c.output_words += words
            else:
                c.instruction_words += words
        if "text" in example:
            c.output_words += len(example["text"].split())
    return c


def inspect(cfg: RunConfig, tokenizer, examples: list[dict], *, n: int = 2, all_modes: bool = False,
            stream: TextIO = sys.stdout, colour: bool | None = None) -> dict:
    """Print the first ``n`` examples with their masks, then mask counts; returns the counts per mode."""
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
            write(show_tokens(tokenizer, ids, segs, weights, colour))
    results = {}
    write("")
    write(f"{'mode':<48} {'examples':>8} {'tokens':>9} {'trained':>9} {'masked':>9} {'trained%':>8}")
    for name, loss in modes.items():
        c = count_masks(tokenizer, examples, template, loss, cfg.data.max_length)
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
