"""Federated training on the simulation engine, end to end, with the guarantees that matter:
no raw row leaves a company, identities are checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from typer.testing import CliRunner

from policies.facts import EngineerFacts
from sandbox import identity
from sandbox.cli import app
from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import get_governance
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.messages import ASSESS_METRIC, MAX_MODELS_PER_TASK
from sandbox.protocol.receipts import ReceiptPayload
from sandbox.registry import jobs as job_store
from sandbox.registry.models import Job
from sandbox.runtime.simulation import run_on_simulation
from sandbox.services.jobs import file_job
from tests.support.world import join

pytestmark = pytest.mark.slow

RECEIPT_FIELDS = set(ReceiptPayload.model_fields)
INDUSTRIES = ["Construction", "Education", "Transportation", "Retail trade"]


def file_governed(settings: Settings, companies: list[str], **training: int) -> Job:
    """File through the policy engine, as the product does: census rows are personal data,
    so the job trains with differential privacy (the policy requires it at every tier)."""
    spec = JobSpec.model_validate(
        {
            "purpose": "income-prediction",
            "companies": companies,
            "min_participants": 3,
            "privacy": {"dp": {"epsilon": 2.0}},
            **training,
        }
    )
    filed = file_job(get_governance(settings), spec, EngineerFacts("engineer"))
    assert filed.allowed and filed.job.status == "admitted", filed.reasons
    return filed.job


def test_a_job_runs_and_nothing_but_updates_and_aggregates_leaves_a_company(
    sandbox_home: Settings, engine
) -> None:
    companies = join(sandbox_home, engine, INDUSTRIES)
    # A fourth node presents a key the registry does not know: it must not take part.
    impostor = companies[-1]
    identity.write_private_key(
        sandbox_home.company_dir(impostor) / "keys" / "company.key", identity.generate_key()
    )
    info_path = sandbox_home.company_dir(impostor) / "node.json"
    job = file_governed(sandbox_home, companies, rounds=3, local_epochs=2)

    replies: list[tuple[str, str, RecordDict]] = []
    # (That the coordinator's processes open no vault is watched from outside them, with a
    # control, on the deployment engine: tests/deployment/test_deployment.py.)
    outcome = run_on_simulation(
        sandbox_home, job.id, observer=lambda t, c, r: replies.append((t, c, r))
    )
    assert info_path.exists()

    assert outcome["status"] == "completed", outcome
    result = outcome["result"]
    honest = companies[:-1]
    rounds = job_store.rounds_of(engine, job.id)
    assert [r.number for r in rounds] == [1, 2, 3]
    for record in rounds:
        assert record.asked == honest and record.took_part == honest
    assert set(k for k, v in result["companies"].items() if v["federated"]) == set(honest)
    assert result["companies"][impostor]["federated"] is None
    # DP noise comes from the operating system's entropy, so a 3-round job of three small
    # companies at epsilon 2 may land on either side of 0.5; what this test claims is what
    # leaves a company, and utility is measured by the demo's test and the benchmarks.
    assert 0.0 <= result["mean_auc"]["federated"] <= 1.0

    # Every reply a company sent: only the allowed records, model-shaped arrays, few scalars.
    input_dim = result["input_dim"]
    model_shapes = {"0.weight": (1, input_dim), "0.bias": (1,)}
    tasks = {t for t, _, _ in replies}
    # Under DP no exact statistic of the training rows leaves: no feature-stats task at all.
    assert tasks == {
        "identify",
        "local-baseline",
        "train",
        "evaluate",
        "assess",
        "evaluate-models",
    }
    for task, _company, content in replies:
        for key, record in content.items():
            if isinstance(record, ArrayRecord):
                assert task == "train" and key == "arrays"
                assert {n: tuple(a.numpy().shape) for n, a in record.items()} == model_shapes
                assert all(a.numpy().dtype == np.float32 for a in record.values())
            elif isinstance(record, MetricRecord):
                assert key == "metrics"
                assert all(isinstance(v, (int, float)) for v in record.values())
                if task == "assess":
                    assert all(ASSESS_METRIC.match(name) for name in record), sorted(record)
                elif task == "evaluate-models":
                    # a loss and an AUC per coalition model sent, plus two counts
                    assert len(record) <= 2 * MAX_MODELS_PER_TASK + 2
                else:
                    # scalar statistics: at most 3 per numeric column plus counts
                    assert len(record) <= 3 * len(census.NUMERIC) + 2
            elif key == "identity":
                assert isinstance(record, ConfigRecord) and task == "identify"
                assert set(record.keys()) == {"company-id", "dataset-id", "public-key", "signature"}
                assert all(len(str(v)) < 200 for v in record.values())
            elif key == "witness":
                # the node's witness answer on the ledger's checkpoint: a status and a
                # cosignature line (or the size it holds), nothing of the data
                assert isinstance(record, ConfigRecord) and task == "evaluate"
                assert set(record.keys()) == {"status", "body"}
                assert len(str(record["body"])) < 300
            else:
                # the company's signed receipt: a short statement of use, no rows
                assert key == "receipt" and isinstance(record, ConfigRecord) and task != "identify"
                assert set(record.keys()) == {"payload", "signature"}
                receipt = json.loads(str(record["payload"]))
                assert set(receipt) <= RECEIPT_FIELDS and len(str(record["payload"])) < 1500
        size = sum(a.numpy().nbytes for r in content.array_records.values() for a in r.values())
        assert size <= 4 * (input_dim + 1)
    # The identity proof is bound to the job: the impostor's reply was seen but refused.
    claimed = [r["identity"]["company-id"] for t, _, r in replies if t == "identify"]
    assert sorted(claimed) == sorted(companies)

    model_file = sandbox_home.runs_dir / job.id / "model.npz"
    assert model_file.exists()
    assert job_store.get_job(engine, job.id).model_hash == result["model_hash"]

    # The release: decided by the policy on the companies' own assessments, recorded in the
    # registry and the ledger. The impostor's company never proved its identity: unassessed.
    release = result["release"]
    assert release["tier"] == job_store.get_job(engine, job.id).risk_tier == "medium"
    assert set(result["assessment"]["not_assessed"]) == {impostor}
    [record] = job_store.releases_of(engine, job.id)
    assert record.allowed == release["allowed"] and record.model_hash == result["model_hash"]
    assert (sandbox_home.runs_dir / job.id / "release").exists() == release["allowed"]
    assert {c["company"] for c in result["contributions"]["companies"]} == set(honest)
    records = [json.loads(e.entry) for e in get_governance(sandbox_home).ledger.iter_entries()]
    [decision] = [r for r in records if r["action"] == "decision.release_model"]
    assert decision["decision"]["allowed"] == release["allowed"]
    [outcome_record] = [r for r in records if r["action"] in ("model.released", "model.withheld")]
    assert outcome_record["model_hash"] == result["model_hash"]
    shares = [r for r in records if r["action"] == "contribution.share"]
    assert {r["resource"]["id"] for r in shares} == set(honest)


def test_too_few_participants_stops_the_job_and_says_why(sandbox_home: Settings, engine) -> None:
    companies = join(sandbox_home, engine, INDUSTRIES[:3], rows=200)
    job = file_governed(sandbox_home, companies, rounds=2, local_epochs=1)
    # One company's vault is damaged: its node refuses every task, so only two remain.
    vault = sandbox_home.company_dir(companies[0]) / "vault" / "census" / "train.parquet"
    vault.write_bytes(vault.read_bytes()[:-10] + b"0123456789")
    outcome = run_on_simulation(sandbox_home, job.id)
    assert outcome["status"] == "stopped"
    assert "fewer than the minimum 3" in outcome["reason"]
    assert companies[0] in outcome["reason"] and "content hash" in outcome["reason"]


def test_demo_quick_writes_the_table_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(
        app, ["demo", "--quick", "--strategy", "fedprox", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console wraps at 80 columns here
    assert "small firms" in output and "pooled" in output
    report = json.loads(out.read_text())
    assert len(report["companies"]) == 6
    for row in report["companies"]:
        assert set(row) >= {"company", "industry", "rows", "local", "federated", "pooled"}
        for kind in ("local", "federated", "pooled"):
            auc = row[kind]["auc"]
            assert auc is None or 0.0 <= auc <= 1.0
    summary = report["summary"]
    assert set(summary["mean_auc"]) == {"local", "federated", "pooled"}
    assert summary["mean_auc"]["federated"] > 0.6
    assert report["job"]["status"] == "completed"

    # The demo ends with the assessment, the release decision and the contribution table.
    assert output.index("Release assessment") < output.index("Release decision")
    assert output.index("Release decision") < output.index("Contribution of each company")
    ids = {row["company"] for row in report["companies"]}
    assessment = report["assessment"]
    assert {r["company"] for r in assessment["companies"]} == ids
    for row in assessment["companies"]:
        assert set(row["federated"]) >= {"auc", "balanced_accuracy", "ece"}
        assert row["local"] is not None and "noise" in row["perturbed"]
    assert 0.0 <= assessment["calibration_error"] <= 1.0
    release = report["release"]
    assert release["tier"] == "medium"  # the first six industries: three are medium-tier
    assert release["model_hash"] == report["job"]["model_hash"] and release["recorded"]
    assert release["reasons"] and all(isinstance(r, str) for r in release["reasons"])
    assert (release["exported_to"] is not None) == release["allowed"]
    words = {"allow": "ALLOWED", "deny": "DENIED", "insufficient-evidence": "HELD"}
    assert words[release["outcome"]] in output
    assert release["allowed"] == (release["outcome"] == "allow")
    contributions = report["contributions"]
    assert {c["company"] for c in contributions["companies"]} == ids
    assert contributions["method"] == "exact per-round Shapley"
    shares = [c["share"] for c in contributions["companies"]]
    assert all(s >= 0 for s in shares) and abs(sum(shares) - 1.0) < 1e-9

    # ... and with the regulator's check of the ledger: it verifies, it holds the admission,
    # each round's participation decisions, the receipts and the release decision, and every
    # stored receipt verifies against its company's public key.
    ledger = report["ledger"]
    assert ledger["verifies"] and not ledger["problems"]
    held = ledger["job_entries"]
    assert held["decision.submit_job"] == 1 and held["decision.release_model"] == 1
    assert held["decision.participate_in_round"] >= len(ids) * report["settings"]["rounds"]
    assert held["receipt.recorded"] == ledger["receipts"] > 0
    assert ledger["receipts_refused"] == []
    assert "all verify" in output and "Ledger:" in output

    # ... and with the settlement: the declared value shared by the contribution shares, the
    # compute each node metered priced, the vouchers issued at joining applied first.
    settlement = report["settlement"]
    lines = settlement["companies"]
    assert {c["company"] for c in lines} == ids
    assert sum(c["amount"] for c in lines) == settlement["value"] == 1_000_000
    assert all(c["metered_tasks"] > 0 and c["cpu_seconds"] > 0 for c in lines)
    for c in lines:
        assert c["net"] == c["amount"] - c["compute_cost"] + c["vouchers"]
        assert c["vouchers"] == min(c["compute_cost"], 50)
    assert held["job.settled"] == 1 and "settlement of job" in output
    assert settlement["coordinator"]["cpu_seconds"] > 0 < settlement["coordinator"]["wall_seconds"]
