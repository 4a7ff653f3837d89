"""Instruction data: read rows, validate them, normalise every format to chat messages.

Accepted row formats (``data.format``, or detected from the first row's keys):

- ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (Tulu / OpenAI
  style, multi-turn; ShareGPT ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}]}`` too);
- ``alpaca``: ``{"instruction": str, "input": str (optional), "output": str}``; the user turn is the instruction,
  followed by a blank line and the input when the input is not empty;
- ``prompt_completion``: ``{"prompt": str | messages, "completion": str | messages}``;
- ``text``: ``{"text": str}``: plain language-modelling text, no chat template, every token is output.

Files: ``.jsonl``, ``.json`` (JSON Lines or one array of rows), ``.csv`` (a header line, then one row per record;
quoted cells may span lines), ``.parquet``. A bad row is reported as ``file:line: what is wrong`` (``file: row N``
for parquet and JSON arrays) and nothing is trained.

JSON and CSV are parsed with Python's ``json`` and ``csv`` modules, not ``datasets.load_dataset``: its readers change
the data. pyarrow's JSON reader turns ISO-date strings ("2021-01-01") into timestamps, and the pandas CSV reader
turns "NA", "null" or "" into missing values, numbers into ints, and shifts every column of a row with one field too
many into the index. The ``csv`` module keeps every cell as text and gives each row's line number. Parquet is typed,
so it is read through ``datasets``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError
from ..io_utils import iter_json_lines

FORMATS = ("messages", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_SURROGATE = re.compile("[\ud800-\udfff]")


class RowError(Exception):
    """A problem with one row; turned into a DataError with its location by the caller."""


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _json_array(path: Path, text: str) -> tuple[list, list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected JSON Lines or one array of row objects, got {type(data).__name__}")
    return data, [f"{path}: row {i + 1}" for i in range(len(data))]


def _csv_rows(path: Path, text: str) -> tuple[list, list[str]]:
    csv.field_size_limit(1 << 30)  # the default 128 KiB is shorter than some answers
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, rows, where, last = None, [], [], 0
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not cells or cells == [""]:
                continue
            if header is None:
                header = [c.strip() for c in cells]
                dup = next((c for i, c in enumerate(header) if c in header[:i]), None)
                if dup is not None or "" in header:
                    what = f"duplicate column '{dup}'" if dup is not None else "an empty column name"
                    raise DataError(f"{path}:{start}: header has {what}; expected unique column names")
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}:{start}: {len(cells)} comma-separated fields but the header has "
                                f"{len(header)} ({', '.join(header)})")
            rows.append(dict(zip(header, cells)))
            where.append(f"{path}:{start}")
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return rows, where


def _parquet_rows(path: Path) -> tuple[list, list[str]]:
    import datasets
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # its readers log their own error before raising
    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset("parquet", data_files=str(path), split="train", keep_in_memory=True).to_list()
    except Exception as err:  # noqa: BLE001  (pyarrow and datasets raise many types for a broken file)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot be read as parquet ({reason})") from None
    finally:
        datasets.enable_progress_bars()
        ds_logging.set_verbosity(level)
    return rows, [f"{path}: row {i + 1}" for i in range(len(rows))]


def read_rows_with_locations(path: str | Path) -> tuple[list, list[str]]:
    """The rows of a data file and the location of each (``file:line`` or ``file: row N``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .jsonl, .json, .csv or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if suffix == ".parquet":
        rows, where = _parquet_rows(path)
    elif suffix == ".csv":
        rows, where = _csv_rows(path, _decode(path, path.read_bytes()))
    elif suffix == ".json" and path.read_bytes().lstrip().lstrip(b"\xef\xbb\xbf").lstrip().startswith(b"["):
        rows, where = _json_array(path, _decode(path, path.read_bytes()))
    else:
        pairs = list(iter_json_lines(path))
        rows, where = [row for _, row in pairs], [f"{path}:{number}" for number, _ in pairs]
    if not rows:
        raise DataError(f"{path}: file has no rows")
    return rows, where


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a data file as dicts (see the module docstring for the formats)."""
    return read_rows_with_locations(path)[0]


def detect_format(row: Any, where: str) -> str:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object (a row with named fields), got {type(row).__name__}")
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
        f"{where}: cannot tell the row format from keys {sorted(map(str, keys))}; expected messages, "
        "instruction/input/output, prompt/completion or text (or set data.format)"
    )


def _text(value: Any, what: str) -> str:
    """``value`` if it is a string a tokenizer can encode; RowError naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string, got {type(value).__name__}")
    bad = _SURROGATE.search(value)
    if bad:
        raise RowError(f"{what} holds an unpaired surrogate escape \\u{ord(bad.group()):04x}; expected valid Unicode")
    return value


def _need_str(row: dict, key: str, *, allow_empty: bool = False) -> str:
    if key not in row or row[key] is None:
        raise RowError(f"missing field '{key}'")
    value = _text(row[key], f"field '{key}'")
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
            source = msg.get("from")
            role = _SHAREGPT_ROLES.get(source) if isinstance(source, str) else None
            content = msg.get("value")
            if role is None:
                raise RowError(f"{field}[{i}].from must be one of {', '.join(_SHAREGPT_ROLES)}, got {source!r}")
        else:
            role, content = msg.get("role"), msg.get("content")
            if not isinstance(role, str) or role not in ROLES:
                raise RowError(f"{field}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        out.append({"role": role, "content": _text(content, f"{field}[{i}].content")})
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
        extra = row.get("input")
        extra = "" if extra is None else _text(extra, "field 'input'")
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
        raise RowError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    # an empty assistant reply is still a target (its end-of-turn token): AlpaGasus-Claude has one, and the paper
    # trained on it; a conversation with no assistant turn at all has nothing to learn
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("has no assistant message to learn from")
    return {"messages": messages}


def detect_and_normalise(rows: Iterable[dict], path: Path, fmt: str = "auto",
                         where: list[str] | None = None) -> list[dict]:
    """Normalise every row; ``where[i]`` locates row i in error messages (default ``path: row i+1``)."""
    rows = list(rows)
    if not rows:
        raise DataError(f"{path}: file has no rows")

    def at(index: int) -> str:
        return where[index] if where is not None else f"{path}: row {index + 1}"

    if fmt == "auto":
        fmt = detect_format(rows[0], at(0))
    out = []
    for index, row in enumerate(rows):
        try:
            out.append(normalise_row(row, fmt))
        except RowError as err:
            raise DataError(f"{at(index)}: {err}") from None
    return out


def load_examples(path: str | Path, fmt: str = "auto") -> list[dict]:
    """Read and validate a data file; every row becomes ``{"messages": [...]}`` or ``{"text": str}``."""
    path = Path(path)
    rows, where = read_rows_with_locations(path)
    return detect_and_normalise(rows, path, fmt, where)
