"""The job's feature encoding: fixed by the job spec, the same at every company.

Numeric columns are (optionally log-scaled and) standardised. Without differential privacy
the statistics are computed federatedly: each company sends counts, sums and sums of
squares, never rows. Under differential privacy exact sums would tell whether a record is
present, so the columns are scaled from the public bounds the manifests declare instead
(centred on the middle of the range, half the range to one; values outside are clipped) and
no statistic of any company's rows is used. Categorical
columns are one-hot encoded over the union of the vocabularies the participants' manifests
declare; a value outside the vocabulary encodes as all zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from sandbox.data.manifest import DatasetManifest, NumericTransform


class NumericFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    transform: NumericTransform = "none"
    mean: float = 0.0
    std: float = 1.0
    bounds: tuple[float, float] | None = None
    """Public bounds (before the transform); values are clipped to them when scaled by them."""
    clip: bool = False


class CategoricalFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vocabulary: tuple[str, ...]


class ColumnMoments(BaseModel):
    """Sufficient statistics of one numeric column at one company (or summed over many)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: float
    total: float
    total_sq: float

    def __add__(self, other: ColumnMoments) -> ColumnMoments:
        return ColumnMoments(
            count=self.count + other.count,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
        )

    def mean_std(self) -> tuple[float, float]:
        if self.count <= 0:
            return 0.0, 1.0
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        std = math.sqrt(var)
        return mean, (std if std > 1e-12 else 1.0)


class FeatureSpec(BaseModel):
    """How rows become model inputs; identical at every company for one job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]

    @property
    def input_dim(self) -> int:
        return len(self.numeric) + sum(len(c.vocabulary) for c in self.categorical)

    @classmethod
    def from_manifests(
        cls, manifests: Iterable[DatasetManifest], columns: Iterable[str] | None = None
    ) -> FeatureSpec:
        """The encoding over ``columns`` (all shared feature columns when None).

        Every manifest must declare each chosen column with the same kind (and transform);
        vocabularies are unioned and sorted so the encoding is independent of order.
        """
        manifests = list(manifests)
        if not manifests:
            raise ValueError("an encoding needs at least one dataset manifest")
        targets = {m.target.name for m in manifests}
        if len(targets) != 1:
            raise ValueError(f"datasets disagree on the target column: {sorted(targets)}")
        if columns is None:
            shared = [c.name for c in manifests[0].features]
            for m in manifests[1:]:
                names = {c.name for c in m.features}
                shared = [c for c in shared if c in names]
            columns = shared
        numeric: list[NumericFeature] = []
        categorical: list[CategoricalFeature] = []
        for name in columns:
            specs = []
            for m in manifests:
                try:
                    specs.append(m.feature(name))
                except KeyError:
                    raise ValueError(
                        f"dataset {m.name!r} ({m.industry}) lacks column {name!r}"
                    ) from None
            kinds = {(s.kind, s.transform) for s in specs}
            if len(kinds) != 1:
                raise ValueError(
                    f"datasets disagree on the kind of column {name!r}: {sorted(kinds)}"
                )
            if specs[0].kind == "numeric":
                declared = [s.bounds for s in specs]
                bounds = (
                    (min(b[0] for b in declared if b), max(b[1] for b in declared if b))
                    if all(declared)
                    else None
                )
                numeric.append(
                    NumericFeature(name=name, transform=specs[0].transform, bounds=bounds)
                )
            else:
                vocab = sorted({v for s in specs for v in (s.categories or ())})
                categorical.append(CategoricalFeature(name=name, vocabulary=tuple(vocab)))
        if not numeric and not categorical:
            raise ValueError("the encoding has no feature columns")
        return cls(target=targets.pop(), numeric=tuple(numeric), categorical=tuple(categorical))

    def transformed_numeric(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {}
        for feature in self.numeric:
            values = df[feature.name].to_numpy(dtype="float64")
            if feature.clip and feature.bounds is not None:
                values = np.clip(values, *feature.bounds)
            out[feature.name] = np.log1p(values) if feature.transform == "log1p" else values
        return out

    def with_public_bounds(self) -> FeatureSpec:
        """The spec scaled by the manifests' public bounds alone (for jobs under differential
        privacy): no statistic of any company's rows. Every numeric column needs bounds."""
        numeric = []
        for feature in self.numeric:
            if feature.bounds is None:
                raise ValueError(
                    f"numeric column {feature.name!r} has no public bounds in every "
                    "participant's manifest; a job under differential privacy scales its "
                    "numeric columns by declared bounds, never by statistics of the rows"
                )
            low, high = feature.bounds
            if feature.transform == "log1p":
                low, high = math.log1p(low), math.log1p(high)
            numeric.append(
                feature.model_copy(
                    update={"mean": (low + high) / 2, "std": (high - low) / 2, "clip": True}
                )
            )
        return self.model_copy(update={"numeric": tuple(numeric)})

    def moments(self, df: pd.DataFrame) -> dict[str, ColumnMoments]:
        """This company's sufficient statistics for the numeric columns."""
        return {
            name: ColumnMoments(
                count=float(len(v)), total=float(v.sum()), total_sq=float((v * v).sum())
            )
            for name, v in self.transformed_numeric(df).items()
        }

    def with_moments(self, moments: Mapping[str, ColumnMoments]) -> FeatureSpec:
        """The spec with means and standard deviations from summed statistics."""
        numeric = []
        for feature in self.numeric:
            mean, std = moments[feature.name].mean_std()
            numeric.append(feature.model_copy(update={"mean": mean, "std": std}))
        return self.model_copy(update={"numeric": tuple(numeric)})

    def encode(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (float32, rows x input_dim) and labels (float32) of a validated table."""
        n = len(df)
        x = np.zeros((n, self.input_dim), dtype=np.float32)
        transformed = self.transformed_numeric(df)
        for j, feature in enumerate(self.numeric):
            x[:, j] = (transformed[feature.name] - feature.mean) / feature.std
        offset = len(self.numeric)
        rows = np.arange(n)
        for category in self.categorical:
            lookup = {v: i for i, v in enumerate(category.vocabulary)}
            codes = df[category.name].astype(str).map(lookup)
            known = codes.notna().to_numpy()
            x[rows[known], offset + codes[known].to_numpy(dtype=np.int64)] = 1.0
            offset += len(category.vocabulary)
        y = df[self.target].to_numpy(dtype=np.float32)
        return x, y
