"""A company's vault: its rows, split once into training and held-out test parts.

The vault lives in the company's node folder; only that company's client reads it. It is
written atomically (a temporary folder renamed into place), so a failed join leaves nothing
behind, and it carries a content hash that the client checks before it trusts the files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sandbox.data.manifest import DatasetManifest
from sandbox.data.validation import DataValidationError

TEST_FRACTION = 0.25
PARTS = ("train", "test")
IMPUTED_FILE = "imputed.json"


class VaultError(RuntimeError):
    """A vault is missing, incomplete or its files do not match their content hash."""


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for part in PARTS:
        data = (folder / f"{part}.parquet").read_bytes()
        digest.update(part.encode() + b"\x00" + len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def split(
    df: pd.DataFrame, target: str, seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded split, stratified by the target when both classes can be split."""
    from sklearn.model_selection import train_test_split  # only at join time, not per task

    counts = df[target].value_counts()
    stratify = df[target] if len(counts) == 2 and counts.min() >= 2 else None
    train, test = train_test_split(
        df, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def vault_path(node_dir: Path, dataset: str) -> Path:
    return node_dir / "vault" / dataset


def seeded_split_source(seed: int) -> str:
    """How the node's own split is described in the manifest."""
    share = round(TEST_FRACTION * 100)
    return f"the node's, stratified {100 - share}/{share} by the target, seed {seed}"


def fill_blanks(
    train: pd.DataFrame, test: pd.DataFrame, manifest: DatasetManifest
) -> dict[str, dict[str, object]]:
    """Impute the blanks left for the node ("median", "mode") from the training rows alone,
    in both parts, in place; what was filled, per column (kept at the node)."""
    filled: dict[str, dict[str, object]] = {}
    for column in manifest.features:
        if column.missing not in ("median", "mode"):
            continue
        known = train[column.name].dropna()
        if known.empty:
            raise DataValidationError(
                [
                    f"column {column.name!r} has no value in the training rows to take the "
                    f"{column.missing} of; declare a fill instead"
                ]
            )
        if column.missing == "median":
            value: object = float(known.median())
        else:
            counts = known.value_counts()
            value = next(c for c in column.categories or () if counts.get(c, 0) == counts.max())
        blanks = int(train[column.name].isna().sum()), int(test[column.name].isna().sum())
        train[column.name] = train[column.name].fillna(value)
        test[column.name] = test[column.name].fillna(value)
        filled[column.name] = {"rule": column.missing, "value": value,
                               "train_blanks": blanks[0], "test_blanks": blanks[1]}  # fmt: skip
    return filled


def write_vault(
    node_dir: Path,
    df: pd.DataFrame,
    manifest: DatasetManifest,
    seed: int = 0,
    test_rows: tuple[bool, ...] | None = None,
    split_source: str | None = None,
) -> DatasetManifest:
    """Split ``df`` (already validated) — as the company marked it in ``test_rows``, else
    seeded and stratified —, fill the blanks the manifest leaves to the node from the
    training rows, write it, and return the manifest with its counts, split and content hash
    filled in. What was imputed stays at the node (``imputed.json``). Refuses to overwrite an
    existing vault."""
    target = vault_path(node_dir, manifest.name)
    if target.exists():
        raise VaultError(f"a dataset named {manifest.name!r} is already in this company's vault")
    target.parent.mkdir(parents=True, exist_ok=True)
    if test_rows is not None:
        if len(test_rows) != len(df):
            raise VaultError("the split marks another number of rows than the table holds")
        marks = pd.Series(test_rows, index=df.index)
        train = df[~marks].reset_index(drop=True)
        test = df[marks].reset_index(drop=True)
        source = split_source or "the company's own"
    else:
        train, test = split(df, manifest.target.name, seed)
        source = seeded_split_source(seed)
    imputed = fill_blanks(train, test, manifest)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        train.to_parquet(staging / "train.parquet", index=False)
        test.to_parquet(staging / "test.parquet", index=False)
        filled = manifest.model_copy(
            update={
                "row_count": len(df),
                "train_rows": len(train),
                "test_rows": len(test),
                "split": source,
                "content_hash": _content_hash(staging),
            }
        )
        (staging / "manifest.json").write_text(filled.model_dump_json(indent=2))
        (staging / IMPUTED_FILE).write_text(json.dumps(imputed, indent=2) + "\n")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return filled


@dataclass(frozen=True)
class Vault:
    """Read access to one dataset of a company; used only by that company's own node."""

    folder: Path

    @classmethod
    def open(cls, node_dir: Path, dataset: str) -> Vault:
        folder = vault_path(node_dir, dataset)
        if not (folder / "manifest.json").is_file():
            raise VaultError(f"no dataset {dataset!r} in the vault at {folder.parent}")
        return cls(folder)

    @property
    def manifest(self) -> DatasetManifest:
        return DatasetManifest.model_validate(
            json.loads((self.folder / "manifest.json").read_text())
        )

    def verify(self) -> DatasetManifest:
        manifest = self.manifest
        if _content_hash(self.folder) != manifest.content_hash:
            raise VaultError(f"vault {self.folder} does not match its content hash")
        return manifest

    def imputed(self) -> dict[str, dict[str, object]]:
        """What the node imputed when it wrote the vault, per column (empty if nothing)."""
        path = self.folder / IMPUTED_FILE
        return dict(json.loads(path.read_text())) if path.is_file() else {}

    def read(self, part: str) -> pd.DataFrame:
        if part not in PARTS:
            raise ValueError(f"unknown vault part {part!r}")
        return pd.read_parquet(self.folder / f"{part}.parquet")
