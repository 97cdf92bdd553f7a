"""Confidence intervals for a company's AUC, and for the gap between two models' AUCs on the
same test rows, by DeLong's method (DeLong, DeLong & Clarke-Pearson 1988), computed with
midranks as Sun & Xu (2014) describe, in NumPy alone so that a company's node loads nothing
more per task.

The AUC's own interval is taken on the logit scale, the gap's on the plain one (a gap lies
near zero, where the two agree). A test split of about 125 rows with a dozen positives gives an AUC whose 95% interval is
some 0.15 wide: a release decision on the point estimate alone is mostly chance. The release
gate therefore decides on these bounds (``coordinator.assessment``, ``policies/release.cedar``).

The gap between two models scored on the same rows is paired: both AUCs move with the same
draw of rows, so the interval of their difference uses the covariance of their DeLong
components and is much narrower than two separate intervals would suggest.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from sandbox.learning.metrics import average_ranks, binned_auc

DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"a confidence level lies strictly between 0 and 1, not {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of each model (one row of ``scores`` per model): for
    each positive the share of negatives it outranks (V10), for each negative the share of
    positives that outrank it (V01); ties count one half. Their means are the AUC."""
    positives = np.flatnonzero(y)
    negatives = np.flatnonzero(~y)
    m, n = len(positives), len(negatives)
    v10 = np.empty((len(scores), m))
    v01 = np.empty((len(scores), n))
    for k, score in enumerate(scores):
        overall = average_ranks(score)
        within_positives = average_ranks(score[positives])
        within_negatives = average_ranks(score[negatives])
        v10[k] = (overall[positives] - within_positives) / n
        v01[k] = 1.0 - (overall[negatives] - within_negatives) / m
    return v10, v01


def _prepare(y: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    labels = np.asarray(y).astype(bool)
    matrix = np.vstack([np.asarray(s, dtype=np.float64).ravel() for s in scores])
    if matrix.shape[1] != len(labels):
        raise ValueError(f"{matrix.shape[1]} scores for {len(labels)} labels")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("scores must be finite")
    positives = int(labels.sum())
    # DeLong's variance needs two of each class (a sample variance per class).
    if positives < 2 or len(labels) - positives < 2:
        return None
    return labels, matrix


def _covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    per_positive = np.atleast_2d(np.cov(v10)) / v10.shape[1]
    per_negative = np.atleast_2d(np.cov(v01)) / v01.shape[1]
    return np.asarray(per_positive + per_negative, dtype=np.float64)


def auc_interval(y: np.ndarray, score: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval | None:
    """The AUC of ``score`` on labels ``y`` with its DeLong interval (clipped to [0, 1]);
    None when either class has fewer than two rows."""
    prepared = _prepare(y, score)
    if prepared is None:
        return None
    v10, v01 = _components(*prepared)
    estimate = float(v10.mean())
    se = float(np.sqrt(max(_covariance(v10, v01)[0, 0], 0.0)))
    return _auc_on_logit_scale(estimate, se, level)


def _auc_on_logit_scale(estimate: float, se: float, level: float) -> Interval:
    """An AUC's interval on the logit scale (delta method): it stays inside (0, 1) and keeps
    its coverage near nominal on small splits with a high AUC, where the plain one falls
    short; at 0 or 1, or with no spread, the plain one clipped."""
    if se == 0.0 or not 0.0 < estimate < 1.0:
        half = _z(level) * se
        return Interval(estimate, max(0.0, estimate - half), min(1.0, estimate + half), level)
    centre = float(np.log(estimate / (1.0 - estimate)))
    half = _z(level) * se / (estimate * (1.0 - estimate))
    return Interval(estimate, _expit(centre - half), _expit(centre + half), level)


def _expit(t: float) -> float:
    return float(1.0 / (1.0 + np.exp(-t)))


def auc_difference_interval(
    y: np.ndarray, first: np.ndarray, second: np.ndarray, level: float = DEFAULT_LEVEL
) -> Interval | None:
    """AUC of ``first`` minus AUC of ``second`` on the same rows, with the paired DeLong
    interval (clipped to [-1, 1]); None when either class has fewer than two rows."""
    prepared = _prepare(y, first, second)
    if prepared is None:
        return None
    v10, v01 = _components(*prepared)
    estimate = float(v10[0].mean() - v10[1].mean())
    cov = _covariance(v10, v01)
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    half = _z(level) * float(np.sqrt(max(variance, 0.0)))
    return Interval(estimate, max(-1.0, estimate - half), min(1.0, estimate + half), level)


def binned_auc_interval(
    positives: np.ndarray, negatives: np.ndarray, level: float = DEFAULT_LEVEL
) -> Interval | None:
    """The AUC of rows known only by their score bin (a histogram per class, bins in
    increasing score; ties within a bin count one half) with its DeLong interval: what the
    companies' summed histograms give for all their test rows together, no row pooled. None
    when either class has fewer than two rows."""
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    m, n = float(pos.sum()), float(neg.sum())
    if m < 2 or n < 2:
        return None
    below = np.concatenate(([0.0], np.cumsum(neg)[:-1]))
    above = m - np.cumsum(pos)
    v10 = (below + 0.5 * neg) / n  # per bin: the share of negatives a positive there outranks
    v01 = (above + 0.5 * pos) / m  # per bin: the share of positives that outrank a negative
    estimate = binned_auc(pos, neg)
    assert estimate is not None  # both classes hold rows
    var10 = float((pos * (v10 - estimate) ** 2).sum() / (m - 1))
    var01 = float((neg * (v01 - estimate) ** 2).sum() / (n - 1))
    return _auc_on_logit_scale(estimate, float(np.sqrt(var10 / m + var01 / n)), level)
