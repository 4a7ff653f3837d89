"""AlpacaEval's ``model_outputs`` format, read and written in one place.

A model-outputs file is a JSON list of objects ``{"instruction", "output", "generator", "dataset"}`` (the
format of ``results/<model>/model_outputs.json`` in tatsu-lab/alpaca_eval, and of the 805-prompt evaluation set).
``instruction`` and ``output`` are required strings; ``generator`` and ``dataset`` are strings when present.
Every problem is reported as ``file: row N: what is wrong`` (rows counted from 0, as in the JSON list).

Analysis commands (generate-set, judge, bleu-train, loss-eval) also write a *summary* JSON
``{"kind", "model", "metrics": {name: number}, ...}``; ``posttrain im-report`` lines summaries up by ``model``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..io_utils import atomic_write_json

REQUIRED = ("instruction", "output")
OPTIONAL = ("generator", "dataset")


def read_model_outputs(path: str | Path, *, need_output: bool = True) -> list[dict]:
    """Rows of an AlpacaEval model-outputs (or prompt-set) JSON file, validated.

    ``need_output=False`` accepts a prompt set (rows with an ``instruction`` and no ``output`` yet)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected an AlpacaEval JSON list of {{instruction, output}})")
    try:
        rows = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    if not rows:
        raise DataError(f"{path}: empty list (expected at least one {{instruction, output}} object)")
    required = REQUIRED if need_output else REQUIRED[:1]
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number}: expected an object, got {type(row).__name__}")
        for key in required:
            if key not in row:
                raise DataError(f"{path}: row {number}: missing field {key!r}")
            if row[key] is None:  # (null is accepted for the optional fields only)
                raise DataError(f"{path}: row {number}: field {key!r} is null (expected a string)")
        for key in (*required, *OPTIONAL):
            if key in row and row[key] is not None and not isinstance(row[key], str):
                raise DataError(f"{path}: row {number}: field {key!r} must be a string, got {type(row[key]).__name__}")
    return rows


def write_model_outputs(path: str | Path, rows: list[dict]) -> None:
    """Write rows as AlpacaEval model outputs (atomically; key order as in AlpacaEval's own files)."""
    ordered = [{"dataset": r.get("dataset", ""), "instruction": r["instruction"], "output": r["output"],
                "generator": r.get("generator", "")} for r in rows]
    atomic_write_json(path, ordered)


def write_summary(path: str | Path, kind: str, model: str, metrics: dict, **extra) -> dict:
    """An analysis summary ``{"kind", "model", "metrics", ...}`` (what ``posttrain im-report`` reads)."""
    summary = {"kind": kind, "model": model, "metrics": metrics, **extra}
    atomic_write_json(path, summary)
    return summary


def read_summary(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: summary file not found")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a JSON summary ({err})") from None
    if not isinstance(summary, dict) or not {"kind", "model", "metrics"} <= set(summary):
        raise DataError(f"{path}: expected a JSON object with 'kind', 'model' and 'metrics' (a posttrain summary)")
    if not isinstance(summary["metrics"], dict):
        raise DataError(f"{path}: field 'metrics' must be an object of name -> number")
    return summary
