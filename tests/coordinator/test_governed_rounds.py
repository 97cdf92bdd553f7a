"""Governed rounds on the simulation engine: consent revoked mid-job, the company's own gate,
receipts that verify against the companies' keys, and a ledger that says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import Session, select

from policies.facts import EngineerFacts
from sandbox import identity
from sandbox.config import Settings
from sandbox.data import census
from sandbox.governance import get_governance
from sandbox.node.home import NodeHome
from sandbox.node.locallog import HashChainLog
from sandbox.protocol.jobspec import JobSpec
from sandbox.protocol.receipts import verify_receipt
from sandbox.registry import jobs as job_store
from sandbox.registry.models import Company, Consent, Receipt
from sandbox.runtime.simulation import run_on_simulation
from sandbox.services.companies import join
from sandbox.services.consents import revoke_consent
from sandbox.services.jobs import file_job

pytestmark = pytest.mark.slow

PURPOSE = "income-prediction"


def companies(settings: Settings, industries: list[str]) -> list[str]:
    ids = []
    for industry in industries:
        company_id = census.slug(industry)
        join(
            get_governance(settings),
            settings.company_dir(company_id),
            company_id,
            industry,
            census.company_table(industry, rows=150, seed=2),
            (PURPOSE,),
        )
        ids.append(company_id)
    return ids


def filed_job(settings: Settings, members: list[str], rounds: int = 3) -> str:
    spec = JobSpec.model_validate(
        {
            "purpose": PURPOSE,
            "companies": members,
            "rounds": rounds,
            "local_epochs": 1,
            "min_participants": 3,
            "privacy": {"dp": {"epsilon": 2.0}},
        }
    )
    filed = file_job(get_governance(settings), spec, EngineerFacts("eve"))
    assert filed.allowed and filed.job.status == "admitted", filed.reasons
    return filed.job.id


class AfterRound:
    """Progress hook: runs ``action`` once when round ``number`` has completed."""

    def __init__(self, number: int, action: Any):
        self.number, self.action, self.done = number, action, False

    def stage(self, name: str) -> None:
        pass

    def round_done(self, number: int, total: int, summary: dict[str, Any]) -> None:
        if number == self.number and not self.done:
            self.done = True
            self.action()


def consent_of(engine, company: str) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return session.exec(select(Consent.id).where(Consent.company_id == company)).one()


def ledger_records(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(e.entry) for e in get_governance(settings).ledger.iter_entries()]


def test_revocation_mid_job_and_the_companys_own_gate(sandbox_home: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    members = companies(
        sandbox_home,
        ["Construction", "Retail trade", "Transportation", "Wholesale trade", "Mining"],
    )
    job_id = filed_job(sandbox_home, members)
    revoked, refusing = members[0], members[1]

    def after_round_one() -> None:
        # One company revokes through the sandbox: the policy removes it from the next round.
        revoke_consent(
            get_governance(sandbox_home),
            revoked,
            consent_of(engine, revoked),
            "withdrawn",
            node_dir=sandbox_home.company_dir(revoked),
        )
        # Another withdraws at its own node only: the registry still says live, so the
        # coordinator asks it, and its own gate refuses before reading any data.
        node = NodeHome(sandbox_home.company_dir(refusing))
        node.record_revocation(consent_of(engine, refusing), datetime.now(UTC))

    outcome = run_on_simulation(sandbox_home, job_id, progress=AfterRound(1, after_round_one))
    assert outcome["status"] == "completed", outcome
    rounds = job_store.rounds_of(engine, job_id)
    assert rounds[0].took_part == sorted(members)
    for later in rounds[1:]:
        assert later.took_part == sorted(members[2:])
        sat_out = {m["company"]: m["reason"] for m in later.sat_out}
        missing = {m["company"]: m["reason"] for m in later.missing}
        assert set(sat_out) == {revoked} and set(missing) == {refusing}
        assert sat_out[revoked].startswith("removed by policy")
        assert "no live consent" in sat_out[revoked]
        assert "refused by the company's gate" in missing[refusing]

    records = ledger_records(sandbox_home)
    denials = [
        r
        for r in records
        if r["action"] == "decision.participate_in_round" and not r["decision"]["allowed"]
    ]
    assert {r["actor"]["principal"] for r in denials} == {revoked}
    assert all("consent.live_for_round" in r["decision"]["policies"] for r in denials)
    # rounds 2 and 3, and the release assessment after the last round (round 4)
    assert {r["round"] for r in denials} == {2, 3, 4}

    # The refusing company's own log: a denied read, chained and intact.
    log = HashChainLog(NodeHome(sandbox_home.company_dir(refusing)).local_log_path)
    assert log.verify().ok
    refused = [
        line.event
        for line in log.read()
        if line.event.get("kind") == "decision" and line.event.get("allowed") is False
    ]
    assert refused and all(e["action"] == "read_dataset" for e in refused)

    # Every receipt the coordinator recorded verifies against its company's registered key.
    with Session(engine) as session:
        receipts = session.exec(select(Receipt).where(Receipt.job_id == job_id)).all()
        keys = {c.id: c.public_key for c in session.exec(select(Company)).all()}
    by_task = {
        task: sum(1 for r in receipts if r.task == task) for task in {r.task for r in receipts}
    }
    # set-up (5 companies: the DP-trained baseline; under DP no training statistic leaves),
    # round 1 (5), rounds 2-3 (3 each), the release assessment (3)
    assert "feature-stats" not in by_task and by_task["local-baseline"] == 5
    # Under DP every company first scores the initial model on its test split (round 0):
    # the decision threshold comes from those positive rates, not from training rows.
    assert by_task["train"] == 5 + 3 + 3 and by_task["evaluate"] == 5 + by_task["train"]
    assert by_task["assess"] == 3
    for receipt in receipts:
        payload = verify_receipt(
            receipt.payload,
            receipt.signature,
            keys[receipt.company_id],
            company=receipt.company_id,
            job=job_id,
            round=receipt.round,
            task=receipt.task,
        )
        assert payload.rows > 0
    # and a receipt does not verify under another company's key
    other = next(c for c in keys if c != receipts[0].company_id)
    assert not identity.verify(keys[other], receipts[0].payload.encode(), receipts[0].signature)
    actions = [r["action"] for r in records]
    for expected in ("decision.submit_job", "receipt.recorded", "round.completed", "model.trained"):
        assert expected in actions
    report = get_governance(sandbox_home).ledger.verify()
    assert report.ok and report.attested_size == report.size


def test_too_few_left_after_a_revocation_stops_the_job_and_says_why(
    sandbox_home: Settings, engine
) -> None:  # type: ignore[no-untyped-def]
    members = companies(sandbox_home, ["Construction", "Retail trade", "Transportation"])
    job_id = filed_job(sandbox_home, members, rounds=3)

    def revoke() -> None:
        revoke_consent(
            get_governance(sandbox_home),
            members[2],
            consent_of(engine, members[2]),
            node_dir=sandbox_home.company_dir(members[2]),
        )

    outcome = run_on_simulation(sandbox_home, job_id, progress=AfterRound(1, revoke))
    assert outcome["status"] == "stopped"
    assert "fewer than the minimum 3" in outcome["reason"]
    rounds = job_store.rounds_of(engine, job_id)
    assert [(r.number, r.status) for r in rounds] == [(1, "completed"), (2, "failed")]
    actions = [r["action"] for r in ledger_records(sandbox_home)]
    assert "round.failed" in actions and actions[-1] == "job.stopped"


def test_the_minimum_a_run_states_is_the_one_the_policy_decided(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A spec that asks for 2 companies in a tier whose rule asks for 3: the run checks, and
    its stop message states, 3 (the warrant's rule), not the spec's 2."""
    from coordinator.context import RunContext
    from sandbox.protocol.jobspec import JobSpec
    from sandbox.protocol.warrant import Warrant, WarrantDataset, WarrantRules
    from sandbox.registry.models import Job

    spec = JobSpec(purpose="p", companies=("a", "b", "c"), min_participants=2)
    rules = WarrantRules(requires_dp=True, requires_secure_aggregation=True,
                         dp_epsilon_cap=3.0, min_participants=3)  # fmt: skip
    warrant = Warrant(job_id="job-1", engineer="eve", spec=spec.model_dump(mode="json"),
                      spec_hash=spec.spec_hash, code_bundle="0" * 64, tier="high", rules=rules,
                      policy_set="0" * 64, admission_index=0, issued_at="unsigned",
                      datasets=tuple(WarrantDataset(company=c, dataset=f"{c}/d", industry="x",
                                                    grade="core", personal_data=True)
                                     for c in spec.companies))  # fmt: skip
    job = Job(id="job-1", purpose="p", spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash,
              filed_by="eve", status="running", warrant=warrant.text())  # fmt: skip
    fields = dict.fromkeys(RunContext.__dataclass_fields__, None)
    ctx = RunContext(**{**fields, "job": job, "spec": spec})
    assert ctx.minimum == 3
    ctx.job = Job(**{**job.model_dump(), "warrant": None})
    assert ctx.minimum == 2
