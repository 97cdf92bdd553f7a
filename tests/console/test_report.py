"""The compliance report of a finished governed job (a small real run on the simulation
engine): `sandbox report` writes an HTML file that opens offline and JSON with the same facts,
and every ledger index it cites verifies with `sandbox audit proof N` against a signed
checkpoint covering it. The console's job page draws the job's three plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from policies.facts import EngineerFacts, OperatorFacts
from sandbox import identity
from sandbox.api import create_app
from sandbox.cli import app as cli
from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import get_governance
from sandbox.ledger import verify_checkpoint
from sandbox.protocol.jobspec import JobSpec
from sandbox.services import companies as company_service
from sandbox.services import jobs as job_service
from sandbox.services import principals as principal_service
from sandbox.vocabulary import OPERATOR_ID

pytestmark = pytest.mark.slow

PURPOSE = "income-prediction"
INDUSTRIES = ("Construction", "Retail trade", "Transportation")


@pytest.fixture
def finished_job(sandbox_home: Settings) -> str:
    from sandbox.runtime.simulation import run_on_simulation

    gov = get_governance(sandbox_home)
    members = []
    for industry in INDUSTRIES:
        company = census.slug(industry)
        table = census.company_table(industry, rows=80, seed=2)
        company_service.join(
            gov, sandbox_home.company_dir(company), company, industry, table, (PURPOSE,)
        )
        members.append(company)
    spec = JobSpec.model_validate(
        {"purpose": PURPOSE, "companies": members, "rounds": 2, "local_epochs": 1,
         "min_participants": 2, "privacy": {"dp": {"epsilon": 2.0}}}
    )  # fmt: skip
    filed = job_service.file_job(gov, spec, EngineerFacts("eve"))
    assert filed.allowed, filed.reasons
    outcome = run_on_simulation(sandbox_home, filed.job.id)
    assert outcome["status"] == "completed", outcome
    return filed.job.id


def test_the_report_of_a_finished_job_opens_offline_and_every_line_verifies(
    sandbox_home: Settings, finished_job: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "report"
    made = runner.invoke(cli, ["report", finished_job, "--out", str(out)])
    assert made.exit_code == 0, made.output
    html = (out / f"compliance-{finished_job}.html").read_text()
    data: dict[str, Any] = json.loads((out / f"compliance-{finished_job}.json").read_text())

    # Self-contained: no http(s) reference, no external script, style sheet or image.
    assert not re.search(r"https?:", html)
    assert not re.search(r"<(script|link|img|iframe)\b", html)
    assert html.count("<svg viewBox") == 3 and "@media print" in html
    for heading in ("Record of processing", "Data use and privacy spent per company",
                    "Release assessment", "Every policy decision"):  # fmt: skip
        assert heading in html

    # The same facts as the JSON, each pointing into the ledger.
    assert data["status"] == "completed" and data["model_hash"] in html
    processing = data["processing"]
    assert processing["purposes"] == [PURPOSE]
    assert {d["company"] for d in processing["data_categories"]} == {
        census.slug(i) for i in INDUSTRIES
    }
    assert all(d["grade"] == "general" for d in processing["data_categories"])
    assert processing["safeguards"]["differential_privacy"]["epsilon"] == 2.0
    for company in data["companies"]:
        assert 0 < company["epsilon_receipted"] <= 2.0 + 1e-6 and company["ledger_indices"]
    assert data["release"] is not None and data["release"]["ledger_index"] is not None
    assert len(data["rounds"]) == 2 and all(r["epsilon"] for r in data["rounds"])
    assert {d["action"] for d in data["decisions"]} >= {"submit_job", "participate_in_round"}

    indexes = {f["ledger_index"] for f in data["facts"]}
    indexes |= {d["ledger_index"] for d in data["decisions"]}
    cited = {c["size"]: c for c in data["checkpoints"]}
    public_key = data["public_key"]
    for fact in data["facts"]:
        checkpoint = cited[fact["checkpoint_size"]]
        assert fact["ledger_index"] < checkpoint["size"]
        head = verify_checkpoint(checkpoint["note"], public_key)
        assert head.size == checkpoint["size"] and head.root.hex() == checkpoint["root"]
        assert str(fact["ledger_index"]) in html
    for index in sorted(indexes):
        proof = runner.invoke(cli, ["audit", "proof", str(index)])
        assert proof.exit_code == 0 and "verified" in proof.output, (index, proof.output)

    # The console's page of the finished job: its three plots and its figures.
    api = create_app(sandbox_home, run_capacity=0)
    gov = get_governance(sandbox_home)
    key = identity.public_b64(identity.generate_key())
    principal_service.register_principal(gov, OperatorFacts(OPERATOR_ID), "reg", "regulator", key)
    token = principal_service.issue_token_locally(gov, "regulator", "reg").token
    with TestClient(api) as client:
        page = client.get(
            f"/console/jobs/{finished_job}", headers={"Authorization": f"Bearer {token}"}
        )
    assert page.status_code == 200
    assert page.text.count('<svg viewBox="0 0') == 3 and "local-only" in page.text
    assert "Release assessment" in page.text and data["model_hash"] in page.text
