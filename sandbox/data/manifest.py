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
MissingRule = Literal["refuse", "value", "category", "median", "mode"]
"""How a column's blanks are handled: refused (the default); replaced by the manifest's
``fill`` (a number for "value", one of the declared categories for "category"); or imputed at
the company's node from its own training rows ("median" of a numeric column, "mode", the most
frequent category, of a categorical one). The node applies the rule when it writes its vault,
so training, evaluation and the release assessment all see the same values."""
RULES_OF_KIND = {
    "numeric": ("refuse", "value", "median"),
    "categorical": ("refuse", "category", "mode"),
}

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
    missing: MissingRule = "refuse"
    fill: str | float | None = None
    """The declared replacement of a blank, for the rules "value" and "category"."""

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
        self._check_missing()
        return self

    def _check_missing(self) -> None:
        allowed = RULES_OF_KIND[self.kind]
        if self.missing not in allowed:
            raise ValueError(
                f"{self.kind} column {self.name!r} cannot have missing = {self.missing!r}; "
                f"choose one of {', '.join(allowed)}"
            )
        if self.missing not in ("value", "category"):
            if self.fill is not None:
                raise ValueError(
                    f'column {self.name!r}: fill is only for missing = "value" or "category"'
                )
            return
        if self.missing == "category":
            if self.fill not in (self.categories or ()):
                raise ValueError(
                    f'column {self.name!r}: missing = "category" needs fill = one of its '
                    f"declared categories (add it to categories), not {self.fill!r}"
                )
            return
        if isinstance(self.fill, bool) or not isinstance(self.fill, (int, float)):
            raise ValueError(f'column {self.name!r}: missing = "value" needs a number as fill')
        if not math.isfinite(self.fill):
            raise ValueError(f"column {self.name!r}: fill must be a finite number")
        if self.bounds is not None and not self.bounds[0] <= self.fill <= self.bounds[1]:
            raise ValueError(f"column {self.name!r}: fill {self.fill} is outside its bounds")
        if self.transform == "log1p" and self.fill < 0:
            raise ValueError(f"log-scaled column {self.name!r}: fill must not be negative")


class TargetSpec(BaseModel):
    """The binary target: the column and the value that counts as positive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    positive: str | int | float | bool = 1
    missing: Literal["refuse", "drop"] = "refuse"
    """Rows whose target is blank: refused (the default), or left out of the vault ("drop");
    a row without its label can neither train nor test a model."""

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
    protected: tuple[str, ...] = ()
    """Categorical feature columns that are protected attributes (sex, race, an age band):
    the release assessment compares the model's outcomes between their groups, and the
    model card flags them among what drives the model."""
    split_column: str | None = None
    """A column of the file that says, row by row, ``train`` or ``test``: the company's own
    split, used exactly (without it, the node makes a seeded, stratified 75/25 split)."""
    # Filled in by vault preparation, never by the company's own hand.
    row_count: int | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    split: str | None = Field(default=None, max_length=200)
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
        for name in self.protected:
            if name not in names:
                raise ValueError(f"protected attribute {name!r} is not a feature column")
            if self.feature(name).kind != "categorical":
                raise ValueError(
                    f"protected attribute {name!r} must be a categorical column (declare a "
                    "band, such as an age band, for a numeric one)"
                )
        if len(set(self.protected)) != len(self.protected):
            raise ValueError("protected attributes repeat")
        if self.split_column is not None:
            check_column(self.split_column, "split column")
            if self.split_column in (*names, self.target.name):
                raise ValueError(
                    f"the split column {self.split_column!r} is also a feature or the target"
                )
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


_PERSONAL_WORDS = frozenset(
    {"sex", "gender", "race", "ethnicity", "ethnic", "age", "birth", "born", "dob", "name",
     "surname", "address", "zip", "zipcode", "postcode", "postal", "phone", "email", "religion",
     "marital", "nationality", "citizenship", "ssn", "passport", "disability", "pregnant",
     "pregnancy", "income", "salary", "diagnosis", "health"}
)  # fmt: skip
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def personal_looking_columns(manifest: DatasetManifest) -> list[str]:
    """Columns whose names suggest personal data (sex, race, birth, age, name, ...): the
    review of a dataset declared non-personal looks at these. A hint, not a classifier."""
    columns = [c.name for c in manifest.features] + [manifest.target.name]
    found = []
    for name in columns:
        words = {w.lower() for w in _WORD.findall(name)}
        if words & _PERSONAL_WORDS or any(w.endswith(("birth", "gender")) for w in words):
            found.append(name)
    return found
