"""Task metrics in numpy: accuracy, Matthews correlation, binary F1, macro-F1, Pearson and Spearman.

These are the metrics of the LM-BFF / PCP few-shot tables (Gao et al., ACL 2021; Shi & Lipani, NeurIPS 2023): accuracy
for most tasks, MCC for CoLA, F1 of the positive class for MRPC and QQP, Pearson for STS-B, macro-F1 for the SSL
benchmarks; and of the DePT tables (Shi & Lipani, ICLR 2024): Pearson/Spearman for STS-B, accuracy and F1 for CB.

    mcc      = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))   (Gorodkin's multiclass form)
    f1       = 2 tp / (2 tp + fp + fn) for one positive class;  macro_f1 = mean of the per-class F1
    spearman = pearson(rank(x), rank(y)), tied values sharing their average rank

Classification labels are compared as strings (so ``1``, ``"1"`` and a canonical task label ``"1"`` agree; ``True``
reads as ``"True"``). Zero denominators give 0.0 for MCC and F1 (scikit-learn's convention) and NaN for Pearson and
Spearman on a constant input (SciPy's). scipy and scikit-learn are not dependencies; the tests compare with them
only where they happen to be installed.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..config.fields import did_you_mean
from ..errors import ConfigError


def _pair(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(references) == 0:
        raise ValueError("no predictions to score")
    return (np.asarray([str(p) for p in predictions], dtype=object),
            np.asarray([str(r) for r in references], dtype=object))


def _floats(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(references) < 2:
        raise ValueError("a correlation needs at least two predictions")
    return np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of predictions equal to their reference."""
    pred, ref = _pair(predictions, references)
    return float(np.mean(pred == ref))


def matthews_corrcoef(predictions: Sequence, references: Sequence) -> float:
    """Matthews correlation coefficient (binary or multiclass); 0.0 when a marginal is constant."""
    pred, ref = _pair(predictions, references)
    classes = sorted(set(pred.tolist()) | set(ref.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, ([index[r] for r in ref], [index[p] for p in pred]), 1.0)
    t_k = confusion.sum(axis=1)  # true counts per class
    p_k = confusion.sum(axis=0)  # predicted counts per class
    correct = np.trace(confusion)
    s = confusion.sum()
    cov_ytyp = correct * s - float(np.dot(t_k, p_k))
    cov_ypyp = s * s - float(np.dot(p_k, p_k))
    cov_ytyt = s * s - float(np.dot(t_k, t_k))
    if cov_ypyp == 0 or cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def _f1_of(pred: np.ndarray, ref: np.ndarray, positive: str) -> float:
    tp = float(np.sum((pred == positive) & (ref == positive)))
    fp = float(np.sum((pred == positive) & (ref != positive)))
    fn = float(np.sum((pred != positive) & (ref == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1(predictions: Sequence, references: Sequence, positive_label="1") -> float:
    """Binary F1 of ``positive_label`` (MRPC/QQP: the paraphrase / duplicate class "1")."""
    pred, ref = _pair(predictions, references)
    return _f1_of(pred, ref, str(positive_label))


def macro_f1(predictions: Sequence, references: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted mean of the per-class F1 over ``labels`` (default: every class seen in either input)."""
    pred, ref = _pair(predictions, references)
    classes = [str(c) for c in labels] if labels is not None else sorted(set(pred.tolist()) | set(ref.tolist()))
    return float(np.mean([_f1_of(pred, ref, c) for c in classes]))


def pearson(predictions: Sequence, references: Sequence) -> float:
    """Pearson correlation; NaN when either input is constant."""
    x, y = _floats(predictions, references)
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.dot(x, y) / denom, -1.0, 1.0))


def average_ranks(values: Sequence) -> np.ndarray:
    """1-based ranks, tied values getting the mean of the ranks they span (scipy.stats.rankdata 'average')."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(predictions: Sequence, references: Sequence) -> float:
    """Spearman rank correlation (Pearson of the average ranks); NaN when either input is constant."""
    x, y = _floats(predictions, references)
    return pearson(average_ranks(x), average_ranks(y))


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "mcc": matthews_corrcoef,
    "f1": f1,
    "macro_f1": macro_f1,
    "pearson": pearson,
    "spearman": spearman,
}
METRIC_NAMES = tuple(METRICS)
REGRESSION_METRICS = ("pearson", "spearman")


def check_metric_name(name: str) -> str:
    """Return ``name`` if it is a known metric; ConfigError with the nearest name otherwise."""
    if name in METRICS:
        return name
    raise ConfigError(f"unknown metric '{name}' (known: {', '.join(METRIC_NAMES)}){did_you_mean(name, METRIC_NAMES, 0.4)}")


def compute(metric_names: Sequence[str], predictions: Sequence, references: Sequence, *,
            positive_label="1", labels: Sequence | None = None) -> dict[str, float]:
    """``{name: value}`` for each metric name, in the order given.

    ``positive_label`` is the class whose F1 ``f1`` reports; ``labels`` fixes the classes ``macro_f1`` averages over.
    """
    out: dict[str, float] = {}
    for name in metric_names:
        check_metric_name(name)
        if name == "f1":
            out[name] = f1(predictions, references, positive_label=positive_label)
        elif name == "macro_f1":
            out[name] = macro_f1(predictions, references, labels=labels)
        else:
            out[name] = METRICS[name](predictions, references)
    return out


def task_metrics(task, predictions: Sequence, gold: Sequence) -> dict[str, float]:
    """The task's metrics (``task.metrics``, F1 of ``task.positive_label``) and the number of examples scored."""
    out = compute(task.metrics, predictions, gold, positive_label=getattr(task, "positive_label", None) or "1",
                  labels=task.labels)
    out["examples"] = len(gold)
    return out
