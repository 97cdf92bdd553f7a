"""Checks a company's table against its manifest before anything is registered.

One pipeline for the built-in census data and for a company's own file: every problem is
named (column, kind of problem, how many rows, the first few row numbers), and the table is
returned with exactly the declared columns in the declared types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sandbox.data.manifest import DatasetManifest

MIN_ROWS = 10
MAX_CELL_CHARS = 1000


@dataclass(frozen=True)
class ValidatedTable:
    """A table checked against its manifest: exactly the declared columns, canonical types,
    the target as 0/1. Only ``validate_frame`` makes one."""

    frame: pd.DataFrame
    manifest: DatasetManifest


class DataValidationError(ValueError):
    """The data does not fit its manifest; ``problems`` lists every reason, readably."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _rows(mask: pd.Series, limit: int = 5) -> str:
    index = np.flatnonzero(mask.to_numpy())
    shown = ", ".join(str(i + 1) for i in index[:limit])
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{len(index)} row(s) (data row {shown}{more})"


def validate_frame(df: pd.DataFrame, manifest: DatasetManifest) -> ValidatedTable:
    """The declared columns of ``df`` in canonical types, or a ``DataValidationError``."""
    problems: list[str] = []
    if df.empty or len(df.columns) == 0:
        raise DataValidationError(["the file holds no data rows"])
    df = df.rename(columns=lambda c: str(c).strip())
    wanted = [c.name for c in manifest.features] + [manifest.target.name]
    missing = [name for name in wanted if name not in df.columns]
    if missing:
        problems.append(f"missing column(s) named in the manifest: {', '.join(missing)}")
        raise DataValidationError(problems)
    if len(df) < MIN_ROWS:
        problems.append(f"the file holds {len(df)} data rows; at least {MIN_ROWS} are needed")

    out = pd.DataFrame(index=df.index)
    for column in manifest.features:
        raw = df[column.name]
        if column.kind == "numeric":
            values = pd.to_numeric(raw, errors="coerce")
            blank = raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "NaN"])
            not_number = values.isna() & ~blank
            if not_number.any():
                problems.append(
                    f"column {column.name!r} is numeric but {_rows(not_number)} hold text"
                )
            if blank.any():
                problems.append(f"column {column.name!r} has missing values in {_rows(blank)}")
            infinite = np.isinf(values.fillna(0).to_numpy(dtype="float64"))
            if infinite.any():
                problems.append(
                    f"column {column.name!r} has infinite values in {_rows(pd.Series(infinite))}"
                )
            if column.transform == "log1p" and (values < 0).any():
                problems.append(
                    f"column {column.name!r} is log-scaled but {_rows(values < 0)} are negative"
                )
            out[column.name] = values.astype("float64")
        else:
            text = raw.astype(str).str.strip()
            blank = raw.isna()
            if blank.any():
                problems.append(f"column {column.name!r} has missing values in {_rows(blank)}")
            too_long = text.str.len() > MAX_CELL_CHARS
            if too_long.any():
                problems.append(
                    f"column {column.name!r} has values longer than {MAX_CELL_CHARS} "
                    f"characters in {_rows(too_long)}"
                )
            unknown = ~text.isin(set(column.categories or ())) & ~blank & ~too_long
            if unknown.any():
                examples = sorted(set(text[unknown].str.slice(0, 40)))[:3]
                problems.append(
                    f"column {column.name!r} has values outside its declared categories in "
                    f"{_rows(unknown)}, e.g. {', '.join(repr(e) for e in examples)}"
                )
            out[column.name] = text
    out[manifest.target.name] = _binary_target(df[manifest.target.name], manifest, problems)
    if problems:
        raise DataValidationError(problems)
    return ValidatedTable(frame=out.reset_index(drop=True), manifest=manifest)


def _binary_target(raw: pd.Series, manifest: DatasetManifest, problems: list[str]) -> pd.Series:
    name = manifest.target.name
    positive = manifest.target.positive
    if raw.isna().any():
        problems.append(f"target {name!r} has missing values in {_rows(raw.isna())}")
    as_text = raw.astype(str).str.strip()
    values = sorted(set(as_text[~raw.isna()]))
    if len(values) > 2:
        shown = ", ".join(repr(v) for v in values[:5])
        problems.append(f"target {name!r} must be binary but holds {len(values)} values: {shown}")
    target = (as_text == str(positive)).astype("int64")
    if isinstance(positive, (int, float)) and not isinstance(positive, bool):
        numeric = pd.to_numeric(raw, errors="coerce")
        target = (numeric == positive).astype("int64")
    return target
