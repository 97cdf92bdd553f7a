"""Companies that bring their own files, blanks and all, train together: three stations of
the shipped penguins data, each under other declared rules (the median of the training rows
and unlabelled rows left out; a declared value and the most frequent category; a declared
category and the station's own split column). The job runs on the simulation engine; each
node trains on exactly its vault's training rows and scores on exactly its test rows, as the
counts in its replies show, and the federated model sexes the birds well."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from policies.facts import EngineerFacts
from sandbox.config import Settings
from sandbox.data.byod import load_company_file
from sandbox.data.vault import Vault
from sandbox.governance import get_governance
from sandbox.protocol.jobspec import JobSpec
from sandbox.runtime.simulation import run_on_simulation
from sandbox.services import companies as company_service
from sandbox.services.jobs import file_job

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "penguins"
PURPOSE = "penguin-sexing"
SPECIES = ["Adelie", "Chinstrap", "Gentoo", "unknown"]


def station_files(tmp: Path, station: str) -> tuple[Path, Path]:
    """The station's file and a manifest with this station's rules for blanks."""
    document: dict[str, Any] = tomllib.loads((EXAMPLE / "manifest.toml").read_text())
    frame = pd.read_csv(EXAMPLE / f"{station}.csv", dtype=str, keep_default_na=False)
    species = next(f for f in document["features"] if f["name"] == "species")
    species["categories"] = SPECIES  # one codebook for all three
    frame.loc[[3, 10, 20], "species"] = ""  # a categorical column with blanks too
    if station == "dream":
        species.update(missing="mode")
        for feature in document["features"]:
            if feature["kind"] == "numeric":
                low, high = feature["bounds"]
                feature.update(missing="value", fill=(low + high) / 2)
    elif station == "torgersen":
        species.update(missing="category", fill="unknown")
        frame["part"] = ["test" if i % 4 == 0 else "train" for i in range(len(frame))]
        document["split_column"] = "part"
    else:
        species.update(missing="mode")
    data, manifest = tmp / f"{station}.csv", tmp / f"{station}.json"
    frame.to_csv(data, index=False)
    manifest.write_text(json.dumps(document))
    return data, manifest


def test_stations_with_blanks_train_on_their_own_training_rows(
    sandbox_home: Settings, engine: Any, tmp_path: Path
) -> None:
    gov = get_governance(sandbox_home)
    stations = ["biscoe", "dream", "torgersen"]
    for station in stations:
        table = load_company_file(*station_files(tmp_path, station))
        company_service.join(gov, sandbox_home.company_dir(station), station, station, table,
                             (PURPOSE,))  # fmt: skip
    vaults = {s: Vault.open(sandbox_home.company_dir(s), "penguins") for s in stations}
    for vault in vaults.values():
        for part in ("train", "test"):
            assert not vault.read(part).isna().any().any()  # every blank filled as declared
    torgersen = vaults["torgersen"].manifest
    assert torgersen.split == "the company's own (column 'part')"
    assert torgersen.test_rows == sum(1 for i in range(torgersen.row_count or 0) if i % 4 == 0)

    spec = JobSpec.model_validate(tomllib.loads((EXAMPLE / "job.toml").read_text()) | {"rounds": 5})
    filed = file_job(gov, spec, EngineerFacts("engineer"))
    assert filed.job.status == "admitted", filed.reasons
    replies: list[tuple[str, str, Any]] = []
    outcome = run_on_simulation(sandbox_home, filed.job.id,
                                observer=lambda t, c, r: replies.append((t, c, r)))  # fmt: skip
    assert outcome["status"] == "completed", outcome
    for task, station, content in replies:
        counted = int(content["metrics"]["num-examples"]) if "metrics" in content else None
        if task == "train":
            assert counted == vaults[station].manifest.train_rows, (station, counted)
        elif task == "evaluate":
            assert counted == vaults[station].manifest.test_rows, (station, counted)
    assert {t for t, _, _ in replies} >= {"train", "evaluate"}
    assert outcome["result"]["mean_auc"]["federated"] >= 0.8
