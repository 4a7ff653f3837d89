"""StepGame file formats (Shi, Zhang, Lipani, AAAI 2022): official JSON, HF-style JSONL and bAbI text.

* official JSON: one object ``{"0": {"story": [...], "question": ..., "label": ...}, ...}`` keyed by string index
  (written byte-compatible with the released files: ``json.dumps`` defaults, no trailing newline);
* JSONL: one ``{"story": [...], "question": ..., "label": ..., "k_hop": "3"}`` per line, as the Hugging Face
  copy ``michaelszx/StepGame`` (``k_hop`` is a string there; the reader accepts an int too);
* bAbI: numbered story lines, then ``"<n> <question>\\t<label>\\t1"``; numbering restarts at 1 per story.

Readers return dicts with ``id``, ``story``, ``question``, ``label`` and ``k_hop`` (int or None) and raise a
one-line ``DataError`` naming the file and record/line for malformed input. Writers are atomic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io_utils import atomic_write_text, iter_json_lines
from .templates import LABELS

FORMATS = ("json", "jsonl", "babi")
SUFFIX = {"json": ".json", "jsonl": ".jsonl", "babi": ".txt"}
_QUESTION = re.compile(r"What is the relation of the agent [A-Z] to the agent [A-Z]\?")
_K_FROM_NAME = re.compile(r"qa(\d+)_")


def _k_from_name(path: Path) -> int | None:
    match = _K_FROM_NAME.match(path.name)
    return int(match.group(1)) if match else None


def _check(path: Path, where: str, rec) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"{path}: {where}: expected an object with story, question and label")
    story = rec.get("story")
    if story is None:
        raise DataError(f"{path}: {where}: missing 'story' (expected a list of sentences)")
    if not isinstance(story, list) or not all(isinstance(s, str) for s in story):
        raise DataError(f"{path}: {where}: 'story' must be a list of strings")
    if not story or not any(s.strip() for s in story):
        raise DataError(f"{path}: {where}: empty story (expected at least one sentence)")
    question = rec.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{path}: {where}: missing question (expected 'What is the relation of the agent X to the "
                        "agent Y?')")
    if not _QUESTION.fullmatch(question.strip()):
        raise DataError(f"{path}: {where}: question {question!r} is not 'What is the relation of the agent X to "
                        "the agent Y?'")
    label = rec.get("label")
    if label not in LABELS:
        raise DataError(f"{path}: {where}: unknown label {label!r} (expected one of {', '.join(LABELS)})")
    return {"story": list(story), "question": question.strip(), "label": label}


def _k_hop(path: Path, where: str, value) -> int | None:
    if value is None:
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {where}: k_hop {value!r} is not an integer") from None
    if k < 1:
        raise DataError(f"{path}: {where}: k_hop {k} must be >= 1")
    return k


def _open(path) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte {err.start})") from None


def read_json(path) -> list[dict]:
    """Read the official format; ``k_hop`` comes from the file name (qa{k}_...) when present."""
    path, text = _open(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object keyed by example index ({{\"0\": {{...}}}})")
    k = _k_from_name(path)
    out = []
    for key, rec in raw.items():
        ex = _check(path, f"record {key!r}", rec)
        ex["k_hop"] = _k_hop(path, f"record {key!r}", rec.get("k_hop", k))
        out.append({"id": str(key), **ex})
    return out


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out = []
    for n, rec in iter_json_lines(path):
        ex = _check(path, f"line {n}", rec)
        ex["k_hop"] = _k_hop(path, f"line {n}", rec.get("k_hop"))
        out.append({"id": str(rec.get("id", len(out))), **ex})
    return out


def read_babi(path) -> list[dict]:
    """Read bAbI text: ``<n> <sentence>`` lines, closed by ``<n> <question>\\t<label>\\t<support>``."""
    path, text = _open(path)
    k = _k_from_name(path)
    out, story, start = [], [], 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        num, _, rest = line.partition(" ")
        if not num.isdigit():
            raise DataError(f"{path}: line {n}: expected '<number> <sentence>' (bAbI format), got {line[:60]!r}")
        if int(num) == 1 and story:
            raise DataError(f"{path}: line {n}: story of line {start} has no question line ('<n> <question>\\t"
                            "<label>\\t1')")
        if int(num) != len(story) + 1:
            raise DataError(f"{path}: line {n}: line number {num}, expected {len(story) + 1}")
        if not story:
            start = n
        if "\t" not in rest:
            story.append(rest)
            continue
        fields = rest.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}: line {n}: expected '<question>\\t<label>\\t1'")
        where = f"line {n}"
        if not story:
            raise DataError(f"{path}: {where}: empty story (expected at least one sentence before the question)")
        ex = _check(path, where, {"story": story, "question": fields[0], "label": fields[1].strip()})
        out.append({"id": str(len(out)), **ex, "k_hop": k})
        story = []
    if story:
        raise DataError(f"{path}: line {start}: story has no question line at the end of the file")
    return out


def read_examples(path, fmt: str | None = None) -> list[dict]:
    """Read any of the three formats (chosen by ``fmt`` or by the suffix: .json, .jsonl, .txt)."""
    path = Path(path)
    fmt = fmt or {".json": "json", ".jsonl": "jsonl", ".txt": "babi"}.get(path.suffix)
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown StepGame format (expected a .json, .jsonl or .txt file, or fmt in "
                        f"{', '.join(FORMATS)})")
    examples = {"json": read_json, "jsonl": read_jsonl, "babi": read_babi}[fmt](path)
    if not examples:  # nothing to solve or score: an accuracy of 0/0 would look like a result
        raise DataError(f"{path}: no StepGame examples in the file (expected story, question and label records)")
    return examples


def dumps(examples: list[dict], fmt: str) -> str:
    """Serialise examples (dicts with story, question, label and optionally k_hop) to one of the formats."""
    if fmt == "json":
        return json.dumps({str(i): {"story": ex["story"], "question": ex["question"], "label": ex["label"]}
                           for i, ex in enumerate(examples)})
    if fmt == "jsonl":
        return "".join(json.dumps({"story": ex["story"], "question": ex["question"], "label": ex["label"],
                                   "k_hop": None if ex.get("k_hop") is None else str(ex["k_hop"])}) + "\n"
                       for ex in examples)
    if fmt == "babi":
        lines = []
        for ex in examples:
            lines += [f"{i} {s}" for i, s in enumerate(ex["story"], 1)]
            lines.append(f"{len(ex['story']) + 1} {ex['question']}\t{ex['label']}\t1")
        return "\n".join(lines) + ("\n" if lines else "")
    raise DataError(f"unknown StepGame format {fmt!r} (expected one of {', '.join(FORMATS)})")


def write_examples(path, examples: list[dict], fmt: str) -> Path:
    """Write atomically; returns the path."""
    atomic_write_text(path, dumps(examples, fmt))
    return Path(path)


def parse_k_range(text: str) -> list[int]:
    """"3" -> [3]; "1-10" -> [1..10]; "1,3,5" -> [1, 3, 5]. Raises ConfigError (one line) on anything else."""
    ks: list[int] = []
    for part in str(text).split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise ConfigError(f"--k {text!r}: expected a number, a range like 1-10 or a list like 1,3,5") from None
        if b < a:
            raise ConfigError(f"--k {text!r}: empty range {a}-{b} (write the smaller number first)")
        ks += list(range(a, b + 1))
    if any(not 1 <= k <= 10 for k in ks):
        raise ConfigError(f"--k {text!r}: hops must be between 1 and 10")
    return sorted(set(ks))
