"""Checks a company's table against its manifest before anything is registered.

One pipeline for the built-in census data and for a company's own file: every problem is
named (column, kind of problem, how many rows, the first few row numbers), and the table is
returned with exactly the declared columns in the declared types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sandbox.data.manifest import ColumnSpec, DatasetManifest

MIN_ROWS = 10
MAX_CELL_CHARS = 1000


@dataclass(frozen=True)
class ValidatedTable:
    """A table checked against its manifest: exactly the declared columns, canonical types,
    the target as 0/1; blanks replaced as declared, or left (as NaN / None) for the node to
    impute from its training rows. ``test_rows`` marks the company's own test rows where it
    brought its split. Only ``validate_frame`` and ``with_test_file`` make one."""

    frame: pd.DataFrame
    manifest: DatasetManifest
    test_rows: tuple[bool, ...] | None = None
    split_source: str | None = None
    dropped_rows: int = 0
    """Rows left out because their target was blank (the manifest's target.missing = "drop")."""


SPLIT_VALUES = ("train", "test")


def blank_problem(column: ColumnSpec, rows: str) -> str:
    """The error for blanks the manifest does not declare: what to write to allow them."""
    if column.kind == "numeric":
        choices = (
            'missing = "median" (the median of your training rows, computed at your node) or '
            'missing = "value" with fill = a number'
        )
    else:
        choices = (
            'missing = "mode" (the most frequent category of your training rows) or '
            'missing = "category" with fill = one of its categories (e.g. "unknown", added '
            "to categories)"
        )
    return (
        f"column {column.name!r} has missing values in {rows}: declare how its blanks are "
        f"handled in the manifest's [[features]] entry for {column.name!r}: {choices}"
    )


class DataValidationError(ValueError):
    """The data does not fit its manifest; ``problems`` lists every reason, readably."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _rows(mask: pd.Series, limit: int = 5) -> str:
    """How many rows, and the first few as data row numbers (the frame's index counts the
    file's data rows from 0, rows left out included)."""
    index = mask.index[mask.to_numpy(dtype=bool)]
    shown = ", ".join(str(int(i) + 1) for i in index[:limit])
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{len(index)} row(s) (data row {shown}{more})"


def validate_frame(df: pd.DataFrame, manifest: DatasetManifest) -> ValidatedTable:
    """The declared columns of ``df`` in canonical types, or a ``DataValidationError``."""
    problems: list[str] = []
    if df.empty or len(df.columns) == 0:
        raise DataValidationError(["the file holds no data rows"])
    # Row labels count the data rows from 0 (whatever index the reader made), so that the
    # rows named in messages stay those of the file when some are left out.
    df = df.rename(columns=lambda c: str(c).strip()).reset_index(drop=True)
    wanted = [c.name for c in manifest.features] + [manifest.target.name]
    missing = [name for name in wanted if name not in df.columns]
    if missing:
        problems.append(f"missing column(s) named in the manifest: {', '.join(missing)}")
        raise DataValidationError(problems)
    dropped = 0
    if manifest.target.missing == "drop":
        raw_target = df[manifest.target.name]
        unlabelled = raw_target.isna() | raw_target.astype(str).str.strip().eq("")
        dropped = int(unlabelled.sum())
        df = df[~unlabelled]
    if len(df) < MIN_ROWS:
        problems.append(f"the file holds {len(df)} data rows; at least {MIN_ROWS} are needed")

    out = pd.DataFrame(index=df.index)
    for column in manifest.features:
        raw = df[column.name]
        if column.kind == "numeric":
            values = pd.to_numeric(raw, errors="coerce")
            blank = raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "NaN", "NA"])
            not_number = values.isna() & ~blank
            if not_number.any():
                problems.append(
                    f"column {column.name!r} is numeric but {_rows(not_number)} hold text"
                )
            if blank.any() and column.missing == "refuse":
                problems.append(blank_problem(column, _rows(blank)))
            if column.missing == "value":
                values = values.where(~blank, float(column.fill))  # type: ignore[arg-type]
            else:
                values = values.where(~blank, np.nan)  # "median": the node fills these in
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
            blank = raw.isna() | (text == "")
            if blank.any() and column.missing == "refuse":
                problems.append(blank_problem(column, _rows(blank)))
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
            if column.missing == "category":
                text = text.where(~blank, str(column.fill))
            elif column.missing == "mode":
                text = text.astype(object).where(~blank, None)  # the node fills these in
            out[column.name] = text
    out[manifest.target.name] = _binary_target(df[manifest.target.name], manifest, problems)
    test_rows = _declared_split(df, manifest, problems)
    if problems:
        raise DataValidationError(problems)
    return ValidatedTable(
        frame=out.reset_index(drop=True),
        manifest=manifest,
        test_rows=test_rows,
        split_source=None
        if test_rows is None
        else f"the company's own (column {manifest.split_column!r})",
        dropped_rows=dropped,
    )


def _declared_split(
    df: pd.DataFrame, manifest: DatasetManifest, problems: list[str]
) -> tuple[bool, ...] | None:
    """The rows the company marked ``test`` in its split column (None without one)."""
    name = manifest.split_column
    if name is None:
        return None
    if name not in df.columns:
        problems.append(f"the manifest's split column {name!r} is not in the file")
        return None
    marks = df[name].astype(str).str.strip().str.lower()
    wrong = ~marks.isin(SPLIT_VALUES) | df[name].isna()
    if wrong.any():
        problems.append(f"split column {name!r} must say train or test, not in {_rows(wrong)}")
        return None
    for part in SPLIT_VALUES:
        if not (marks == part).any():
            problems.append(f"split column {name!r} marks no row {part}")
    return tuple(bool(m == "test") for m in marks)


def with_test_file(train: ValidatedTable, test: ValidatedTable, test_file: str) -> ValidatedTable:
    """The company's training rows and its separate test file as one table, its split marked."""
    if train.manifest.split_column is not None:
        raise DataValidationError(
            [f"the manifest names a split column; give the test rows there or in {test_file}, "
             "not both"]
        )  # fmt: skip
    frame = pd.concat([train.frame, test.frame], ignore_index=True)
    marks = (False,) * len(train.frame) + (True,) * len(test.frame)
    source = f"the company's own (test file {test_file[:120]})"
    dropped = train.dropped_rows + test.dropped_rows
    return ValidatedTable(frame, train.manifest, marks, source, dropped)


def _binary_target(raw: pd.Series, manifest: DatasetManifest, problems: list[str]) -> pd.Series:
    name = manifest.target.name
    positive = manifest.target.positive
    if raw.isna().any():
        problems.append(
            f"target {name!r} has missing values in {_rows(raw.isna())}: a row without its "
            'label can neither train nor test; set missing = "drop" under [target] in the '
            "manifest to leave those rows out"
        )
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
