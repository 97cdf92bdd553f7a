"""DeLong intervals: exact on hand-checked cases, near-nominal coverage on scores whose AUC is
known (binormal: negatives N(0, 1), positives N(d, 1), AUC = Phi(d / sqrt 2))."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from sandbox.learning.metrics import roc_auc
from sandbox.learning.uncertainty import (
    auc_difference_interval,
    auc_interval,
    binned_auc_interval,
)


def _binormal(rng: np.random.Generator, positives: int, negatives: int, d: float):
    y = np.r_[np.ones(positives), np.zeros(negatives)]
    return y, np.r_[rng.normal(d, 1.0, positives), rng.normal(0.0, 1.0, negatives)]


def _true_auc(d: float) -> float:
    return NormalDist().cdf(d / np.sqrt(2.0))


def test_the_estimate_is_the_auc_and_the_interval_holds_it() -> None:
    rng = np.random.default_rng(0)
    y, score = _binormal(rng, 30, 90, 1.2)
    interval = auc_interval(y, score)
    assert interval is not None
    assert interval.estimate == pytest.approx(roc_auc(y, score))
    assert interval.low < interval.estimate < interval.high


def test_delong_variance_matches_a_hand_computed_case() -> None:
    # positives 0.9, 0.6; negatives 0.7, 0.1, 0.6 (one tie). V10 = (1, (0 + 1 + 1/2) / 3);
    # V01 = (1/2, 1, 3/4); AUC = 3/4; var = var(V10)/2 + var(V01)/3; the interval is taken on
    # the logit scale and mapped back.
    y = np.array([1, 1, 0, 0, 0])
    score = np.array([0.9, 0.6, 0.7, 0.1, 0.6])
    interval = auc_interval(y, score, level=0.95)
    assert interval is not None
    v10, v01 = np.array([1.0, 0.5]), np.array([0.5, 1.0, 0.75])
    se = np.sqrt(np.var(v10, ddof=1) / 2 + np.var(v01, ddof=1) / 3)
    half = 1.959964 * se / (0.75 * 0.25)
    expit = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    assert interval.estimate == pytest.approx(0.75)
    assert interval.low == pytest.approx(expit(np.log(3) - half), abs=1e-6)
    assert interval.high == pytest.approx(expit(np.log(3) + half), abs=1e-6)


@pytest.mark.parametrize(
    ("positives", "negatives", "d", "least"),
    # DeLong runs a little below nominal on a split of 15 positives with an AUC of 0.86 (about
    # 0.93 on the logit scale; the plain interval gives 0.87 there), nominal on larger ones.
    [(40, 160, 1.0, 0.935), (15, 110, 1.5, 0.91)],
)
def test_intervals_cover_the_true_auc_near_the_nominal_rate(
    positives: int, negatives: int, d: float, least: float
) -> None:
    rng = np.random.default_rng(7)
    truth, draws = _true_auc(d), 1500
    covered = 0
    for _ in range(draws):
        interval = auc_interval(*_binormal(rng, positives, negatives, d))
        assert interval is not None
        covered += interval.contains(truth)
    # 95% nominal; 1,500 draws give a standard error of 0.0056.
    assert least <= covered / draws <= 0.97


def test_the_paired_gap_interval_covers_the_true_difference() -> None:
    """Two models scoring the same rows: a strong score and a noisier copy of it."""
    rng = np.random.default_rng(11)
    positives, negatives, draws = 30, 120, 1000
    # first: N(1.4, 1) vs N(0, 1); second adds independent N(0, 1) noise: N(1.4, 2) vs N(0, 2).
    truth = _true_auc(1.4) - NormalDist().cdf(1.4 / 2.0)
    covered = narrower = 0
    for _ in range(draws):
        y, first = _binormal(rng, positives, negatives, 1.4)
        second = first + rng.normal(0.0, 1.0, len(y))
        gap = auc_difference_interval(y, first, second)
        one, two = auc_interval(y, first), auc_interval(y, second)
        assert gap is not None and one is not None and two is not None
        assert gap.estimate == pytest.approx(one.estimate - two.estimate)
        covered += gap.contains(truth)
        # pairing removes the shared variation: narrower than the two intervals' sum of widths
        narrower += (gap.high - gap.low) < (one.high - one.low) + (two.high - two.low)
    assert 0.92 <= covered / draws <= 0.975
    assert narrower == draws


def test_a_model_against_itself_has_a_zero_gap() -> None:
    y, score = _binormal(np.random.default_rng(3), 20, 80, 1.0)
    gap = auc_difference_interval(y, score, score)
    assert gap is not None
    assert (gap.estimate, gap.low, gap.high) == (0.0, 0.0, 0.0)


def test_too_few_of_a_class_gives_no_interval() -> None:
    y = np.array([1, 0, 0, 0])
    assert auc_interval(y, np.array([0.9, 0.1, 0.2, 0.3])) is None
    assert auc_difference_interval(y, np.ones(4), np.zeros(4)) is None


@pytest.mark.parametrize(
    ("score", "problem"),
    [(np.array([0.1, 0.2, np.nan, 0.4, 0.5]), "finite"), (np.array([0.1, 0.2]), "labels")],
)
def test_malformed_scores_are_refused(score: np.ndarray, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        auc_interval(np.array([1, 1, 0, 0, 0]), score)


def test_a_level_outside_zero_and_one_is_refused() -> None:
    y, score = _binormal(np.random.default_rng(1), 10, 10, 1.0)
    with pytest.raises(ValueError, match="level"):
        auc_interval(y, score, level=1.0)


def test_binned_rows_give_the_rows_own_interval_when_each_score_has_its_bin() -> None:
    """Scores that are bins themselves (ties included): the binned interval is DeLong's."""
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.3).astype(float)
    bins = np.clip(rng.normal(2.0 * y, 1.5).round().astype(int) + 6, 0, 15)
    positives = np.bincount(bins[y == 1], minlength=16).astype(float)
    negatives = np.bincount(bins[y == 0], minlength=16).astype(float)
    binned = binned_auc_interval(positives, negatives)
    exact = auc_interval(y, bins.astype(float))
    assert binned is not None and exact is not None
    assert binned.estimate == pytest.approx(exact.estimate)
    assert (binned.low, binned.high) == pytest.approx((exact.low, exact.high), abs=1e-9)
    assert binned_auc_interval(np.array([1.0, 0.0]), np.array([3.0, 4.0])) is None
