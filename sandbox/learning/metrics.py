"""Metrics on a company's own test split. AUC is undefined (None) when one class is absent."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic); None with one class only.

    Written with NumPy alone so that a company's node does not load scikit-learn per task.
    """
    y = np.asarray(y).astype(bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def binned_auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """AUC from score histograms of each class (bins in increasing score; ties within a bin
    count one half); None with one class only."""
    m, n = float(positives.sum()), float(negatives.sum())
    if m == 0 or n == 0:
        return None
    below = np.concatenate(([0.0], np.cumsum(negatives)[:-1]))
    return float((positives * (below + 0.5 * negatives)).sum() / (m * n))


def balanced_accuracy(y: np.ndarray, score: np.ndarray, threshold: float) -> float | None:
    """Mean of the true-positive and true-negative rates at ``threshold``; undefined (None)
    when one class is absent, like the AUC."""
    y = y.astype(bool)
    if y.all() or not y.any():
        return None
    pred = score >= threshold
    tpr = (pred & y).sum() / y.sum()
    tnr = (~pred & ~y).sum() / (~y).sum()
    return float((tpr + tnr) / 2)


CALIBRATION_BINS = 10


def calibration_bins(
    y: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin: row count, sum of scores, sum of labels.

    These sums add up across companies, so the calibration error of the union of several
    companies' test splits follows exactly from what each company reports.
    """
    score = np.asarray(score, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    score_sums = np.bincount(index, weights=score, minlength=bins)
    label_sums = np.bincount(index, weights=np.asarray(y, dtype=np.float64), minlength=bins)
    return counts, score_sums, label_sums


def ece_from_bins(
    counts: np.ndarray, score_sums: np.ndarray, label_sums: np.ndarray
) -> float | None:
    """ECE from per-bin sums: sum over bins of |mean label - mean score| weighted by size."""
    total = float(np.sum(counts))
    if total <= 0:
        return None
    filled = counts > 0
    gaps = np.abs(label_sums[filled] - score_sums[filled]) / counts[filled]
    return float(np.sum(counts[filled] / total * gaps))


def expected_calibration_error(
    y: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS
) -> float | None:
    """ECE over equal-width probability bins, weighted by bin size."""
    if len(y) == 0:
        return None
    return ece_from_bins(*calibration_bins(y, score, bins))


def mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
