"""Instruction data: read rows through ``datasets``, validate them, normalise every format to chat messages.

Accepted row formats (``data.format``, or detected from the first row's keys):

- ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (Tulu / OpenAI
  style, multi-turn; ShareGPT ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}]}`` too);
- ``alpaca``: ``{"instruction": str, "input": str (optional), "output": str}``; the user turn is the instruction,
  followed by a blank line and the input when the input is not empty;
- ``prompt_completion``: ``{"prompt": str | messages, "completion": str | messages}``;
- ``text``: ``{"text": str}``: plain language-modelling text, no chat template, every token is output.

Files: ``.jsonl``, ``.json`` (JSON Lines or one array), ``.csv``, ``.parquet``. A bad row is reported as
``file:line: what is wrong`` (``file: row N`` for parquet and JSON arrays) and nothing is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError
from ..io_utils import iter_json_lines

FORMATS = ("messages", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class RowError(Exception):
    """A problem with one row; turned into a DataError with its location by the caller."""


def _where(path: Path, index: int) -> str:
    """Human location of row ``index`` (0-based): a line number where the file has one row per line."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".json" and _is_json_lines(path)):
        return f"{path}:{_line_of_row(path, index)}"
    if suffix == ".csv":
        return f"{path}:{index + 2}"  # line 1 is the header; assumes no multi-line quoted cells
    return f"{path}: row {index + 1}"


def _line_of_row(path: Path, index: int) -> int:
    """Line number of the index-th non-blank line (readers skip blank lines)."""
    seen = -1
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                seen += 1
                if seen == index:
                    return number
    return index + 1


def _is_json_lines(path: Path) -> bool:
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                return not raw.lstrip().startswith(b"[")
    return True


def read_rows(path: str | Path) -> list[dict]:
    """Read a data file through ``datasets`` and return its rows as dicts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .jsonl, .json, .csv or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(_READERS[suffix], data_files=str(path), split="train", keep_in_memory=True)
        rows = ds.to_list()
    except Exception as err:  # the arrow readers' errors carry no line numbers: find the bad line ourselves
        if suffix in (".jsonl", ".json") and _is_json_lines(path):
            rows = [row for _, row in iter_json_lines(path)]
            detect_and_normalise(rows, path)  # raises with file:line when a row is the problem
            return rows
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot be read as {_READERS[suffix]} ({reason})") from None
    finally:
        datasets.enable_progress_bars()
    if not rows:
        raise DataError(f"{path}: file has no rows")
    return rows


def detect_format(row: dict, where: str) -> str:
    keys = set(row)
    if "messages" in keys or "conversations" in keys:
        return "messages"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    raise DataError(
        f"{where}: cannot tell the row format from keys {sorted(keys)}; expected messages, "
        "instruction/input/output, prompt/completion or text (or set data.format)"
    )


def _need_str(row: dict, key: str, *, allow_empty: bool = False) -> str:
    if key not in row or row[key] is None:
        raise RowError(f"missing field '{key}'")
    value = row[key]
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(f"field '{key}' is empty")
    return value


def _messages(items: Any, field: str) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise RowError(f"field '{field}' must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(items):
        if not isinstance(msg, dict):
            raise RowError(f"{field}[{i}] must be an object with role and content")
        if "from" in msg and "role" not in msg:  # ShareGPT
            role = _SHAREGPT_ROLES.get(str(msg.get("from")))
            content = msg.get("value")
        else:
            role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise RowError(f"{field}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RowError(f"{field}[{i}].content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def normalise_row(row: dict, fmt: str) -> dict:
    """One row -> ``{"messages": [...]}`` or ``{"text": str}``. Raises RowError."""
    if not isinstance(row, dict):
        raise RowError(f"expected an object, got {type(row).__name__}")
    if fmt == "messages":
        key = "messages" if "messages" in row else "conversations"
        if key not in row:
            raise RowError("missing field 'messages'")
        messages = _messages(row[key], key)
    elif fmt == "alpaca":
        instruction = _need_str(row, "instruction")
        extra = row.get("input") or ""
        if not isinstance(extra, str):
            raise RowError(f"field 'input' must be a string, got {type(extra).__name__}")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _need_str(row, "output")}]
    elif fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if key not in row or row[key] is None:
                raise RowError(f"missing field '{key}'")
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list) or isinstance(completion, list):  # conversational prompt-completion (TRL)
            messages = _messages(prompt, "prompt") + _messages(completion, "completion")
        else:
            messages = [
                {"role": "user", "content": _need_str(row, "prompt")},
                {"role": "assistant", "content": _need_str(row, "completion")},
            ]
    elif fmt == "text":
        return {"text": _need_str(row, "text")}
    else:
        raise RowError(f"unknown format {fmt!r}")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise RowError("has no non-empty assistant message to learn from")
    return {"messages": messages}


def detect_and_normalise(rows: Iterable[dict], path: Path, fmt: str = "auto") -> list[dict]:
    rows = list(rows)
    if not rows:
        raise DataError(f"{path}: file has no rows")
    if fmt == "auto":
        fmt = detect_format(rows[0], _where(path, 0))
    out = []
    for index, row in enumerate(rows):
        try:
            out.append(normalise_row(row, fmt))
        except RowError as err:
            raise DataError(f"{_where(path, index)}: {err}") from None
    return out


def load_examples(path: str | Path, fmt: str = "auto") -> list[dict]:
    """Read and validate a data file; every row becomes ``{"messages": [...]}`` or ``{"text": str}``."""
    path = Path(path)
    return detect_and_normalise(read_rows(path), path, fmt)
