"""What drives a model: permutation importance finds the feature the labels depend on; a
logistic regression's standardised weights are read off its weights."""

from __future__ import annotations

import numpy as np

from sandbox.learning.encoding import CategoricalFeature, FeatureSpec, NumericFeature
from sandbox.learning.explanation import (
    attributions,
    permutation_importance,
    pooled_importance,
    standardised_coefficients,
)
from sandbox.learning.models import build_model, get_weights, set_weights

ENCODING = FeatureSpec(
    target="y",
    numeric=(NumericFeature(name="signal"), NumericFeature(name="noise")),
    categorical=(CategoricalFeature(name="sex", vocabulary=("Female", "Male")),),
)


def test_the_feature_the_labels_depend_on_matters_most() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((400, 4), dtype=np.float32)
    x[:, 0] = rng.normal(size=400)
    x[:, 1] = rng.normal(size=400)
    x[np.arange(400), 2 + rng.integers(0, 2, 400)] = 1.0
    y = (x[:, 0] > 0).astype(np.float32)
    model = build_model("logreg", 4)
    set_weights(model, {"0.weight": np.array([[4.0, 0.0, 0.2, -0.2]], dtype=np.float32),
                        "0.bias": np.zeros(1, dtype=np.float32)})  # fmt: skip
    drops = permutation_importance(model, x, y, ENCODING, seed=1)
    assert drops is not None and len(drops) == 3
    assert drops[0] > 0.3 and abs(drops[1]) < 1e-9 and abs(drops[2]) < 0.05
    coefficients = standardised_coefficients(get_weights(model), ENCODING, "logreg")
    assert coefficients is not None
    assert coefficients["signal"]["weight"] == 4.0
    assert abs(coefficients["sex"]["weight"] - 0.4) < 1e-6
    assert coefficients["sex"]["raises_odds_most"] == "Female"
    assert standardised_coefficients(get_weights(model), ENCODING, "mlp") is None
    named = dict(zip(("signal", "noise", "sex"), drops, strict=True))
    rows = attributions(named, coefficients, ("sex",))
    assert rows[0]["feature"] == "signal" and [r["protected"] for r in rows].count(True) == 1


def test_one_class_only_gives_no_importance() -> None:
    x = np.zeros((10, 4), dtype=np.float32)
    assert permutation_importance(build_model("mlp", 4), x, np.ones(10), ENCODING) is None


def test_the_companies_importances_are_weighted_by_their_test_rows() -> None:
    pooled = pooled_importance(
        {"a": [0.1, 0.0], "b": [0.3, 0.2], "short": [0.5]}, {"a": 100, "b": 300, "short": 50},
        ["x", "z"],
    )  # fmt: skip
    assert pooled == {"x": (0.1 * 100 + 0.3 * 300) / 400, "z": 0.2 * 300 / 400}
