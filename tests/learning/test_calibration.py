"""Federated Platt scaling: a deliberately miscalibrated model's error falls once the map
fitted from the companies' summed histograms is applied, measured on held-out halves."""

from __future__ import annotations

import numpy as np
import pytest

from sandbox.learning.calibration import (
    LOGIT_BINS,
    apply,
    ece_after_interval,
    federated_platt,
    fit_platt,
    logit_histograms,
    summed_histograms,
)
from sandbox.learning.metrics import expected_calibration_error
from sandbox.protocol.messages import ASSESS_METRIC


def miscalibrated(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn at the true rate sigmoid(z); the model says sigmoid(3z + 1): overconfident
    and too high, while ranking the rows exactly as the truth does."""
    z = rng.normal(-1.0, 1.2, rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return y, 1 / (1 + np.exp(-(3 * z + 1)))


def test_the_error_falls_after_calibration_and_the_map_inverts_the_distortion() -> None:
    rng = np.random.default_rng(4)
    companies = {f"c{i}": miscalibrated(rng, 400) for i in range(5)}
    replies = {c: logit_histograms(y, s, seed=0) for c, (y, s) in companies.items()}
    assert all(ASSESS_METRIC.match(k) for k in replies["c0"])
    histograms = summed_histograms(replies)
    assert histograms is not None and histograms.sum() == 2000
    result = federated_platt(histograms)
    assert result is not None
    y = np.concatenate([y for y, _ in companies.values()])
    s = np.concatenate([s for _, s in companies.values()])
    exact_before = expected_calibration_error(y, s)
    assert exact_before is not None and exact_before > 0.1
    assert result.ece_before == pytest.approx(exact_before, abs=0.03)
    assert result.ece_after is not None and result.ece_after < 0.04 < result.ece_before
    # The true map is z = (logit - 1) / 3: a = 1/3, b = -1/3.
    assert result.a == pytest.approx(1 / 3, abs=0.05)
    assert result.b == pytest.approx(-1 / 3, abs=0.1)
    # Applied to fresh rows of the same kind, the error stays low.
    y_new, s_new = miscalibrated(np.random.default_rng(5), 4000)
    after = expected_calibration_error(y_new, apply(s_new, result.a, result.b))
    assert after is not None and after < 0.03


def test_a_well_calibrated_model_is_left_almost_as_it_is() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(np.float64)
    fitted = fit_platt(
        *summed_histograms({"a": logit_histograms(y, 1 / (1 + np.exp(-z)), 0)}).sum(axis=0)
    )  # type: ignore[union-attr]
    assert fitted is not None
    assert fitted[0] == pytest.approx(1.0, abs=0.1) and fitted[1] == pytest.approx(0.0, abs=0.1)


def test_one_class_or_no_complete_histogram_gives_no_map() -> None:
    assert fit_platt(np.zeros(LOGIT_BINS), np.ones(LOGIT_BINS)) is None
    partial = logit_histograms(np.array([1.0, 0.0]), np.array([0.9, 0.1]), 0)
    partial.pop("calib/0/pos/0")
    assert summed_histograms({"a": partial}) is None


def test_the_error_after_calibration_comes_with_a_bootstrap_interval() -> None:
    rng = np.random.default_rng(9)
    replies = {f"c{i}": logit_histograms(*miscalibrated(rng, 500), seed=0) for i in range(4)}
    histograms = summed_histograms(replies)
    assert histograms is not None
    result = federated_platt(histograms)
    bounds = ece_after_interval(histograms, replicates=100)
    assert result is not None and result.ece_after is not None and bounds is not None
    assert bounds[0] <= result.ece_after <= bounds[1] < 0.08
    assert bounds == ece_after_interval(histograms, replicates=100)  # seeded: repeatable
