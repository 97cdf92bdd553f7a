"""Bring your own data: good files join; every malformed input is named and leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.config import Settings
from sandbox.data.byod import load_company_file
from sandbox.data.validation import DataValidationError
from sandbox.data.vault import Vault
from sandbox.registry.models import Company, Consent, Dataset

MANIFEST = """
name = "claims"
industry = "Finance insurance and real estate"
grade = "general"
personal_data = true

[target]
name = "fraud"
positive = "yes"

[[features]]
name = "amount"
kind = "numeric"
transform = "log1p"

[[features]]
name = "age"
kind = "numeric"

[[features]]
name = "region"
kind = "categorical"
categories = ["north", "south", "east", "west"]
"""


def good_rows(n: int = 40) -> pd.DataFrame:
    regions = ["north", "south", "east", "west"]
    return pd.DataFrame(
        {
            "amount": [100.0 + 7 * i for i in range(n)],
            "age": [20 + i % 50 for i in range(n)],
            "region": [regions[i % 4] for i in range(n)],
            "fraud": ["yes" if i % 5 == 0 else "no" for i in range(n)],
            "notes": ["free text that is not a feature"] * n,
        }
    )


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "claims.csv"
    good_rows().to_csv(data, index=False)
    manifest = tmp_path / "claims.toml"
    manifest.write_text(MANIFEST)
    return data, manifest


def join(settings: Settings, data: Path, manifest: Path, company: str = "acme"):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        app,
        [
            "company",
            "join",
            company,
            "--data",
            str(data),
            "--manifest",
            str(manifest),
            "--purpose",
            "fraud-model",
        ],
    )


def nothing_left(settings: Settings, engine, company: str = "acme") -> None:  # type: ignore[no-untyped-def]
    assert not settings.company_dir(company).exists()
    with Session(engine) as session:
        assert session.exec(select(Company)).all() == []
        assert session.exec(select(Dataset)).all() == []
        assert session.exec(select(Consent)).all() == []


def test_a_good_csv_joins_and_only_the_manifest_is_registered(
    sandbox_home: Settings, engine, files
) -> None:
    data, manifest = files
    result = join(sandbox_home, data, manifest)
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        dataset = session.exec(select(Dataset)).one()
        consent = session.exec(select(Consent)).one()
    assert dataset.row_count == 40 and dataset.id == "acme/claims"
    assert consent.purpose == "fraud-model"
    # The node's split is told: its sizes, how it was made and what chooses it.
    said = " ".join(result.output.split())
    train, test = dataset.manifest["train_rows"], dataset.manifest["test_rows"]
    assert train + test == 40 and f"split: {train} rows for training, {test} for testing" in said
    registered = json.dumps(dataset.manifest)
    assert "free text" not in registered and "north" in registered  # codebook yes, rows no
    vault = Vault.open(sandbox_home.company_dir("acme"), "claims")
    assert vault.verify().content_hash == dataset.content_hash
    train, test = vault.read("train"), vault.read("test")
    assert len(train) + len(test) == 40 and "notes" not in train.columns
    assert set(train["fraud"]) == {0, 1}
    key = sandbox_home.company_dir("acme") / "keys" / "company.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_parquet_joins_too(sandbox_home: Settings, engine, files, tmp_path: Path) -> None:
    _, manifest = files
    parquet = tmp_path / "claims.parquet"
    good_rows().to_parquet(parquet)
    result = join(sandbox_home, parquet, manifest)
    assert result.exit_code == 0, result.output


BAD_DATA = {
    "empty file": (lambda p: p.write_bytes(b""), "is empty"),
    "header only": (lambda p: p.write_text("amount,age,region,fraud\n"), "holds no data"),
    "not utf-8": (
        lambda p: p.write_bytes("amount,age,region,fraud\n1,2,s\xfcd,yes\n".encode("latin-1")),
        "not UTF-8",
    ),
    "ragged row": (
        lambda p: p.write_text(good_rows().to_csv(index=False) + "1,2,north,yes,x,extra,more\n"),
        "not well-formed CSV",
    ),
    "missing column": (
        lambda p: good_rows().drop(columns=["age"]).to_csv(p, index=False),
        "missing column(s) named in the manifest: age",
    ),
    "text in a numeric column": (
        lambda p: good_rows().assign(age=["x"] + [30] * 39).to_csv(p, index=False),
        "column 'age' is numeric but 1 row(s) (data row 1) hold text",
    ),
    "NaN in a numeric column": (
        lambda p: good_rows().assign(amount=[float("nan")] * 3 + [1.0] * 37).to_csv(p, index=False),
        "column 'amount' has missing values in 3 row(s)",
    ),
    "infinite value": (
        lambda p: good_rows().assign(age=[float("inf")] + [3.0] * 39).to_csv(p, index=False),
        "column 'age' has infinite values",
    ),
    "negative amount under log scaling": (
        lambda p: good_rows().assign(amount=[-5.0] + [1.0] * 39).to_csv(p, index=False),
        "is log-scaled but 1 row(s) (data row 1) are negative",
    ),
    "unknown category": (
        lambda p: good_rows().assign(region=["atlantis"] * 40).to_csv(p, index=False),
        "outside its declared categories in 40 row(s)",
    ),
    "huge field": (
        lambda p: good_rows().assign(region=["n" * 5000] + ["north"] * 39).to_csv(p, index=False),
        "longer than 1000 characters",
    ),
    "target not binary": (
        lambda p: (
            good_rows().assign(fraud=["yes", "no", "maybe", "unsure"] * 10).to_csv(p, index=False)
        ),
        "must be binary but holds 4 values",
    ),
    "too few rows": (lambda p: good_rows(5).to_csv(p, index=False), "at least 10 are needed"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_named_and_leaves_nothing(
    case: str, sandbox_home: Settings, engine, files
) -> None:
    data, manifest = files
    write, expected = BAD_DATA[case]
    write(data)
    with pytest.raises(DataValidationError) as info:
        load_company_file(data, manifest)
    assert expected in str(info.value)
    result = join(sandbox_home, data, manifest)
    assert result.exit_code == 1
    assert expected.split("(")[0].strip() in " ".join(result.output.split())
    nothing_left(sandbox_home, engine)


BAD_MANIFESTS = {
    "toml syntax": ("name = ", "is not valid toml"),
    "unknown field": ('owner = "me"\n' + MANIFEST, "owner: Extra inputs are not permitted"),
    "categorical without categories": (
        MANIFEST.replace('categories = ["north", "south", "east", "west"]', ""),
        "must declare its categories",
    ),
    "repeated column": (
        MANIFEST + '\n[[features]]\nname = "age"\nkind = "numeric"\n',
        "feature columns repeat: age",
    ),
    "bad grade": (
        MANIFEST.replace('grade = "general"', 'grade = "secret"'),
        "grade: Input should be",
    ),
    "filled-in hash": ('content_hash = "00"\n' + MANIFEST, "is computed by the sandbox"),
    "bad column name": (
        MANIFEST.replace('name = "age"', 'name = "a ge"'),
        "must start with a letter",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifests_are_named(case: str, sandbox_home: Settings, engine, files) -> None:
    data, manifest = files
    text, expected = BAD_MANIFESTS[case]
    manifest.write_text(text)
    with pytest.raises(DataValidationError, match=expected):
        load_company_file(data, manifest)
    assert join(sandbox_home, data, manifest).exit_code == 1
    nothing_left(sandbox_home, engine)


def test_a_company_cannot_join_twice(sandbox_home: Settings, engine, files) -> None:
    data, manifest = files
    assert join(sandbox_home, data, manifest).exit_code == 0
    again = join(sandbox_home, data, manifest)
    assert again.exit_code == 1
    assert "is taken or reserved" in " ".join(again.output.split())  # the policy's refusal
    with Session(engine) as session:
        assert len(session.exec(select(Company)).all()) == 1


def test_a_registry_failure_removes_the_vault(sandbox_home: Settings, engine, files) -> None:
    """The company id is free on disk but taken in the registry: the new folder goes away."""
    data, manifest = files
    assert join(sandbox_home, data, manifest, company="acme").exit_code == 0
    import shutil

    shutil.rmtree(sandbox_home.company_dir("acme"))
    again = join(sandbox_home, data, manifest, company="acme")
    assert again.exit_code == 1 and "is taken or reserved" in " ".join(again.output.split())
    assert not sandbox_home.company_dir("acme").exists()
