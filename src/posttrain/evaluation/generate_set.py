"""``posttrain generate-set``: answers of one model to a whole prompt set, as AlpacaEval ``model_outputs`` JSON.

The IM paper (Shi et al., "Instruction Tuning With Loss Over Instructions", NeurIPS 2024) compares IT and IM
models with AlpacaEval 1.0/2.0, which judge each model's greedy answers to the 805 AlpacaEval prompts, and measures
memorisation (Table 2) as BLEU-4 of greedy answers to the *training* prompts against the training targets
(``memorisation.py``). Both start from the file written here.

Prompt sets:

- by default the 805 AlpacaEval prompts (``alpaca_eval/alpaca_eval_text_davinci_003.json`` under the data root,
  ``$POSTTRAIN_DATA`` or ``../shared/data``): the ``instruction`` is the user turn, ``dataset`` is kept;
- any AlpacaEval-format JSON list (rows with ``instruction``; ``output`` not needed);
- an instruction-data file (messages / alpaca / prompt_completion, as ``posttrain train`` reads it): the prompt is
  the conversation up to its *last* assistant turn, so the model writes that turn; the row's ``instruction`` is
  the text of the last user message before it and ``dataset`` is the file's stem.

Generation runs in batches of prompts sorted by token length (less padding); the written file keeps the prompt
set's order. After each batch its rows are appended to ``OUT.partial.jsonl`` (fsynced), whose first line records
the prompt set's hash, the model and the settings: a rerun after a kill skips every row already there, and
refuses a sidecar written with other prompts, model or settings. The finished file is written atomically, the
sidecar deleted, and ``OUT.summary.json`` (``kind: generation``) holds n and the mean output length in
characters, whitespace words and tokens (the written answer re-encoded with the model's tokenizer). A finished
file whose summary shows the same prompts, model and settings is reused too: raising ``--limit`` only generates
the new rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, DataError
from ..io_utils import append_jsonl, atomic_write_text
from .alpaca_format import read_model_outputs, write_model_outputs, write_summary
from ..data.instruction import detect_and_normalise, read_rows_with_locations
from ..generation import generate_batch, render_prompts
from ..models.families import model_kind
from ..tasks.readers import default_data_root

DEFAULT_PROMPT_SET = Path("alpaca_eval") / "alpaca_eval_text_davinci_003.json"
# Settings that change what the model writes: a sidecar made with other values cannot be resumed.
# (--limit and --batch-size are not among them: greedy answers do not depend on them.)
RESUME_KEYS = ("prompts_sha256", "model", "dtype", "chat_template", "system", "max_new_tokens", "temperature",
               "top_p", "seed")
_DATA_KEYS = ("input", "messages", "conversations", "prompt", "completion", "text")


def default_prompt_set() -> Path:
    return default_data_root() / DEFAULT_PROMPT_SET


def sidecar_path(out: str | Path) -> Path:
    return Path(str(out) + ".partial.jsonl")


def summary_path(out: str | Path, suffix: str = "summary") -> Path:
    """``x/out.json`` -> ``x/out.<suffix>.json``."""
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    return out.with_name(f"{stem}.{suffix}.json")


def _is_alpaca_eval_file(path: Path) -> bool:
    """A JSON list of rows with ``instruction`` and no instruction-data field (``input``, ``messages``...) in any row.

    (An alpaca-format training file without ``input`` reads the same either way: prompt = instruction.)"""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        rows = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False  # load_examples reports the problem with its line number
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        return False
    return "instruction" in rows[0] and not any(key in row for row in rows for key in _DATA_KEYS)


def conversation_prompt(messages: list[dict], where: str) -> tuple[list[dict], str, str]:
    """(messages before the last assistant turn, last user message text, that assistant turn's text)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    users = [m["content"] for m in messages[:last] if m["role"] == "user"]
    if not users:
        raise DataError(f"{where}: no user message before the last assistant turn (nothing to prompt with)")
    return messages[:last], users[-1], messages[last]["content"]


def load_instruction_rows(path: str | Path) -> list[dict]:
    """Rows ``{"instruction", "dataset", "prompt", "reference", "where"}`` of an instruction-data file, in order.

    ``prompt`` is the conversation before the last assistant turn and ``reference`` that turn's text (the
    training target that ``bleu-train`` compares with; ``where`` locates the row, ``file:line`` or ``file: row N``)."""
    path = Path(path)
    raw, where = read_rows_with_locations(path)
    examples = detect_and_normalise(raw, path, "auto", where)  # = load_examples(path, "auto"), with locations
    rows = []
    for number, example in enumerate(examples):
        if "text" in example:
            raise DataError(f"{where[number]}: a plain 'text' row has no prompt and answer; expected messages, "
                            "instruction/output or prompt/completion rows")
        prompt, instruction, reference = conversation_prompt(example["messages"], where[number])
        rows.append({"instruction": instruction, "dataset": path.stem, "prompt": prompt, "reference": reference,
                     "where": where[number]})
    return rows


def load_prompt_set(path: str | Path | None = None) -> list[dict]:
    """Rows ``{"instruction", "dataset", "prompt"}`` of a prompt set (see the module docstring)."""
    path = Path(path) if path is not None else default_prompt_set()
    if not path.is_file():
        raise DataError(f"{path}: prompt set not found (expected an AlpacaEval JSON list or an instruction-data "
                        "file: .jsonl, .json, .csv or .parquet)")
    if _is_alpaca_eval_file(path):
        return [{"instruction": row["instruction"], "dataset": row.get("dataset") or "", "prompt": row["instruction"]}
                for row in read_model_outputs(path, need_output=False)]
    return [{key: row[key] for key in ("instruction", "dataset", "prompt")} for row in load_instruction_rows(path)]


def prompts_fingerprint(rows: list[dict]) -> str:
    """sha256 of the prompts (instruction and conversation of every row, in order)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["instruction"], row["prompt"]], sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def read_sidecar(path: Path, header: dict) -> dict[int, dict]:
    """Rows already generated, by index; checks the sidecar's header against this run's.

    A last line cut short by a kill is dropped (and the file rewritten without it, so appends stay line-aligned)."""
    if not path.is_file():
        return {}
    lines = path.read_bytes().split(b"\n")
    kept, done = [], {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number >= len(lines) - 1:  # the final line, unfinished when the run was killed
                atomic_write_text(path, "".join(line.decode("utf-8") + "\n" for line in kept))
                break
            raise DataError(f"{path}:{number}: malformed line in the resume file; delete it to start over") from None
        if number == 1:
            _check_header(path, record, header)
        elif not isinstance(record, dict) or not isinstance(record.get("index"), int):
            raise DataError(f"{path}:{number}: expected a generated row with an integer 'index'; delete the file "
                            "to start over")
        else:
            done[record["index"]] = record
        kept.append(raw)
    if not kept:  # killed while writing the header: nothing to resume
        path.unlink()
    return done


def resume_header(rows: list[dict], *, model_spec: str, dtype: str, chat_template: str | None, system: str | None,
                  max_new_tokens: int, temperature: float, top_p: float, seed: int) -> dict:
    """The settings a resume file must share (RESUME_KEYS)."""
    return {"prompts_sha256": prompts_fingerprint(rows), "model": model_spec, "dtype": dtype,
            "chat_template": chat_template, "system": system, "max_new_tokens": max_new_tokens,
            "temperature": temperature, "top_p": top_p, "seed": seed}


def precheck_resume(out: str | Path, partial_header: dict) -> None:
    """Refuse a resume file made with other settings before the model loads (the settings known before loading it:
    the chat template may come from the model and is checked by ``generate_set``)."""
    path = sidecar_path(out)
    if not path.is_file():
        return
    first = path.read_bytes().split(b"\n", 1)[0]
    try:
        record = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return  # killed while writing the header: generate_set starts over
    _check_header(path, record, partial_header)


def _check_header(path: Path, record, header: dict) -> None:
    theirs = record.get("header") if isinstance(record, dict) else None
    if not isinstance(theirs, dict):
        raise DataError(f"{path}:1: not a generate-set resume file (no header line); delete it or choose another --out")
    for key in (k for k in RESUME_KEYS if k in header):
        if theirs.get(key) != header[key]:
            what = "the prompt set differs" if key == "prompts_sha256" else \
                f"{key} was {theirs.get(key)!r}, now {header[key]!r}"
            raise ConfigError(f"{path}: resume file belongs to another run ({what}); delete it to start over, "
                              "or use the same settings")


def read_finished(out: Path, header: dict, rows: list[dict]) -> dict[int, dict]:
    """Rows of an earlier finished run with the same prompts, model and settings (its summary says so), by index:
    a run with a larger ``--limit`` only generates the new rows. Anything else is regenerated and overwritten."""
    try:
        summary = json.loads(summary_path(out).read_text(encoding="utf-8"))
        earlier = {**summary["settings"], "model": summary["model_spec"], "prompts_sha256": summary["prompts_sha256"]}
        finished = read_model_outputs(out)
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return {}
    if any(earlier.get(key) != header[key] for key in RESUME_KEYS):
        return {}
    return {index: {"index": index, "instruction": row["instruction"], "output": row["output"]}
            for index, row in enumerate(finished[: len(rows)]) if row["instruction"] == rows[index]["instruction"]}


def length_sorted_batches(lengths: dict[int, int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar prompt length, longest first (an out-of-memory batch shows up at once)."""
    order = sorted(lengths, key=lambda index: (-lengths[index], index))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate_set(model, tokenizer, rows: list[dict], out: str | Path, *, model_spec: str, generator: str | None = None,
                 chat_template: str = "tokenizer", system: str | None = None, max_new_tokens: int = 512,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 8,
                 dtype: str = "float32", limit: int | None = None, prompts_file: str | None = None,
                 progress: bool = True, on_batch: Callable[[list[int]], None] | None = None) -> dict:
    """Answer ``rows`` (from ``load_prompt_set``) and write ``out`` plus its summary; returns the summary.

    ``on_batch(indices)`` runs after each batch is saved to the sidecar (tests use it to simulate a kill)."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1 or max_new_tokens < 1:
        raise ConfigError(f"--batch-size and --max-new-tokens must be at least 1, got {batch_size} and "
                          f"{max_new_tokens}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    out, generator = Path(out), generator or model_spec
    if out.suffix != ".json":
        raise ConfigError(f"--out {out}: expected a .json file name (AlpacaEval model_outputs)")
    header = resume_header(rows, model_spec=model_spec, dtype=dtype, chat_template=chat_template, system=system,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    rows = rows[:limit] if limit else rows
    sidecar = sidecar_path(out)
    finished = read_finished(out, header, rows) if out.is_file() and not sidecar.is_file() else {}
    done = {index: row for index, row in read_sidecar(sidecar, header).items() if index < len(rows)}
    if not sidecar.is_file():  # the header, and the rows reused from a finished run, so a kill keeps them too
        lines = [{"header": {**header, "prompts_file": prompts_file, "n_prompts": len(rows)}}, *finished.values()]
        atomic_write_text(sidecar, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
        done.update(finished)

    texts = render_prompts(tokenizer, [row["prompt"] for row in rows], chat_template=chat_template, system=system,
                           kind=model_kind(model))
    lengths = {index: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for index, text in enumerate(texts)}
    bar = tqdm(total=len(rows), initial=len(done), unit="prompt", desc="generate-set", disable=not progress)
    try:
        # The batch plan covers every row, done or not, so that batch k of a resumed run is batch k of an
        # uninterrupted one, with the same seed: sampled answers come out the same too (same --batch-size/--limit).
        for number, planned in enumerate(length_sorted_batches(lengths, batch_size)):
            batch = [index for index in planned if index not in done]
            if not batch:
                continue
            torch.manual_seed(seed + number)
            answers = generate_batch(model, tokenizer, [texts[index] for index in batch],
                                     max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
            for index, answer in zip(batch, answers):
                record = {"index": index, "instruction": rows[index]["instruction"], "output": answer}
                append_jsonl(sidecar, record)
                done[index] = record
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch)
    finally:
        bar.close()

    outputs = [{"dataset": row["dataset"], "instruction": row["instruction"], "output": done[index]["output"],
                "generator": generator} for index, row in enumerate(rows)]
    write_model_outputs(out, outputs)
    os.unlink(sidecar)
    texts_out = [row["output"] for row in outputs]
    metrics = {
        "n": len(outputs),
        "avg_output_chars": sum(map(len, texts_out)) / len(outputs),
        "avg_output_words": sum(len(text.split()) for text in texts_out) / len(outputs),
        "avg_output_tokens": sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts_out)
        / len(outputs),
    }
    settings = {key: header[key] for key in RESUME_KEYS if key != "prompts_sha256" and key != "model"}
    return write_summary(summary_path(out), kind="generation", model=generator, metrics=metrics,
                         outputs=str(out), prompts=prompts_file, limit=limit, batch_size=batch_size,
                         model_spec=model_spec, prompts_sha256=header["prompts_sha256"], settings=settings)
