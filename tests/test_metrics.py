"""scoring/metrics.py: hand-computed values; scipy/scikit-learn comparisons only where they are installed."""

import math

import numpy as np
import pytest

from posttrain.errors import ConfigError
from posttrain.scoring.metrics import (
    METRIC_NAMES, accuracy, average_ranks, compute, f1, macro_f1, matthews_corrcoef, pearson, spearman,
)

REF = [1, 1, 1, 1, 0, 0]
PRED = [1, 1, 0, 0, 1, 0]


def test_names():
    assert METRIC_NAMES == ("accuracy", "mcc", "f1", "macro_f1", "pearson", "spearman")


def test_accuracy_compares_labels_as_strings():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(["1", "0"], [1, 0]) == 1.0  # canonical task labels are strings
    assert accuracy([True, False], ["True", "True"]) == 0.5


def test_mcc_binary_by_hand():
    # TP 2, FN 1, TN 2, FP 1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    assert matthews_corrcoef([1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0]) == pytest.approx(1 / 3)
    assert matthews_corrcoef([0, 1, 0], [0, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1], [0, 1, 0]) == pytest.approx(-1.0)
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # constant prediction: zero denominator


def test_mcc_multiclass_by_hand():
    # confusion rows=true [[1,1,0],[0,2,0],[1,0,1]]: c=4, s=6, t=[2,2,2], p=[2,3,1]
    # (4*6 - 12) / sqrt((36 - 14) * (36 - 12)) = 12 / sqrt(528)
    value = matthews_corrcoef([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2])
    assert value == pytest.approx(12 / math.sqrt(528))


def test_f1_positive_class_and_macro():
    assert f1(PRED, REF) == pytest.approx(4 / 7)  # class 1: tp 2, fp 1, fn 2
    assert f1(PRED, REF, positive_label=0) == pytest.approx(2 / 5)  # class 0: tp 1, fp 2, fn 1
    assert f1(["0", "0"], ["0", "0"], positive_label="1") == 0.0
    assert macro_f1(PRED, REF) == pytest.approx((4 / 7 + 2 / 5) / 2)
    # a class nobody predicted or labelled counts as F1 0 when listed explicitly
    assert macro_f1(PRED, REF, labels=[0, 1, 2]) == pytest.approx((4 / 7 + 2 / 5) / 3)


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([1, 2, 3], [10, 100, 1000]) == pytest.approx(1.0)
    assert list(average_ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert list(average_ranks([7, 7, 7])) == [2.0, 2.0, 2.0]
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_compute_and_errors():
    out = compute(["f1", "accuracy"], ["1", "1", "0", "0", "1", "0"], ["1", "1", "1", "1", "0", "0"],
                  positive_label="1")
    assert list(out) == ["f1", "accuracy"]
    assert out == {"f1": pytest.approx(4 / 7), "accuracy": pytest.approx(0.5)}
    assert compute(["pearson", "spearman"], [0.1, 0.4, 0.2], [1.0, 4.0, 2.0]) == {
        "pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
    with pytest.raises(ConfigError, match=r"unknown metric 'acuracy' .*did you mean 'accuracy'\?"):
        compute(["acuracy"], [1], [1])
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        accuracy([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        f1([], [])


def test_against_sklearn_if_installed():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for classes in (2, 3, 5):
        ref = rng.integers(0, classes, 200)
        pred = np.where(rng.random(200) < 0.6, ref, rng.integers(0, classes, 200))
        assert matthews_corrcoef(pred, ref) == pytest.approx(sk.matthews_corrcoef(ref, pred))
        assert macro_f1(pred, ref) == pytest.approx(sk.f1_score(ref, pred, average="macro"))
        assert f1(pred, ref, positive_label=1) == pytest.approx(
            sk.f1_score(ref, pred, labels=[1], average="macro"))


def test_against_scipy_if_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 300) / 5.0  # many ties, like STS-B scores
    y = x + rng.normal(0, 0.7, 300)
    assert pearson(y, x) == pytest.approx(stats.pearsonr(y, x)[0])
    assert spearman(np.round(y, 1), x) == pytest.approx(stats.spearmanr(np.round(y, 1), x)[0])
    assert list(average_ranks(x)) == pytest.approx(list(stats.rankdata(x)))
