"""A task is a declaration: fields, labels, verbalizer, template, text-to-text form, metrics and where its files are.

The hard prompts are those of prompt-based fine-tuning in LM-BFF (Gao, Fisch, Chen, ACL 2021) as used by PCP (Shi &
Lipani, NeurIPS 2023; `template_mapping` / `map_of_mapping` in PowerfulPromptFT's src/processors.py). A template is a
string with ``{field}`` placeholders and one ``{mask}``:

    SST-2   "{text_a} It was {mask} ."            terrible / great
    MNLI    "{text_a} ? {mask} , {text_b}"        contradiction -> No, entailment -> Yes, neutral -> Maybe

Rendering is ``tasks/render.py``.

STS-B is a regression task with two label words (No, Yes): the soft target of a score y is (y - lb) / (ub - lb) with
lb = 0, ub = 5, and a prediction is lb + p(Yes) * (ub - lb). Its text-to-text target is the score rounded to the
nearest 0.2 ("3.2"), the T5 convention that ATTEMPT/DePT's ``round_stsb_target`` intends (its code,
``np.round((y * 5) / 5, 1)``, rounds to 0.1).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config.fields import build_dataclass, did_you_mean, help_field
from ..errors import ConfigError
from ..scoring.metrics import REGRESSION_METRICS, check_metric_name

MASK = "mask"
RESERVED = {MASK, "label", "idx"}
FORMATS = ("tsv", "csv", "json", "jsonl")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_f = help_field


def _req(help_text: str):
    return field(metadata={"help": help_text})


def canonical_label(value: Any) -> str:
    """The label as the task's label list spells it: ``True`` -> "True", ``0`` -> "0", strings unchanged."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"a label must be a string, integer or boolean, got {value!r}")


def suggest(name: str, options) -> str:
    return did_you_mean(name, options)


def placeholders(template: str) -> list[str]:
    """Names of the ``{...}`` placeholders, in order; ConfigError for a stray brace."""
    stray = _PLACEHOLDER.sub("", template)
    if "{" in stray or "}" in stray:
        raise ConfigError(f"{template!r}: unbalanced '{{' or '}}' (placeholders look like {{text_a}} or {{mask}})")
    return _PLACEHOLDER.findall(template)


@dataclass(kw_only=True)
class Regression:
    lb: float = _f(0.0, "Lowest score (STS-B: 0).")
    ub: float = _f(5.0, "Highest score (STS-B: 5).")

    def __post_init__(self):
        for key in ("lb", "ub"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}: expected a number, got {value!r}")
            setattr(self, key, float(value))
        if not self.lb < self.ub:
            raise ConfigError(f"lb: must be below ub ({self.ub:g}), got {self.lb:g}")


@dataclass(kw_only=True)
class DataSpec:
    dir: str = _req(
        "Folder holding the files. '{data_root}' stands for the data root ($POSTTRAIN_DATA or ../shared/data); "
        "a relative path is relative to the task's YAML file.")
    files: dict = _req(
        "Split name -> file path relative to dir, or a list of candidate paths (the first that exists is read). "
        "'{seed}' stands for the k-shot seed, e.g. '16-{seed}/train.tsv'.")
    format: str = _f("tsv", "File format: tsv (quotes are literal, as GLUE), csv (RFC-4180 quoting), json (an "
                     "object of rows keyed by id, or a list of rows) or jsonl (one row object per line).")
    header: bool = _f(True, "tsv/csv: the first line names the columns (a UTF-8 BOM is ignored).")
    columns: dict = _req(
        "Example field -> source column: a header name or JSON key, or a 0-based position (negative counts from the "
        "end; tsv/csv only). 'label' is required except in unlabeled splits; 'idx' is optional (default: the JSON "
        "key or 'idx', else the row's 0-based position).")
    seeds: list = _f([], "The k-shot seeds '{seed}' may take (LM-BFF: 13, 21, 42, 87, 100); empty = any.")
    unlabeled: list = _f([], "Splits whose rows carry no label (their examples get label None).")
    missing: str = _f("", "Extra hint shown when the files are not present (where to get them).")

    def __post_init__(self):
        def bad(key, msg):
            raise ConfigError(f"{key}: {msg}")

        if not isinstance(self.dir, str) or not self.dir:
            bad("dir", f"expected a folder path, got {self.dir!r}")
        if self.format not in FORMATS:
            bad("format", f"expected one of {', '.join(FORMATS)}, got {self.format!r}{suggest(self.format, FORMATS)}")
        if not isinstance(self.header, bool):
            bad("header", f"expected true or false, got {self.header!r}")
        if not isinstance(self.files, dict) or not self.files:
            bad("files", "expected a mapping of split name -> file path, e.g. {train: train.tsv}")
        files = {}
        for split, paths in self.files.items():
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
                bad(f"files.{split}", f"expected a file path or a list of paths, got {paths!r}")
            files[str(split)] = list(paths)
        self.files = files  # a copy: YAML anchors share one mapping between tasks
        if not isinstance(self.columns, dict) or not self.columns:
            bad("columns", "expected a mapping of field -> column, e.g. {text_a: sentence, label: label}")
        self.columns = dict(self.columns)
        self.seeds = list(self.seeds) if isinstance(self.seeds, list) else self.seeds
        for name, col in self.columns.items():
            if isinstance(col, bool) or not isinstance(col, (str, int)):
                bad(f"columns.{name}", f"expected a column name or position, got {col!r}")
            if isinstance(col, int) and self.format in ("json", "jsonl"):
                bad(f"columns.{name}", f"{self.format} rows are objects: give a key name, not position {col}")
            if isinstance(col, str) and self.format in ("tsv", "csv") and not self.header:
                bad(f"columns.{name}", f"the file has no header (header: false): give a 0-based position, not {col!r}")
        if not isinstance(self.seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                       for s in self.seeds):
            bad("seeds", f"expected a list of integers, got {self.seeds!r}")
        for split in self.unlabeled:
            if split not in self.files:
                bad("unlabeled", f"'{split}' is not a split of files ({', '.join(self.files)})")


@dataclass(kw_only=True)
class Task:
    name: str = _req("Task name, e.g. 'SST-2'; lookups ignore case and punctuation ('sst2').")
    aliases: list = _f([], "Other names that resolve to this task.")
    description: str = _f("", "One line about the task.")
    origin: str = _f("", "Where the template and verbalizer come from (paper/code), or that they are posttrain's own.")
    kind: str = _req("'single' (one text: text_a) or 'pair' (text_a and text_b).")
    fields: list = _f([], "Example fields the templates may use (default text_a, plus text_b for pairs); extra "
                      "fields such as 'word' (WiC) are allowed.")
    labels: list = _req("Label values in canonical order (the class index order of the verbalizer head).")
    verbalizer: dict = _req("Label -> label word, or a list of words (the first is the one rendered).")
    template: str = _req("Hard prompt with {field} placeholders and exactly one {mask}, "
                         "e.g. '{text_a} It was {mask} .'")
    text_to_text: str = _req("T5-style input with {field} placeholders, e.g. 'sentence: {text_a}'; the target is the "
                             "label word (regression: the score rounded to 0.2).")
    metrics: list = _req("Metric names, the first being the one to select checkpoints on (accuracy, mcc, f1, "
                         "macro_f1, pearson, spearman).")
    positive_label: Optional[str] = _f(None, "The class whose F1 'f1' reports (MRPC/QQP: '1').")
    regression: Optional[Regression] = _f(None, "Score bounds of a regression task (STS-B: lb 0, ub 5); its two "
                                          "labels are the low and high ends, soft target (y - lb) / (ub - lb).")
    max_length: Optional[int] = _f(None, "Max tokens (default 128 for single, 256 for pair tasks, as in PCP).")
    data: dict = _f({}, "Source name (kshot, pool, superglue, or your own) -> DataSpec of the files.")
    base_dir: Optional[str] = _f(None, "Folder relative data paths are resolved against (set by the YAML loader).")

    def __post_init__(self):
        def bad(key, msg):
            raise ConfigError(f"task '{self.name}': {key}: {msg}")

        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.aliases, list) or not all(isinstance(a, str) for a in self.aliases):
            bad("aliases", f"expected a list of names, got {self.aliases!r}")
        if self.kind not in ("single", "pair"):
            bad("kind", f"expected 'single' or 'pair', got {self.kind!r}")
        if not self.fields:
            self.fields = ["text_a"] if self.kind == "single" else ["text_a", "text_b"]
        if not isinstance(self.fields, list) or not all(isinstance(f, str) and _IDENT.match(f) for f in self.fields):
            bad("fields", f"expected a list of identifiers, got {self.fields!r}")
        if "text_a" not in self.fields:
            bad("fields", "must include text_a")
        if self.kind == "pair" and "text_b" not in self.fields:
            bad("fields", "a pair task must include text_b")
        if self.kind == "single" and "text_b" in self.fields:
            bad("fields", "a single-sentence task has no text_b (use kind: pair)")
        if RESERVED & set(self.fields):
            bad("fields", f"{', '.join(sorted(RESERVED & set(self.fields)))} is reserved")

        # labels and verbalizer
        if not isinstance(self.labels, list) or not self.labels:
            bad("labels", "expected a non-empty list of label values")
        try:
            self.labels = [canonical_label(v) for v in self.labels]
        except ValueError as err:
            bad("labels", str(err))
        if len(set(self.labels)) != len(self.labels):
            bad("labels", f"duplicate label in {self.labels}")
        if not isinstance(self.verbalizer, dict):
            bad("verbalizer", "expected a mapping of label -> word")
        verbalizer = {}
        for raw, words in self.verbalizer.items():
            try:
                label = canonical_label(raw)
            except ValueError as err:
                bad("verbalizer", str(err))
            if label not in self.labels:
                bad("verbalizer", f"'{label}' is not a label (labels: {', '.join(self.labels)})"
                    f"{suggest(label, self.labels)}")
            words = [words] if not isinstance(words, list) else words
            for word in words:
                if isinstance(word, bool):
                    bad(f"verbalizer.{label}", f"YAML read the word as a boolean ({str(word).lower()}): quote it, "
                        "e.g. 'No' or 'Yes'")
                if not isinstance(word, str) or not word.strip():
                    bad(f"verbalizer.{label}", f"expected a non-empty word, got {word!r}")
            if not words:
                bad(f"verbalizer.{label}", "expected at least one word")
            verbalizer[label] = list(words)
        for label in self.labels:
            if label not in verbalizer:
                bad("verbalizer", f"label '{label}' has no label word")
        owner = {}
        for label in self.labels:  # one scored word per label: two labels sharing it could never be told apart
            word = verbalizer[label][0].strip()
            if word in owner:
                bad("verbalizer", f"labels '{owner[word]}' and '{label}' have the same word {word!r}; each label "
                    "needs its own word")
            owner[word] = label
        self.verbalizer = verbalizer

        # templates
        for key in ("template", "text_to_text"):
            text = getattr(self, key)
            if not isinstance(text, str) or not text.strip():
                bad(key, f"expected a non-empty string, got {text!r}")
            try:
                names = placeholders(text)
            except ConfigError as err:
                bad(key, str(err))
            for name in names:
                if name != MASK and name not in self.fields:
                    options = self.fields + ([MASK] if key == "template" else [])
                    bad(key, f"placeholder {{{name}}} is not a field of the task (fields: "
                        f"{', '.join(self.fields)}){suggest(name, options)}")
            if key == "template" and names.count(MASK) != 1:
                bad(key, f"needs exactly one {{mask}} placeholder, found {names.count(MASK)}: {text!r}")
            if key == "text_to_text" and MASK in names:
                bad(key, "has no {mask}: the label word is the target, not part of the input")
            unused = [name for name in self.fields if name not in names]
            if unused:
                bad(key, f"does not use {{{unused[0]}}}: {text!r}")

        # metrics, regression
        if isinstance(self.metrics, str):
            self.metrics = [self.metrics]
        if not isinstance(self.metrics, list) or not self.metrics:
            bad("metrics", "expected a non-empty list of metric names")
        for name in self.metrics:
            try:
                check_metric_name(name)
            except ConfigError as err:
                bad("metrics", str(err))
        if isinstance(self.regression, dict):
            try:
                self.regression = _build(Regression, self.regression, "regression")
            except ConfigError as err:
                raise ConfigError(f"task '{self.name}': {err}") from None
        if self.regression is not None:
            if not isinstance(self.regression, Regression):
                bad("regression", f"expected a mapping {{lb: ..., ub: ...}}, got {self.regression!r}")
            if len(self.labels) != 2:
                bad("regression", "a regression task has exactly two labels (the low and the high end)")
            wrong = [m for m in self.metrics if m not in REGRESSION_METRICS]
            if wrong:
                bad("metrics", f"{', '.join(wrong)} does not apply to a regression task (use pearson, spearman)")
        elif any(m in REGRESSION_METRICS for m in self.metrics):
            bad("metrics", "pearson/spearman need a regression task (set regression: {lb: ..., ub: ...})")
        if self.positive_label is not None:
            try:
                self.positive_label = canonical_label(self.positive_label)
            except ValueError as err:
                bad("positive_label", str(err))
            if self.positive_label not in self.labels:
                bad("positive_label", f"'{self.positive_label}' is not a label ({', '.join(self.labels)})")
        if "f1" in self.metrics and self.positive_label is None:
            bad("positive_label", "metric f1 needs the positive class (e.g. positive_label: '1')")

        if self.max_length is None:
            self.max_length = 128 if self.kind == "single" else 256
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 8:
            bad("max_length", f"expected an integer >= 8, got {self.max_length!r}")

        # data sources
        if not isinstance(self.data, dict):
            bad("data", "expected a mapping of source name -> {dir, files, format, columns}")
        self.data = dict(self.data)
        allowed = set(self.fields) | {"label", "idx"}
        for source, spec in list(self.data.items()):
            if isinstance(spec, dict):
                try:
                    spec = _build(DataSpec, spec, f"data.{source}")
                except ConfigError as err:
                    raise ConfigError(f"task '{self.name}': {err}") from None
            if not isinstance(spec, DataSpec):
                bad(f"data.{source}", f"expected a mapping, got {spec!r}")
            for name in spec.columns:
                if name not in allowed:
                    bad(f"data.{source}.columns", f"'{name}' is not a field (fields: {', '.join(sorted(allowed))})"
                        f"{suggest(name, allowed)}")
            if "text_a" not in spec.columns:
                bad(f"data.{source}.columns", "needs text_a")
            if self.kind == "pair" and "text_b" not in spec.columns:
                bad(f"data.{source}.columns", "a pair task needs text_b")
            labelled = set(spec.files) - set(spec.unlabeled)
            if labelled and "label" not in spec.columns:
                bad(f"data.{source}.columns", "needs label (or list the splits under unlabeled)")
            self.data[source] = spec

    # ------------------------------------------------------------------------------------------------------------
    @property
    def is_regression(self) -> bool:
        return self.regression is not None

    def help(self) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(self)}


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, raw: dict, where: str):
    """``cls(**raw)`` with unknown keys and missing required keys as ConfigError (nearest key suggested)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")

    def reworded(source, prefix, err):  # a Task's messages already start with "task 'NAME'"
        return ConfigError(f"{source}: {err}" if cls is Task else f"{source}.{err}")

    return build_dataclass(cls, raw, where, typed=False, on_error=reworded)


def task_from_dict(raw: dict, where: str = "task") -> Task:
    """Build a Task from a YAML/JSON mapping; unknown keys give ConfigError naming the key and the nearest one."""
    return _build(Task, raw, where)
