"""posttrain judge verdicts as AlpacaEval annotations, and the package's own win rate over them.

AlpacaEval (Li et al., 2023; tatsu-lab/alpaca_eval) stores one annotation per instruction in
``results/<model>/<annotator>/annotations.json``: a JSON list of objects with ``instruction``, ``output_1`` (the
reference, e.g. text-davinci-003 or gpt4_1106_preview), ``generator_1``, ``output_2`` (the evaluated model),
``generator_2``, ``annotator``, ``preference`` and ``raw_completion``. ``preference`` lies in [1, 2]: 1 means the
judge preferred output_1, 2 output_2, 1.5 a draw, anything between a graded (log-probability weighted) verdict.
The package's win rate of the model is

    win_rate = 100 * mean_i (preference_i - 1)

(``alpaca_eval.metrics.get_winrate``). posttrain's verdict for a pair is pref_A = P(A better), the mean over both
presentation orders (``judge.evaluate_pairs``), so the annotation is ``preference = 1 + pref_A`` with A as output_2,
and the package's win rate over the file equals posttrain's ``win_rate`` (tested). ``raw_completion`` keeps what
the judge returned in each order (an HTTP judge's answer text and top log-probabilities, a local judge's letter
log-masses).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import DataError
from ..io_utils import atomic_write_json

ANNOTATIONS_NAME = "annotations.json"
REQUIRED_FIELDS = ("instruction", "output_1", "output_2", "generator_1", "generator_2", "preference")


def build_annotations(verdicts, rows_a: list[dict], rows_b: list[dict], *, model: str, reference: str,
                      annotator: str) -> list[dict]:
    """One AlpacaEval annotation per judged pair (rows_a[i] = the model's row, rows_b[i] = its reference)."""
    annotations = []
    for verdict, row_a, row_b in zip(verdicts, rows_a, rows_b):
        raw = {"output_2_shown_first": verdict.raw_a_first}
        if verdict.p_b_first is not None:  # --no-swap asked one order only
            raw["output_1_shown_first"] = verdict.raw_b_first
        annotations.append({
            "instruction": row_a["instruction"], "dataset": row_a.get("dataset") or row_b.get("dataset") or "",
            "output_1": row_b["output"], "generator_1": reference,
            "output_2": row_a["output"], "generator_2": model,
            "annotator": annotator, "preference": 1.0 + verdict.preference_a, "raw_completion": raw,
        })
    return annotations


def write_annotations(path: str | Path, annotations: list[dict]) -> None:
    atomic_write_json(path, annotations)


def read_annotations(path: str | Path) -> list[dict]:
    """AlpacaEval annotations from a JSON file, checked: ``file: row N: what is wrong``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected AlpacaEval annotations, a JSON list)")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not JSON ({type(err).__name__}: {err})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of annotations")
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number}: expected an object, got {type(row).__name__}")
        for field in REQUIRED_FIELDS:
            if field not in row:
                raise DataError(f"{path}: row {number}: missing field {field!r}")
        for field in REQUIRED_FIELDS[:-1]:
            if not isinstance(row[field], str):
                raise DataError(f"{path}: row {number}: field {field!r} must be a string")
        preference = row["preference"]
        # None is AlpacaEval's "no annotation" (a parse failure); 0 is its old spelling of a draw
        if preference is not None and (isinstance(preference, bool) or not isinstance(preference, (int, float))
                                       or not (preference == 0 or 1 <= preference <= 2)):
            raise DataError(f"{path}: row {number}: field 'preference' must be a number in [1, 2] (or 0, a draw), "
                            f"got {preference!r}")
    return rows


def posttrain_win_rate(annotations: list[dict]) -> float:
    """100 * mean(preference - 1) over the annotated rows, with 0 read as a draw (1.5), as AlpacaEval does."""
    values = [1.5 if a["preference"] == 0 else a["preference"] for a in annotations
              if a["preference"] is not None and not math.isnan(a["preference"])]
    return 100.0 * sum(v - 1.0 for v in values) / len(values)


def package_win_rate(annotations: list[dict]) -> dict:
    """The alpaca_eval package's own head-to-head metrics (``win_rate``, ``standard_error``, ``n_wins``, ...)."""
    from .alpaca_package import require

    winrate = require("alpaca_eval.metrics.winrate", needed_for="the AlpacaEval win rate")
    return {key: float(value) for key, value in winrate.get_winrate(annotations).items()}


def evaluation_style(reference: str) -> str:
    """Which AlpacaEval a comparison resembles, from the reference's generator name: 1.0 compared with
    text-davinci-003's outputs, 2.0 with GPT-4 Turbo's (gpt4_1106_preview) and reports the LC win rate."""
    name = reference.lower()
    if "davinci" in name:
        return "AlpacaEval 1.0 style"
    if "gpt4_1106" in name or "gpt-4-1106" in name or "gpt4_turbo" in name:
        return "AlpacaEval 2.0 style"
    return "custom reference"
