"""Blanks by declaration and the company's own split.

A CSV with blanks in numeric and categorical columns joins under each rule the manifest may
declare, and the vault holds exactly what the rule says: the declared fill, or the median /
most frequent category of the *training* rows alone (the test rows never feed it, their
blanks get the training value). An undeclared blank is refused with the manifest line that
would allow it. A split the company brings (a split column, or a separate test file) is used
exactly: the vault's training and test rows are the file's, row for row (by row hashes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.config import Settings
from sandbox.data.byod import load_company_file
from sandbox.data.manifest import DatasetManifest
from sandbox.data.validation import DataValidationError
from sandbox.data.vault import Vault, write_vault

REGIONS = ["north", "south", "east", "west", "unknown"]


def manifest(amount: dict[str, Any], region: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "name": "claims",
        "industry": "Construction",
        "personal_data": True,
        "target": {"name": "fraud", "positive": "yes"},
        "features": [
            {"name": "amount", "kind": "numeric", "bounds": [0, 1000], **amount},
            {"name": "region", "kind": "categorical", "categories": REGIONS, **region},
        ],
        **top,
    }


def rows(n: int = 60) -> pd.DataFrame:
    """Rows with blanks: amount blank in every 7th row, region in every 5th; the first 45
    rows are marked train, the rest test (the test rows' values differ, so that a median or
    mode taken over them would show)."""
    amount = [float(10 + i) if i < 45 else float(900 + i) for i in range(n)]
    region = [("north" if i % 3 else "east") if i < 45 else "west" for i in range(n)]
    frame = pd.DataFrame({
        "amount": [None if i % 7 == 3 else a for i, a in enumerate(amount)],
        "region": [None if i % 5 == 2 else r for i, r in enumerate(region)],
        "fraud": ["yes" if i % 4 == 0 else "no" for i in range(n)],
        "part": ["train" if i < 45 else "test" for i in range(n)],
    })  # fmt: skip
    return frame


def written(tmp_path: Path, document: dict[str, Any], frame: pd.DataFrame) -> Vault:
    data, manifest_file = tmp_path / "claims.csv", tmp_path / "claims.json"
    frame.to_csv(data, index=False)
    manifest_file.write_text(json.dumps(document))
    table = load_company_file(data, manifest_file)
    node = tmp_path / "node"
    write_vault(node, table.frame, table.manifest, 0, table.test_rows, table.split_source)
    return Vault.open(node, "claims")


def test_declared_fills_replace_blanks_in_both_parts(tmp_path: Path) -> None:
    document = manifest({"missing": "value", "fill": 0}, {"missing": "category", "fill": "unknown"},
                        split_column="part")  # fmt: skip
    vault = written(tmp_path, document, rows())
    source = rows()
    for part, marked in (("train", "train"), ("test", "test")):
        stored = vault.read(part)
        original = source[source.part == marked].reset_index(drop=True)
        assert stored["amount"].isna().sum() == 0 and stored["region"].isna().sum() == 0
        assert (stored["amount"][original["amount"].isna()] == 0.0).all()
        assert (stored["region"][original["region"].isna()] == "unknown").all()
    assert vault.imputed() == {}  # nothing computed from the rows


def test_median_and_mode_come_from_the_training_rows_alone(tmp_path: Path) -> None:
    document = manifest({"missing": "median"}, {"missing": "mode"}, split_column="part")
    vault = written(tmp_path, document, rows())
    source = rows()
    train_source = source[source.part == "train"]
    median = float(train_source["amount"].dropna().median())
    mode = train_source["region"].dropna().value_counts().idxmax()
    assert median < 100 and mode == "north"  # the test rows (900+, west) would move both
    for part in ("train", "test"):
        stored = vault.read(part)
        original = source[source.part == part].reset_index(drop=True)
        assert (stored["amount"][original["amount"].isna()] == median).all()
        assert (stored["region"][original["region"].isna()] == mode).all()
        kept = original["amount"].notna()
        assert (stored["amount"][kept] == original["amount"][kept]).all()
    imputed = vault.imputed()
    assert imputed["amount"]["value"] == median and imputed["region"]["value"] == mode
    blanks = source.groupby("part")["amount"].apply(lambda c: int(c.isna().sum()))
    assert (imputed["amount"]["train_blanks"], imputed["amount"]["test_blanks"]) == (
        blanks["train"],
        blanks["test"],
    )


@pytest.mark.parametrize(
    ("column", "fix"),
    [("amount", 'missing = "median"'), ("region", 'missing = "mode"')],
)
def test_an_undeclared_blank_is_refused_with_the_manifest_fix(
    tmp_path: Path, column: str, fix: str
) -> None:
    frame = rows()
    other = "region" if column == "amount" else "amount"
    frame[other] = frame[other].ffill().bfill()  # blanks in one column only
    document = manifest({}, {}, split_column="part")
    with pytest.raises(DataValidationError) as raised:
        written(tmp_path, document, frame)
    [problem] = raised.value.problems
    assert f"column {column!r} has missing values in" in problem
    assert fix in problem and f"[[features]] entry for {column!r}" in problem
    assert not (tmp_path / "node").exists()  # nothing written


@pytest.mark.parametrize(
    ("amount", "region", "says"),
    [
        ({"missing": "mode"}, {}, "cannot have missing = 'mode'"),
        ({}, {"missing": "median"}, "cannot have missing = 'median'"),
        ({"missing": "value"}, {}, "needs a number as fill"),
        ({"missing": "value", "fill": "zero"}, {}, "needs a number as fill"),
        ({"missing": "value", "fill": 5000}, {}, "outside its bounds"),
        ({}, {"missing": "category", "fill": "atlantis"}, "add it to categories"),
        ({"missing": "median", "fill": 3}, {}, "fill is only for"),
    ],
)
def test_a_rule_that_does_not_fit_its_column_is_refused(
    amount: dict[str, Any], region: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        DatasetManifest.model_validate(manifest(amount, region))


def row_hashes(frame: pd.DataFrame) -> list[str]:
    cells = frame[["amount", "region", "fraud"]].astype(str).to_numpy()
    return sorted(hashlib.sha256("\x1f".join(r).encode()).hexdigest() for r in cells)


def test_a_split_column_is_used_exactly(tmp_path: Path) -> None:
    frame = rows().dropna()  # unique rows, no blanks: the hashes compare row for row
    frame = frame.assign(amount=frame["amount"].astype(float), fraud=(frame["fraud"] == "yes")
                         .astype("int64"))  # as the vault stores them  # fmt: skip
    marked = rows().dropna()["part"]
    document = manifest({}, {}, split_column="part")
    vault = written(tmp_path, document, rows().dropna())
    assert row_hashes(vault.read("train")) == row_hashes(frame[marked == "train"])
    assert row_hashes(vault.read("test")) == row_hashes(frame[marked == "test"])
    assert not set(row_hashes(vault.read("train"))) & set(row_hashes(vault.read("test")))
    assert vault.manifest.split == "the company's own (column 'part')"
    assert vault.manifest.test_rows == int((marked == "test").sum())


@pytest.mark.parametrize(
    ("marks", "says"),
    [
        (["train"] * 59 + ["validation"], "must say train or test"),
        (["train"] * 60, "marks no row test"),
    ],
)
def test_a_bad_split_column_is_refused(tmp_path: Path, marks: list[str], says: str) -> None:
    frame = rows().ffill().bfill().assign(part=marks)
    with pytest.raises(DataValidationError, match=says):
        written(tmp_path, manifest({}, {}, split_column="part"), frame)


def test_a_separate_test_file_is_the_test_split(sandbox_home: Settings, tmp_path: Path) -> None:
    source = rows().ffill().bfill()
    train, test = source[source.part == "train"], source[source.part == "test"]
    train.drop(columns="part").to_csv(tmp_path / "train.csv", index=False)
    test.drop(columns="part").to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "claims.json").write_text(json.dumps(manifest({}, {})))
    result = CliRunner().invoke(app, [
        "company", "join", "acme", "--data", str(tmp_path / "train.csv"), "--test-data",
        str(tmp_path / "test.csv"), "--manifest", str(tmp_path / "claims.json"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "45 rows for training, 15 for testing (the company's own (test file test.csv))" in (
        result.output.replace("\n", " ")
    )
    vault = Vault.open(sandbox_home.company_dir("acme"), "claims")
    assert len(vault.read("train")) == 45 and len(vault.read("test")) == 15
    assert sorted(vault.read("test")["amount"]) == sorted(test["amount"])


def test_blank_targets_are_refused_or_left_out_as_declared(tmp_path: Path) -> None:
    frame = rows().ffill().bfill()
    frame.loc[[4, 50], "fraud"] = None
    with pytest.raises(DataValidationError, match='set missing = "drop" under \\[target\\]'):
        written(tmp_path, manifest({}, {}, split_column="part"), frame)
    document = manifest({}, {}, split_column="part")
    document["target"]["missing"] = "drop"
    vault = written(tmp_path, document, frame)
    assert vault.manifest.row_count == 58
    assert (vault.manifest.train_rows, vault.manifest.test_rows) == (44, 14)


def test_a_test_file_with_another_label_is_refused(tmp_path: Path) -> None:
    source = rows().ffill().bfill()
    train, test = source[source.part == "train"], source[source.part == "test"]
    train.drop(columns="part").to_csv(tmp_path / "train.csv", index=False)
    test.drop(columns="part").assign(fraud=["yes", "yse"] * 7 + ["yes"]).to_csv(
        tmp_path / "test.csv", index=False
    )
    (tmp_path / "claims.json").write_text(json.dumps(manifest({}, {})))
    with pytest.raises(DataValidationError, match=r"holds \['yse'\] that the training rows"):
        load_company_file(tmp_path / "train.csv", tmp_path / "claims.json", tmp_path / "test.csv")


def test_a_median_of_nothing_is_a_clear_data_error(tmp_path: Path) -> None:
    frame = rows().assign(amount=None)
    frame["region"] = frame["region"].ffill().bfill()
    with pytest.raises(DataValidationError, match="no value in the training rows"):
        written(tmp_path, manifest({"missing": "median"}, {}, split_column="part"), frame)
    assert not (tmp_path / "node" / "vault" / "claims").exists()
