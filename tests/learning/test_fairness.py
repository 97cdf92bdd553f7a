"""Outcomes by group: the node's counts summed over companies give the hand-computed rates,
gaps and binned AUC of all rows together."""

from __future__ import annotations

import numpy as np
import pytest

from sandbox.learning.encoding import CategoricalFeature, FeatureSpec, NumericFeature
from sandbox.learning.fairness import fairness_table, group_counts
from sandbox.learning.metrics import binned_auc, roc_auc
from sandbox.protocol.messages import ASSESS_METRIC

ENCODING = FeatureSpec(
    target="y",
    numeric=(NumericFeature(name="age"),),
    categorical=(
        CategoricalFeature(name="sector", vocabulary=("private", "public")),
        CategoricalFeature(name="sex", vocabulary=("Female", "Male")),
    ),
)


def rows(sex: list[int], y: list[int], score: list[float]) -> tuple[np.ndarray, ...]:
    """Encoded rows: age 0, sector private, sex one-hot at columns 3 and 4."""
    x = np.zeros((len(sex), 5), dtype=np.float32)
    x[:, 1] = 1.0
    x[np.arange(len(sex)), 3 + np.asarray(sex)] = 1.0
    return x, np.asarray(y, dtype=np.float32), np.asarray(score)


def test_the_counts_follow_the_hand_computed_rates() -> None:
    # Company one: women (0) y 1,1,0,0 scored .9,.3,.6,.1; men (1) y 1,0 scored .8,.2.
    one = rows([0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 1, 0], [0.9, 0.3, 0.6, 0.1, 0.8, 0.2])
    # Company two: men y 1,1,0,0 scored .7,.6,.4,.1.
    two = rows([1, 1, 1, 1], [1, 1, 0, 0], [0.7, 0.6, 0.4, 0.1])
    replies = {
        c: group_counts(*part, ENCODING, ("sex",), 0.5) for c, part in (("a", one), ("b", two))
    }
    for metrics in replies.values():
        assert all(ASSESS_METRIC.match(k) for k in metrics), sorted(metrics)
        assert not any(k.startswith("group/0/") for k in metrics)  # sector is not protected
    table = fairness_table(replies, ENCODING, min_positives=1, min_negatives=1)
    groups = {g["group"]: g for g in table["attributes"]["sex"]["groups"]}
    women, men = groups["Female"], groups["Male"]
    assert (women["rows"], women["positives"], men["rows"], men["positives"]) == (4, 2, 6, 3)
    assert women["tpr"] == pytest.approx(1 / 2) and men["tpr"] == pytest.approx(3 / 3)
    assert women["fpr"] == pytest.approx(1 / 2) and men["fpr"] == pytest.approx(0 / 3)
    assert women["positive_rate"] == pytest.approx(2 / 4)
    assert men["positive_rate"] == pytest.approx(3 / 6)
    assert table["tpr_gap"] == pytest.approx(0.5) and table["fpr_gap"] == pytest.approx(0.5)
    assert table["parity_difference"] == pytest.approx(0.0)
    # With scores in distinct bins the binned AUC is the exact AUC of the pooled rows.
    y_men = np.r_[one[1][4:], two[1]]
    score_men = np.r_[one[2][4:], two[2]]
    assert men["auc"] == pytest.approx(roc_auc(y_men, score_men))


def test_a_group_too_small_to_judge_is_listed_not_compared() -> None:
    part = rows([0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0], [0.9, 0.1, 0.9, 0.2, 0.6, 0.1])
    table = fairness_table({"a": group_counts(*part, ENCODING, ("sex",), 0.5)}, ENCODING, 2, 2)
    groups = {g["group"]: g for g in table["attributes"]["sex"]["groups"]}
    assert not groups["Female"]["judged"] and groups["Male"]["judged"]
    assert table["tpr_gap"] is None  # one judged group: nothing to compare


def test_binned_auc_counts_ties_within_a_bin_as_half() -> None:
    assert binned_auc(np.array([0, 1.0]), np.array([1.0, 0])) == 1.0
    assert binned_auc(np.array([1.0, 0]), np.array([1.0, 0])) == 0.5
    assert binned_auc(np.array([0.0, 0]), np.array([1.0, 0])) is None
