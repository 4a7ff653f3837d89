"""Readers for declared tasks: LM-BFF k-shot splits, PCP unlabelled pools, SuperGLUE jsonl, user files.

Every reader returns plain dicts ``{"text_a", "text_b" (None for single-sentence tasks), <extra fields>, "label",
"idx"}`` with ``label`` the canonical label value of the task (a string of ``task.labels``; a float for regression
tasks such as STS-B; None in unlabeled splits). The layouts are those of LM-BFF (Gao et al., ACL 2021;
``<TASK>/16-<seed>/{train,dev}.*``, test = the original dev set) and of PCP (Shi & Lipani, NeurIPS 2023;
``data/glue_pretrain/<TASK>/{train,dev}.json``), and FewGLUE/SuperGLUE for DePT (Shi & Lipani, ICLR 2024).

TSV and CSV files are read with Python's csv module, not ``datasets.load_dataset("csv")``: pandas (which the
datasets CSV builder uses) silently shifts every column of SNLI's k-shot files, whose rows with five annotator
labels have 15 fields under an 11-field header (pandas turns the extra leading fields into an index, so "sentence1"
holds a label for all 48 rows); and the csv module gives the file:line of a bad row. GLUE TSVs are read with quoting
off (``QUOTE_NONE``: a leading ``"`` in an MRPC or QNLI sentence is text, as in transformers' ``_read_tsv``), the
header-less LM-BFF CSVs with standard quoting; no value is ever turned into NaN (so "null" or "NA" stay text).
PCP pools are one JSON object and are read with ``json``; jsonl goes through ``posttrain.io_utils.iter_json_lines``.

The data root is an argument everywhere; by default it is ``$POSTTRAIN_DATA``, else ``../shared/data`` relative to
the working directory or to the repository checkout.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ConfigError, DataError
from ..io_utils import iter_json_lines
from .spec import DataSpec, Task, canonical_label, suggest
from .user import get_task

ENV_VAR = "POSTTRAIN_DATA"


def default_data_root() -> Path:
    """``$POSTTRAIN_DATA``; else the first existing ``../shared/data`` next to the cwd or the repo checkout."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd() / ".." / "shared" / "data",
                  Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return candidates[0]


def _spec(task: Task, source: str) -> DataSpec:
    if source not in task.data:
        have = ", ".join(task.data) or "none"
        raise ConfigError(f"task '{task.name}' declares no '{source}' data (it has: {have})"
                          f"{suggest(source, task.data)}")
    return task.data[source]


def _candidates(task: Task, source: str, split: str, root, seed) -> list[Path]:
    spec = _spec(task, source)
    if split not in spec.files:
        raise ConfigError(f"task '{task.name}': {source} has no split '{split}' (splits: {', '.join(spec.files)})"
                          f"{suggest(split, spec.files)}")
    root = Path(root) if root is not None else default_data_root()
    base = Path(spec.dir.replace("{data_root}", str(root))).expanduser()
    if not base.is_absolute() and task.base_dir:
        base = Path(task.base_dir) / base
    names = spec.files[split]
    if any("{seed}" in name for name in names):
        if seed is None:
            raise ConfigError(f"task '{task.name}': {source} {split} needs a seed ({', '.join(map(str, spec.seeds))})")
        if spec.seeds and int(seed) not in spec.seeds:
            raise ConfigError(f"task '{task.name}': seed {seed} is not one of {', '.join(map(str, spec.seeds))}")
    return [base / name.replace("{seed}", str(seed)) for name in names]


def find_file(task: Task | str, source: str, split: str, *, root=None, seed=None) -> Optional[Path]:
    """The file a split is read from (first existing candidate), or None when it is not present."""
    task = get_task(task)
    return next((p for p in _candidates(task, source, split, root, seed) if p.is_file()), None)


def read_split(task: Task | str, source: str, split: str, *, root=None, seed=None) -> list[dict]:
    """Examples of one split of one declared data source (kshot, pool, superglue or a user source)."""
    task = get_task(task)
    spec = _spec(task, source)
    candidates = _candidates(task, source, split, root, seed)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        also = f" (nor {', '.join(map(str, candidates[1:]))})" if len(candidates) > 1 else ""
        hint = f"; {spec.missing}" if spec.missing else ""
        raise DataError(f"{candidates[0]}: {task.name} {source} {split} file is not present{also}{hint}; "
                        f"set ${ENV_VAR} or pass root= to read another data root")
    labelled = split not in spec.unlabeled
    rows = {"tsv": _tsv_rows, "csv": _tsv_rows, "json": _json_rows, "jsonl": _jsonl_rows}[spec.format](path, spec)
    return [_example(task, spec, get, where, position, labelled) for position, (where, get) in enumerate(rows)]


def read_kshot(task: Task | str, seed: int, split: str, root=None) -> list[dict]:
    """LM-BFF k-shot split: ``train``/``dev`` of ``16-<seed>``, or ``test`` (the original dev set, any seed)."""
    return read_split(task, "kshot", split, root=root, seed=seed)


def read_pool(task: Task | str, split: str, root=None) -> list[dict]:
    """PCP unlabelled pool (``train`` or ``dev``); the gold ``label`` is kept (an oracle; PCP pseudo-labels it)."""
    return read_split(task, "pool", split, root=root)


def read_superglue(task: Task | str, split: str, root=None) -> list[dict]:
    """FewGLUE/SuperGLUE jsonl split: ``train`` (32-shot), ``dev32``, ``val`` (official), ``unlabeled``."""
    return read_split(task, "superglue", split, root=root)


# ---------------------------------------------------------------------------------------------------------------
# row sources: each yields (where, get) with where = "file:line" and get(column, field) -> value


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}:1: empty file; expected rows")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {err.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _tsv_rows(path: Path, spec: DataSpec) -> Iterator[tuple[str, Any]]:
    text = _decode(path)
    tsv = spec.format == "tsv"
    kind = "tab-separated" if tsv else "comma-separated"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header: Optional[list[str]] = None
    by_name = [c for c in spec.columns.values() if isinstance(c, str)]
    last = 0
    count = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row or row == [""]:
                continue
            if spec.header and header is None:
                header = row
                for name in by_name:
                    if name not in header:
                        raise DataError(f"{path}:{start}: no column '{name}' in the header (columns: "
                                        f"{', '.join(header)}){suggest(name, header)}")
                continue
            if by_name and header is not None and len(row) != len(header):
                raise DataError(f"{path}:{start}: {len(row)} {kind} fields but the header has {len(header)}; "
                                "declare the columns by position")
            count += 1
            yield f"{path}:{start}", _getter(row, header, path, start, kind)
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed {spec.format.upper()} ({err})") from None
    if not count:
        raise DataError(f"{path}:{last + 1}: no data rows{' after the header' if spec.header else ''}")


def _getter(row: list[str], header, path, line, kind):
    index = {name: i for i, name in enumerate(header)} if header else {}

    def get(column, field):
        i = index[column] if isinstance(column, str) else column
        if not -len(row) <= i < len(row):
            raise DataError(f"{path}:{line}: expected at least {i + 1 if i >= 0 else -i} {kind} fields "
                            f"(for {field}), got {len(row)}")
        return row[i]

    return get


def _json_rows(path: Path, spec: DataSpec) -> Iterator[tuple[str, Any]]:
    text = _decode(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = [(None, row) for row in data]
    else:
        raise DataError(f"{path}:1: expected a JSON object of rows (or a list of rows), got {type(data).__name__}")
    if not items:
        raise DataError(f"{path}:1: no rows")
    lines = _key_lines(text) if isinstance(data, dict) else {}
    for position, (key, row) in enumerate(items):
        where = f"{path}:{lines.get(key, 1)}" if key is not None else f"{path}: row {position}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a row object, got {type(row).__name__}")
        yield where, _key_getter(row, where, key)


_ROW_KEY = re.compile(r'^[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*:[ \t]*\{', flags=re.MULTILINE)


def _key_lines(text: str) -> dict[str, int]:
    """Line of each ``"key": {`` (one pass over a pretty-printed file; a one-line file gives line 1 for all)."""
    lines, line, pos = {}, 1, 0
    for match in _ROW_KEY.finditer(text):
        line += text.count("\n", pos, match.start())
        pos = match.start()
        lines.setdefault(json.loads(f'"{match.group(1)}"'), line)
    return lines


def _key_getter(row: dict, where: str, key=None):
    def get(column, field):
        if column not in row:
            raise DataError(f"{where}: no key '{column}' (for {field}); keys: {', '.join(map(str, row))}")
        return row[column]

    get.json_key = key
    return get


def _jsonl_rows(path: Path, spec: DataSpec) -> Iterator[tuple[str, Any]]:
    if not path.read_bytes().strip():
        raise DataError(f"{path}:1: empty file; expected one JSON object per line")
    for number, row in iter_json_lines(path):
        where = f"{path}:{number}"
        yield where, _key_getter(row, where)


# ---------------------------------------------------------------------------------------------------------------


def _example(task: Task, spec: DataSpec, get, where: str, position: int, labelled: bool) -> dict:
    example: dict = {"text_a": None, "text_b": None, **{name: None for name in task.fields}}
    for name, column in spec.columns.items():
        if name in ("label", "idx"):
            continue
        value = get(column, name)
        if not isinstance(value, str):
            raise DataError(f"{where}: {name} ('{column}') is {json.dumps(value)}; expected a string")
        example[name] = value
    example["label"] = _label(task, get(spec.columns["label"], "label"), spec.columns["label"], where) \
        if labelled else None
    if "idx" in spec.columns:
        idx = get(spec.columns["idx"], "idx")
        example["idx"] = int(idx) if isinstance(idx, str) and idx.lstrip("-").isdigit() else idx
    elif getattr(get, "json_key", None) is not None:
        key = get.json_key
        example["idx"] = int(key) if str(key).isdigit() else key
    else:
        example["idx"] = position
    return example


def _label(task: Task, raw, column, where: str):
    if task.regression is not None:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label ('{column}') {json.dumps(raw)} is not a number; expected a score in "
                            f"[{task.regression.lb:g}, {task.regression.ub:g}]") from None
        if not task.regression.lb <= value <= task.regression.ub:
            raise DataError(f"{where}: label ('{column}') {value:g} is outside [{task.regression.lb:g}, "
                            f"{task.regression.ub:g}]")
        return value
    try:
        label = canonical_label(raw)
    except ValueError:
        label = None
    if label not in task.labels:
        raise DataError(f"{where}: unknown label {json.dumps(raw)} in '{column}'; expected one of "
                        f"{', '.join(task.labels)}")
    return label
