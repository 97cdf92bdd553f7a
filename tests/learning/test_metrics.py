"""Metrics: the NumPy AUC equals scikit-learn's; undefined stays undefined."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from sandbox.learning.metrics import (
    balanced_accuracy,
    expected_calibration_error,
    mean_defined,
    roc_auc,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=2, max_size=200).filter(
        lambda pairs: len({p[0] for p in pairs}) == 2
    )
)
def test_auc_matches_scikit_learn_with_ties(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([p[0] for p in pairs])
    score = np.array([p[1] / 20 for p in pairs])
    assert (
        roc_auc(y, score) == np.float64(roc_auc_score(y, score)).item()
        or abs(
            roc_auc(y, score) - roc_auc_score(y, score)  # type: ignore[operator]
        )
        < 1e-12
    )


def test_one_class_is_undefined_not_a_number() -> None:
    assert roc_auc(np.zeros(5), np.linspace(0, 1, 5)) is None
    assert balanced_accuracy(np.ones(5), np.linspace(0, 1, 5), 0.5) is None
    assert mean_defined([None, 0.5, None, 0.7]) == 0.6
    assert mean_defined([None]) is None


def test_balanced_accuracy_matches_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.15
    score = rng.random(300)
    expected = balanced_accuracy_score(y, score >= 0.3)
    assert abs(balanced_accuracy(y, score, 0.3) - expected) < 1e-12  # type: ignore[operator]


def test_calibration_error() -> None:
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    assert abs(expected_calibration_error(y, np.full(4, 0.9)) - 0.4) < 1e-12  # type: ignore[operator]
