"""File I/O shared by every reader and writer.

Writes are atomic (a temporary file in the same directory, fsync, then rename): a run killed at any moment leaves
either the old file or the new one, never a truncated file. ``iter_json_lines`` is the one JSON Lines scanner,
reporting problems as ``file:line: what is wrong``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DataError


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad bytes, bad JSON or a non-object raise DataError.

    A UTF-8 byte-order mark before the first line is skipped."""
    path = Path(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None
            if number == 1 and text.startswith("\ufeff"):  # a byte-order mark some editors write
                text = text[1:]
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: malformed JSON ({err.msg} at column {err.colno})") from None
            except RecursionError:
                raise DataError(f"{path}:{number}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed ``atomic_write_*`` left in ``folder`` (not recursive).

    Call it only where no other process is writing into ``folder`` (a run's rank 0 before it starts)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file() and p.name.count(".") >= 3]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync (a killed run loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def safetensors_damage(path: str | os.PathLike) -> str | None:
    """Why a safetensors file cannot load, from its header alone, or None: no readable header, or fewer bytes
    than the header's tensors need (a copy or a save cut short)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            header_length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_length)) if 8 + header_length <= size else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        return f"no readable safetensors header ({size} bytes)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)),
              default=0)
    if 8 + header_length + end > size:
        return f"cut short ({size} of {8 + header_length + end} bytes)"
    return None


def refuse_finished(finished: str | os.PathLike, option: str, what: str, overwrite: bool) -> None:
    """The never-overwrite rule of the writing commands: ``finished`` (a file that exists only once a command's
    output is complete) refuses the output ``option`` unless ``overwrite``, before any model loads."""
    from .errors import ConfigError

    if not overwrite and Path(finished).exists():
        raise ConfigError(f"{option}: {finished} holds {what}; pass --overwrite to replace it or choose another "
                          f"{option}")
