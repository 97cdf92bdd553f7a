"""The job's encoding: federated statistics equal pooled ones; vocabularies from manifests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sandbox.data import census
from sandbox.data.manifest import ColumnSpec, DatasetManifest, TargetSpec
from sandbox.learning.encoding import FeatureSpec


def manifest(name: str, categories: tuple[str, ...], industry: str = "x") -> DatasetManifest:
    return DatasetManifest(
        name=name,
        industry=industry,
        target=TargetSpec(name="y"),
        features=(
            ColumnSpec(name="amount", kind="numeric", transform="log1p"),
            ColumnSpec(name="colour", kind="categorical", categories=categories),
        ),
    )


def test_federated_moments_equal_pooled_standardisation() -> None:
    rng = np.random.default_rng(0)
    parts = [
        pd.DataFrame({"amount": rng.exponential(5, n), "colour": "red", "y": 0})
        for n in (10, 200, 37)
    ]
    spec = FeatureSpec.from_manifests([manifest("d", ("red",))])
    total = None
    for part in parts:
        moments = spec.moments(part)
        total = moments if total is None else {k: total[k] + moments[k] for k in moments}
    fitted = spec.with_moments(total)
    pooled = np.log1p(pd.concat(parts)["amount"].to_numpy())
    assert fitted.numeric[0].mean == pytest.approx(pooled.mean(), rel=1e-9)
    assert fitted.numeric[0].std == pytest.approx(pooled.std(), rel=1e-9)
    x, _ = fitted.encode(pd.concat(parts))
    assert x[:, 0].mean() == pytest.approx(0.0, abs=1e-5)
    assert x[:, 0].std() == pytest.approx(1.0, abs=1e-4)


def test_vocabulary_is_the_sorted_union_whatever_the_order() -> None:
    a = manifest("a", ("red", "blue"))
    b = manifest("b", ("green", "red"))
    one = FeatureSpec.from_manifests([a, b])
    two = FeatureSpec.from_manifests([b, a])
    assert one == two
    assert one.categorical[0].vocabulary == ("blue", "green", "red")
    assert one.input_dim == 1 + 3


def test_one_hot_and_unknown_category() -> None:
    spec = FeatureSpec.from_manifests([manifest("a", ("blue", "red"))])
    frame = pd.DataFrame(
        {"amount": [0.0, 1.0, 2.0], "colour": ["red", "blue", "purple"], "y": [1, 0, 0]}
    )
    x, y = spec.encode(frame)
    assert x.dtype == np.float32 and x.shape == (3, 3)
    assert x[0, 1:].tolist() == [0.0, 1.0]
    assert x[1, 1:].tolist() == [1.0, 0.0]
    assert x[2, 1:].tolist() == [0.0, 0.0]
    assert y.tolist() == [1.0, 0.0, 0.0]


def test_disagreeing_manifests_are_refused() -> None:
    other = DatasetManifest(
        name="b",
        industry="x",
        target=TargetSpec(name="y"),
        features=(ColumnSpec(name="amount", kind="categorical", categories=("1",)),),
    )
    with pytest.raises(ValueError, match="disagree on the kind of column 'amount'"):
        FeatureSpec.from_manifests([manifest("a", ("red",)), other], ["amount"])
    with pytest.raises(ValueError, match="lacks column 'colour'"):
        FeatureSpec.from_manifests([manifest("a", ("red",)), other], ["colour"])


def test_census_encoding_dimension() -> None:
    spec = FeatureSpec.from_manifests([census.manifest_for(i) for i in census.industries()[:3]])
    assert len(spec.numeric) == len(census.NUMERIC)
    assert spec.input_dim == len(census.NUMERIC) + sum(
        len(c.categories or ()) for c in census.feature_columns()
    )
