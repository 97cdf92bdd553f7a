"""Dataset manifests: the only description of a company's data that leaves the company.

A manifest names the target and every feature column with its kind; a categorical column
declares its categories (its codebook), so that a job can fix one encoding for all
companies without anyone seeing anyone's rows. It also carries the row count, the content
hash of the vault files, the industry, the classification grade (after GB/T 43697-2024) and
whether the data holds personal information.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sandbox.vocabulary import ID_RULE, Grade, is_id

ColumnKind = Literal["numeric", "categorical"]
NumericTransform = Literal["none", "log1p"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
MAX_CATEGORIES = 1000


def check_column(value: str, what: str) -> str:
    """A column name of a company's file: a letter or underscore first (columns are not ids;
    the sandbox's ids follow :data:`sandbox.vocabulary.ID_PATTERN`)."""
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or underscore and hold only letters, "
            "digits, '_' or '-' (at most 64 characters)"
        )
    return value


class ColumnSpec(BaseModel):
    """One feature column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: ColumnKind
    categories: tuple[str, ...] | None = None
    transform: NumericTransform = "none"
    bounds: tuple[float, float] | None = None
    """Public bounds of a numeric column (its codebook's range, before any transform): what
    a job trained under differential privacy scales the column with, instead of statistics
    of the company's rows. Values outside them are clipped."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_column(value, "column name")

    @model_validator(mode="after")
    def _kind_fits(self) -> ColumnSpec:
        if self.kind == "categorical":
            if not self.categories:
                raise ValueError(f"categorical column {self.name!r} must declare its categories")
            if len(self.categories) > MAX_CATEGORIES:
                raise ValueError(
                    f"categorical column {self.name!r} declares {len(self.categories)} "
                    f"categories; at most {MAX_CATEGORIES} are allowed"
                )
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"categorical column {self.name!r} repeats a category")
            if self.transform != "none":
                raise ValueError(f"categorical column {self.name!r} cannot have a transform")
        elif self.categories is not None:
            raise ValueError(f"numeric column {self.name!r} cannot declare categories")
        if self.bounds is not None:
            if self.kind != "numeric":
                raise ValueError(f"categorical column {self.name!r} cannot declare bounds")
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"numeric column {self.name!r} declares bounds {self.bounds}: two finite "
                    "numbers, the lower first, are needed"
                )
            if self.transform == "log1p" and low <= -1:
                raise ValueError(f"log-scaled column {self.name!r} needs bounds above -1")
        return self


class TargetSpec(BaseModel):
    """The binary target: the column and the value that counts as positive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    positive: str | int | float | bool = 1

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_column(value, "target column")


class DatasetManifest(BaseModel):
    """What a company declares about a dataset; the registry stores exactly this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    industry: str = Field(min_length=1, max_length=100)
    target: TargetSpec
    features: tuple[ColumnSpec, ...] = Field(min_length=1)
    grade: Grade = "general"
    personal_data: bool = True
    description: str = Field(default="", max_length=2000)
    source: str = Field(default="", max_length=500)
    # Filled in by vault preparation, never by the company's own hand.
    row_count: int | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    content_hash: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_id(value):
            raise ValueError(f"dataset name {value!r} {ID_RULE}")
        return value

    @model_validator(mode="after")
    def _distinct_columns(self) -> DatasetManifest:
        names = [c.name for c in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature columns repeat: {', '.join(dupes)}")
        if self.target.name in names:
            raise ValueError(f"the target {self.target.name!r} is also listed as a feature")
        return self

    def feature(self, name: str) -> ColumnSpec:
        for column in self.features:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def numeric_columns(self) -> list[str]:
        return [c.name for c in self.features if c.kind == "numeric"]

    @property
    def categorical_columns(self) -> list[str]:
        return [c.name for c in self.features if c.kind == "categorical"]
