"""``posttrain bleu-train``: how much a model reproduces its training targets (IM paper, Table 2).

Shi et al. ("Instruction Tuning With Loss Over Instructions", NeurIPS 2024, Table 2) measure memorisation as
BLEU-4 between a model's greedy answers to its own training prompts and the training answers: lower means the
model copies its training targets less, and IM scores lower than IT on every data set.

Inputs: the AlpacaEval model-outputs file that ``posttrain generate-set --prompts TRAIN_FILE`` wrote (greedy), and
TRAIN_FILE itself, whose references are the last assistant turns. Row i of the outputs is paired with row i of the
training file, and the instruction texts must agree (the last user message before that turn), so outputs
generated from another file, or reordered, are refused with the row that differs. ``generate-set --limit N``
output pairs with the first N training rows.

Reported: corpus BLEU-4 with sacrebleu's defaults (13a tokenisation, no smoothing, one reference), the mean
sentence BLEU (sacrebleu's sentence_bleu: exponential smoothing, effective order), n, and the mean length in
whitespace words of the outputs and of the references.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from .alpaca_format import read_model_outputs, write_summary
from .generate_set import load_instruction_rows, summary_path


def pair_with_references(outputs_path: str | Path, references_path: str | Path) -> tuple[list[str], list[str]]:
    """(hypotheses, references), row by row; DataError naming the file and row on any mismatch."""
    outputs = read_model_outputs(outputs_path)
    training = load_instruction_rows(references_path)
    if len(outputs) > len(training):
        raise DataError(f"{outputs_path}: {len(outputs)} outputs but {references_path} has only {len(training)} "
                        "training rows; expected the outputs of generate-set --prompts on that file")
    for number, (output, row) in enumerate(zip(outputs, training)):
        if output["instruction"] != row["instruction"]:
            raise DataError(f"{outputs_path}: row {number}: instruction {_clip(output['instruction'])} does not match "
                            f"{row['where']} ({_clip(row['instruction'])}); expected the "
                            "outputs of generate-set --prompts on that file, in its order")
    return [output["output"] for output in outputs], [row["reference"] for row in training[: len(outputs)]]


def _clip(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


def bleu_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU-4 and mean sentence BLEU (0-100) with sacrebleu, plus n and mean word lengths."""
    import sacrebleu

    corpus = sacrebleu.corpus_bleu(hypotheses, [references])
    sentences = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hypotheses, references)]
    n = len(hypotheses)
    return {
        "bleu": corpus.score,
        "sentence_bleu_mean": sum(sentences) / n,
        "n": n,
        "avg_output_words": sum(len(h.split()) for h in hypotheses) / n,
        "avg_reference_words": sum(len(r.split()) for r in references) / n,
        "brevity_penalty": corpus.bp,
        "precisions": list(corpus.precisions),
    }


def _generator(outputs_path: Path) -> str:
    names = {row.get("generator") or "" for row in read_model_outputs(outputs_path)}
    return names.pop() if len(names) == 1 else ",".join(sorted(names))


def _generation_settings(outputs_path: Path) -> dict | None:
    """The generate-set summary's settings next to the outputs, if there is one (shows whether it was greedy)."""
    path = summary_path(outputs_path)
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError):
        return None


def bleu_train(outputs_path: str | Path, references_path: str | Path, summary: str | Path | None = None) -> dict:
    """Score ``outputs_path`` against the training targets of ``references_path``; writes and returns the summary."""
    outputs_path = Path(outputs_path)
    hypotheses, references = pair_with_references(outputs_path, references_path)
    scores = bleu_scores(hypotheses, references)
    metrics = {key: value for key, value in scores.items() if key != "precisions"}
    import sacrebleu

    return write_summary(summary or summary_path(outputs_path, "bleu"), kind="bleu_train",
                         model=_generator(outputs_path), metrics=metrics, precisions=scores["precisions"],
                         outputs=str(outputs_path), references=str(references_path),
                         tokenize="13a", sacrebleu_version=sacrebleu.__version__,
                         generation_settings=_generation_settings(outputs_path))
