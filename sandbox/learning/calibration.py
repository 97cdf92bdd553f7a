"""Federated calibration: Platt scaling fitted from histograms the companies send, and the
calibration error it leaves, measured on rows it was not fitted on.

A model trained under differential privacy ranks well but is often poorly calibrated (its
scores are not the rates they claim). Platt scaling maps the model's logit ``z`` to
``sigmoid(a * z + b)``: monotone, so the AUC and every ranking stay as they are. The two
numbers are fitted without pooling a row:

- each company splits its test rows into two seeded halves and sends, per half and per class,
  a histogram of the model's logits (fixed bins; counts add up across companies);
- the coordinator fits ``a`` and ``b`` on the summed histograms of one half (a weighted
  logistic regression on the bins' centres, by Newton's method) and measures the expected
  calibration error of the calibrated scores on the other half, then the other way round
  (cross-fitting): the error after calibration is measured on rows the map never saw;
- the map released with the model is fitted on both halves.

The histograms are counts over test rows, like the assessment's calibration bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sandbox.learning.metrics import CALIBRATION_BINS

LOGIT_BINS = 384
LOGIT_RANGE = 24.0
FOLDS = 2
CLASSES = ("pos", "neg")
_EDGES = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, LOGIT_BINS + 1)
CENTRES = (_EDGES[:-1] + _EDGES[1:]) / 2.0


def _logits(score: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(score, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1.0 - p))


def logit_histograms(y: np.ndarray, score: np.ndarray, seed: int) -> dict[str, float]:
    """``calib/<fold>/<pos|neg>/<bin>``: per seeded half of the rows and per class, how many
    rows have their logit in each bin (logits beyond the range fall in the end bins)."""
    labels = np.asarray(y).astype(bool)
    bins = np.clip(np.digitize(_logits(score), _EDGES[1:-1]), 0, LOGIT_BINS - 1)
    fold = np.random.default_rng(seed).permutation(len(labels)) % FOLDS
    out: dict[str, float] = {}
    for f in range(FOLDS):
        for kind, member in (("pos", labels), ("neg", ~labels)):
            counts = np.bincount(bins[(fold == f) & member], minlength=LOGIT_BINS)
            for b, count in enumerate(counts):
                out[f"calib/{f}/{kind}/{b}"] = float(count)
    return out


def summed_histograms(replies: Mapping[str, Mapping[str, float]]) -> np.ndarray | None:
    """The companies' histograms added up: shape (folds, 2 classes, bins); None when no
    company sent a complete set."""
    total = np.zeros((FOLDS, len(CLASSES), LOGIT_BINS))
    complete = 0
    for metrics in replies.values():
        keys = [
            f"calib/{f}/{kind}/{b}"
            for f in range(FOLDS)
            for kind in CLASSES
            for b in range(LOGIT_BINS)
        ]
        if not all(k in metrics for k in keys):
            continue
        total += np.array([metrics[k] for k in keys]).reshape(total.shape)
        complete += 1
    return total if complete else None


def fit_platt(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float] | None:
    """``a`` and ``b`` maximising the likelihood of the binned labels (Platt's targets, which
    shrink 0 and 1 towards the middle by the class counts, keep it finite under separation);
    None with one class only."""
    n_pos, n_neg = float(positives.sum()), float(negatives.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    t_pos, t_neg = (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)
    z = np.concatenate([CENTRES, CENTRES])
    target = np.concatenate([np.full(LOGIT_BINS, t_pos), np.full(LOGIT_BINS, t_neg)])
    weight = np.concatenate([positives, negatives]).astype(np.float64)

    def loss(a: float, b: float) -> float:
        t = a * z + b
        # -log-likelihood with logaddexp for stability: log(1 + e^t) - target * t
        return float(np.sum(weight * (np.logaddexp(0.0, t) - target * t)))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(100):
        p = _sigmoid(a * z + b)
        gradient = np.array([np.sum(weight * (p - target) * z), np.sum(weight * (p - target))])
        w = weight * p * (1 - p)
        hessian = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]])
        step = np.linalg.solve(hessian + np.eye(2) * 1e-9, gradient)
        scale = 1.0
        while scale > 1e-6:  # damped Newton: halve the step until the loss falls
            trial = loss(a - scale * float(step[0]), b - scale * float(step[1]))
            if trial <= current:
                break
            scale /= 2.0
        a, b = a - scale * float(step[0]), b - scale * float(step[1])
        improvement, current = current - trial, trial
        if np.max(np.abs(scale * step)) < 1e-10 or improvement < 1e-12:
            break
    return a, b


def binned_ece(positives: np.ndarray, negatives: np.ndarray, a: float, b: float) -> float | None:
    """ECE over the usual 10 probability bins of the scores ``sigmoid(a * z + b)`` of the rows
    in each logit bin (each row taken at its bin's centre)."""
    rows = positives + negatives
    total = float(rows.sum())
    if total == 0:
        return None
    p = _sigmoid(a * CENTRES + b)
    bucket = np.clip((p * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
    error = 0.0
    for k in range(CALIBRATION_BINS):
        inside = bucket == k
        count = float(rows[inside].sum())
        if count:
            error += abs(float(positives[inside].sum()) - float((rows[inside] * p[inside]).sum()))
    return error / total


@dataclass(frozen=True)
class Calibration:
    """The calibration map released with the model, and the error before and after it, both
    measured on the halves the map was not fitted on."""

    method: str
    a: float
    b: float
    ece_before: float | None
    ece_after: float | None
    rows: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def federated_platt(histograms: np.ndarray) -> Calibration | None:
    """Cross-fitted Platt scaling from the summed histograms (see the module's docstring)."""
    held_out_errors: list[tuple[float, float, float]] = []
    for f in range(FOLDS):
        fitted = fit_platt(*histograms[1 - f])
        if fitted is None:
            return None
        positives, negatives = histograms[f]
        before = binned_ece(positives, negatives, 1.0, 0.0)
        after = binned_ece(positives, negatives, *fitted)
        if before is None or after is None:
            return None
        held_out_errors.append((float((positives + negatives).sum()), before, after))
    final = fit_platt(*histograms.sum(axis=0))
    if final is None:
        return None
    total = sum(n for n, _, _ in held_out_errors)
    return Calibration(
        method="Platt scaling, fitted from the companies' logit histograms (cross-fitted)",
        a=final[0],
        b=final[1],
        ece_before=sum(n * e for n, e, _ in held_out_errors) / total,
        ece_after=sum(n * e for n, _, e in held_out_errors) / total,
        rows=int(total),
    )


def ece_after_interval(
    histograms: np.ndarray, level: float = 0.95, replicates: int = 200, seed: int = 0
) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the cross-fitted error after calibration: each
    replicate redraws every half's rows from its summed histogram (a multinomial of the
    same size) and fits and measures again."""
    rng = np.random.default_rng(seed)
    shape = histograms.shape
    errors = []
    for _ in range(replicates):
        redrawn = np.empty(shape)
        for f in range(shape[0]):
            cells = histograms[f].ravel()
            total = int(cells.sum())
            if total == 0:
                return None
            redrawn[f] = rng.multinomial(total, cells / total).reshape(shape[1:])
        result = federated_platt(redrawn)
        if result is not None and result.ece_after is not None:
            errors.append(result.ece_after)
    if len(errors) < replicates // 2:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(errors, [tail, 100.0 - tail])
    return float(low), float(high)


def apply(score: np.ndarray, a: float, b: float) -> np.ndarray:
    """The calibrated scores of a model's raw scores."""
    return _sigmoid(a * _logits(score) + b)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, dtype=np.float64))))
