"""The release assessment's stress tests: each perturbation changes what it says and nothing
else, the worst case is found, and pooled calibration sums give the union's ECE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.learning.encoding import CategoricalFeature, FeatureSpec, NumericFeature
from sandbox.learning.metrics import calibration_bins, ece_from_bins, expected_calibration_error
from sandbox.learning.models import build_model
from sandbox.learning.robustness import (
    RobustnessSettings,
    add_noise,
    drop_feature,
    feature_blocks,
    shift_category,
    stress_tests,
)
from sandbox.learning.train import evaluate

ENCODING = FeatureSpec(
    target="y",
    numeric=(NumericFeature(name="age"), NumericFeature(name="hours")),
    categorical=(
        CategoricalFeature(name="sector", vocabulary=("private", "public", "self")),
        CategoricalFeature(name="sex", vocabulary=("f", "m")),
    ),
)


def rows(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encoded rows where the label follows ``hours`` and, weakly, the public sector."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "hours": rng.normal(0, 1, n),
            "sector": rng.choice(["private", "public", "self"], n, p=[0.7, 0.2, 0.1]),
            "sex": rng.choice(["f", "m"], n),
        }
    )
    frame["y"] = (frame["hours"] + rng.normal(0, 0.5, n) > 0.8).astype(int)
    return ENCODING.encode(frame)


def model_on(column: int, weight: float = 4.0) -> torch.nn.Module:
    """A logistic model that looks at one encoded column only."""
    model = build_model("logreg", ENCODING.input_dim)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, column] = weight
        model[0].bias.fill_(-2.0)
    return model


def test_blocks_cover_the_encoding_in_order() -> None:
    blocks = feature_blocks(ENCODING)
    assert [name for name, _ in blocks] == ["age", "hours", "sector", "sex"]
    assert [(b.start, b.stop) for _, b in blocks] == [(0, 1), (1, 2), (2, 5), (5, 7)]
    assert blocks[-1][1].stop == ENCODING.input_dim


def test_noise_touches_only_numeric_columns_and_is_seeded() -> None:
    x, _ = rows()
    noisy = add_noise(x, 2, 0.5, seed=3)
    assert np.array_equal(noisy[:, 2:], x[:, 2:])
    assert not np.array_equal(noisy[:, :2], x[:, :2])
    assert abs(float(np.std(noisy[:, :2] - x[:, :2])) - 0.5) < 0.05
    assert np.array_equal(noisy, add_noise(x, 2, 0.5, seed=3))
    assert not np.array_equal(noisy, add_noise(x, 2, 0.5, seed=4))


def test_a_missing_feature_is_its_mean_or_an_unknown_category() -> None:
    x, _ = rows()
    blocks = dict(feature_blocks(ENCODING))
    numeric = drop_feature(x, blocks["hours"])
    assert np.all(numeric[:, 1] == 0.0)  # the standardised mean
    assert np.array_equal(np.delete(numeric, 1, axis=1), np.delete(x, 1, axis=1))
    categorical = drop_feature(x, blocks["sector"])
    assert np.all(categorical[:, 2:5] == 0.0)  # as a value outside the vocabulary encodes
    assert np.array_equal(categorical[:, [0, 1, 5, 6]], x[:, [0, 1, 5, 6]])


def test_a_category_shift_resamples_to_the_share_asked() -> None:
    x, y = rows()
    public = 3  # the encoded column of sector=public
    before = float(x[:, public].mean())
    shifted = shift_category(x, y, public, 0.6, seed=1)
    assert shifted is not None
    xs, ys = shifted
    assert len(xs) == len(x) and len(ys) == len(y)
    assert before < 0.3 and int(xs[:, public].sum()) == round(0.6 * len(x))
    # Resampled rows, not made-up ones.
    originals = {row.tobytes() for row in x}
    assert all(row.tobytes() in originals for row in xs)
    assert shift_category(x[x[:, public] == 0], y[x[:, public] == 0], public, 0.6, 1) is None


def test_the_worst_missing_feature_is_the_one_the_model_uses() -> None:
    x, y = rows()
    model = model_on(1)  # "hours" only
    outcomes = stress_tests(model, x, y, ENCODING, 0.3, RobustnessSettings(seed=0))
    clean = evaluate(model, x, y, 0.3)
    assert outcomes["clean"].stats == clean
    assert clean.auc is not None and clean.auc > 0.85
    assert outcomes["missing"].detail == 1
    assert outcomes["missing"].stats.auc == 0.5  # every score equal without its only input
    assert outcomes["noise"].stats.auc < clean.auc
    assert set(outcomes) == {"clean", "noise", "missing", "shift"}


def test_the_shift_finds_the_category_that_hurts() -> None:
    x, y = rows(2000)
    # The model scores the public sector high whatever the label: over-representing the
    # public sector must hurt more than over-representing self-employment.
    model = model_on(1)
    with torch.no_grad():
        model[0].weight[0, 3] = 6.0
    outcomes = stress_tests(
        model, x, y, ENCODING, 0.3, RobustnessSettings(shift_column="sector", shift_share=0.6)
    )
    shift = outcomes["shift"]
    assert shift.detail == 1  # "public"
    assert shift.stats.auc is not None and shift.stats.auc < outcomes["clean"].stats.auc
    # Without a named column, the first categorical column with two or more categories.
    default = stress_tests(model, x, y, ENCODING, 0.3, RobustnessSettings(shift_share=0.6))
    assert default["shift"].detail == 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=1, max_size=60),
    st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=1, max_size=60),
)
def test_summed_calibration_bins_give_the_union_ece(
    a: list[tuple[bool, float]], b: list[tuple[bool, float]]
) -> None:
    ya, sa = np.array([p[0] for p in a], float), np.array([p[1] for p in a])
    yb, sb = np.array([p[0] for p in b], float), np.array([p[1] for p in b])
    summed = [
        u + v for u, v in zip(calibration_bins(ya, sa), calibration_bins(yb, sb), strict=True)
    ]
    union = expected_calibration_error(np.concatenate([ya, yb]), np.concatenate([sa, sb]))
    assert abs(ece_from_bins(*summed) - union) < 1e-12  # type: ignore[operator]
