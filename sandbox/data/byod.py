"""Bring your own data: a company's CSV or Parquet file plus a small manifest file.

The manifest (TOML or JSON) names the target, the feature columns with their kinds and
categories, the industry and the grade; see ``examples/`` in the README. Every failure
raises ``DataValidationError`` naming the file and the problem.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyarrow.lib
from pydantic import ValidationError

from sandbox.data.manifest import DatasetManifest
from sandbox.data.validation import (
    DataValidationError,
    ValidatedTable,
    validate_frame,
    with_test_file,
)
from sandbox.files import DocumentError, read_document, validation_problems

MAX_FILE_BYTES = 2 * 1024**3
SUFFIXES = {".csv", ".parquet", ".pq"}


def load_manifest(path: Path) -> DatasetManifest:
    """Read and validate a manifest file (``.toml`` or ``.json``)."""
    try:
        raw = read_document(path, "manifest")
    except DocumentError as exc:
        raise DataValidationError([str(exc)]) from None
    if not isinstance(raw, dict):
        raise DataValidationError([f"manifest {path} must hold a table/object at the top"])
    for filled in ("row_count", "train_rows", "test_rows", "split", "content_hash"):
        if filled in raw:
            raise DataValidationError(
                [f"manifest {path}: {filled!r} is computed by the sandbox; remove it"]
            )
    try:
        return DatasetManifest.model_validate(raw)
    except ValidationError as exc:
        raise DataValidationError(
            [f"manifest {path}: {line}" for line in validation_problems(exc)]
        ) from exc


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (UTF-8, header row) or Parquet file as text-preserving columns."""
    if not path.is_file():
        raise DataValidationError([f"data file {path} does not exist"])
    if path.suffix.lower() not in SUFFIXES:
        raise DataValidationError([f"data file {path} must be .csv or .parquet"])
    size = path.stat().st_size
    if size == 0:
        raise DataValidationError([f"data file {path} is empty"])
    if size > MAX_FILE_BYTES:
        raise DataValidationError([f"data file {path} is larger than {MAX_FILE_BYTES} bytes"])
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    try:
        return pd.read_parquet(path)
    except (pyarrow.lib.ArrowException, OSError, ValueError) as exc:
        raise DataValidationError(
            [f"data file {path} is not a readable Parquet file: {exc}"]
        ) from exc


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            sample = handle.read(1 << 16)
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            [
                f"data file {path} is not UTF-8 text (byte {exc.start} of the first block); "
                "save it as UTF-8"
            ]
        ) from exc
    if not sample.strip():
        raise DataValidationError([f"data file {path} holds no data"])
    try:
        df = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
            encoding_errors="strict",
            on_bad_lines="error",
            engine="python",
            quoting=csv.QUOTE_MINIMAL,
        )
    except UnicodeDecodeError as exc:
        raise DataValidationError([f"data file {path} is not UTF-8 text: {exc.reason}"]) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError([f"data file {path} holds no data"]) from exc
    except (pd.errors.ParserError, csv.Error) as exc:
        raise DataValidationError([f"data file {path} is not well-formed CSV: {exc}"]) from exc
    if df.columns.duplicated().any():
        dupes = sorted(set(df.columns[df.columns.duplicated()]))
        raise DataValidationError([f"data file {path} repeats column(s) {', '.join(dupes)}"])
    return df


def load_company_file(
    data: Path, manifest_file: Path, test_data: Path | None = None
) -> ValidatedTable:
    """A company's own file and manifest, validated together (and its separate test file,
    when it brings one: then those rows are its test split, exactly); nothing is written."""
    manifest = load_manifest(manifest_file)
    table = _validated(data, manifest)
    if test_data is None:
        return table
    test = _validated(test_data, manifest)
    _same_labels(data, test_data, manifest.target.name)
    return with_test_file(table, test, test_data.name)


def _same_labels(data: Path, test_data: Path, target: str) -> None:
    """Both files' target values together are at most two, and the test file's are among the
    training file's (a misspelt label would otherwise count as the negative class)."""
    labels = []
    for path in (data, test_data):
        column = read_table(path)[target]
        labels.append({str(v).strip() for v in column[column.notna()] if str(v).strip()})
    if len(labels[0] | labels[1]) > 2 or not labels[1] <= labels[0]:
        raise DataValidationError([
            f"{test_data}: target {target!r} holds {sorted(labels[1] - labels[0])} that the "
            f"training rows ({data}) do not; both files must use the same two labels"
        ])  # fmt: skip


def _validated(data: Path, manifest: DatasetManifest) -> ValidatedTable:
    df = read_table(data)
    try:
        return validate_frame(df, manifest)
    except DataValidationError as exc:
        raise DataValidationError([f"{data}: {p}" for p in exc.problems]) from exc
