"""Metrics on a company's own test split. AUC is undefined (None) when one class is absent."""

from __future__ import annotations

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
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
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


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


def expected_calibration_error(y: np.ndarray, score: np.ndarray, bins: int = 10) -> float | None:
    """ECE over equal-width probability bins, weighted by bin size."""
    if len(y) == 0:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(float(y[mask].mean()) - float(score[mask].mean()))
    return float(total)


def mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
