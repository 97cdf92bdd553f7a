"""Every rule through the real enforcement points: the governed operations the CLI and the API
call, the decision in the ledger, the readable reason beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from policies.facts import EngineerFacts, RegulatorFacts
from policies.policyset import DEFAULT_POLICY_DIR, policy_set_hash
from sandbox import identity
from sandbox.config import Settings
from sandbox.data import census
from sandbox.errors import Conflict, Forbidden, Invalid
from sandbox.governance import Governance, get_governance, reasons_digest
from sandbox.ledger import LedgerWriteError
from sandbox.node.home import NodeHome
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry.models import Company, PolicyDecision
from sandbox.registry.policy_sets import sign_policy_set
from sandbox.services.audit import authorize_audit_read
from sandbox.services.companies import join
from sandbox.services.consents import grant_consent, revoke_consent
from sandbox.services.jobs import approve_as_installation_regulator, file_job, reject_job
from sandbox.services.principals import acting_as
from sandbox.services.runs import check_runnable

PURPOSE = "income-prediction"
LOW = ["Construction", "Retail trade", "Transportation"]
HIGH = ["Hospital services", "Finance insurance and real estate", "Construction"]


def company(settings: Settings, industry: str, grade: str = "general", purposes=(PURPOSE,)) -> str:  # type: ignore[no-untyped-def]
    from sandbox.data.validation import validate_frame

    company_id = census.slug(industry)
    table = validate_frame(
        census.industry_frame(industry, rows=60, seed=0), census.manifest_for(industry, grade)
    )
    join(
        get_governance(settings),
        settings.company_dir(company_id),
        company_id,
        industry,
        table,
        purposes,
    )
    return company_id


def spec(companies: list[str], **privacy: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "purpose": PURPOSE,
            "companies": companies,
            "rounds": 2,
            "min_participants": min(3, len(companies)),
            "privacy": privacy or {"dp": {"epsilon": 2.0}},
        }
    )


def ledger_decisions(gov: Governance, action: str) -> list[dict[str, Any]]:
    out = []
    for entry in gov.ledger.iter_entries():
        record = json.loads(entry.entry)
        if record["action"] == f"decision.{action}":
            out.append(record)
    return out


def test_admission_is_decided_recorded_and_filed(sandbox_home: Settings) -> None:
    companies = [company(sandbox_home, i) for i in LOW]
    gov = get_governance(sandbox_home)
    filed = file_job(gov, spec(companies), EngineerFacts("eve"))
    assert filed.allowed and filed.job.status == "admitted" and filed.job.risk_tier == "low"
    check_runnable(filed.job)
    [decision] = ledger_decisions(gov, "submit_job")
    assert decision["decision"]["allowed"] is True
    assert decision["job_id"] == filed.job.id
    assert decision["decision"]["decision_id"] == filed.decision_id
    filed_records = [json.loads(e.entry) for e in gov.ledger.iter_entries()]
    [record] = [r for r in filed_records if r["action"] == "job.filed"]
    assert record["details"]["spec_sha256"] == filed.job.spec_hash
    assert gov.ledger.verify().ok


DENIALS = {
    "personal data without differential privacy": (
        LOW,
        {"secure_aggregation": False},
        "tier.low.personal_data_needs_dp",
    ),
    "high tier without secure aggregation": (
        HIGH,
        {"dp": {"epsilon": 2.0}},
        "tier.high.secure_aggregation",
    ),
    "high tier above its epsilon cap": (
        HIGH,
        {"secure_aggregation": True, "dp": {"epsilon": 50.0}},
        "admission.dp_epsilon_cap",
    ),
    "high tier with two participants": (
        HIGH[:2],
        {"secure_aggregation": True, "dp": {"epsilon": 2.0}},
        "admission.min_participants",
    ),
}


@pytest.mark.parametrize("case", sorted(DENIALS))
def test_admission_denials_name_their_rule(case: str, sandbox_home: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    industries, privacy, rule = DENIALS[case]
    companies = [company(sandbox_home, i) for i in industries]
    gov = get_governance(sandbox_home)
    filed = file_job(gov, spec(companies, **privacy), EngineerFacts("eve"))
    assert not filed.allowed and filed.job.status == "denied"
    assert filed.job.status_reason and filed.job.status_reason == " ".join(filed.reasons)
    with pytest.raises(Conflict, match="its admission was denied"):
        check_runnable(filed.job)
    [record] = ledger_decisions(gov, "submit_job")
    assert record["decision"]["allowed"] is False and rule in record["decision"]["policies"]
    with Session(engine) as session:
        note = session.get(PolicyDecision, filed.decision_id)
    assert note is not None and rule in note.policies
    # the readable reasons are bound to the ledger entry by their hash
    assert record["details"]["reasons_sha256"] == reasons_digest(note.reasons)


def test_core_grade_is_never_admitted(sandbox_home: Settings) -> None:
    companies = [company(sandbox_home, LOW[0], grade="core")] + [
        company(sandbox_home, i) for i in LOW[1:]
    ]
    filed = file_job(get_governance(sandbox_home), spec(companies), EngineerFacts("eve"))
    assert not filed.allowed
    assert any("core data is never admitted" in r for r in filed.reasons)


def test_purpose_must_be_covered_by_every_participants_live_consent(sandbox_home: Settings) -> None:
    companies = [company(sandbox_home, LOW[0], purposes=("marketing",))] + [
        company(sandbox_home, i) for i in LOW[1:]
    ]
    filed = file_job(get_governance(sandbox_home), spec(companies), EngineerFacts("eve"))
    assert not filed.allowed
    assert any(companies[0] in r and "live consent" in r for r in filed.reasons)


def test_high_tier_and_important_data_wait_for_a_regulator(sandbox_home: Settings) -> None:
    companies = [company(sandbox_home, i) for i in HIGH]
    gov = get_governance(sandbox_home)
    filed = file_job(
        gov, spec(companies, secure_aggregation=True, dp={"epsilon": 2.0}), EngineerFacts("eve")
    )
    assert (
        filed.allowed and filed.job.status == "awaiting_approval" and filed.job.risk_tier == "high"
    )
    with pytest.raises(Conflict, match="awaits a regulator's approval"):
        check_runnable(filed.job)
    # An engineer is not a regulator: the attempt is denied and recorded.
    from sandbox.governance import job_world

    world = job_world(
        gov.engine,
        filed.job.id,
        spec(companies, secure_aggregation=True, dp={"epsilon": 2.0}),
        "eve",
        False,
    )
    attempt = gov.decide(EngineerFacts("eve"), "approve_job", world.job, entities=world.entities)
    assert not attempt.allowed
    approved = approve_as_installation_regulator(gov, filed.job.id, "reviewed the filed spec")
    assert approved.status == "approved" and approved.approved_by == "regulator"
    check_runnable(approved)
    with pytest.raises(Conflict):
        approve_as_installation_regulator(gov, filed.job.id, "")
    assert [r["decision"]["allowed"] for r in ledger_decisions(gov, "approve_job")] == [False, True]


def test_important_grade_needs_approval_and_rejection_needs_a_reason(
    sandbox_home: Settings,
) -> None:
    companies = [company(sandbox_home, LOW[0], grade="important")] + [
        company(sandbox_home, i) for i in LOW[1:]
    ]
    gov = get_governance(sandbox_home)
    filed = file_job(gov, spec(companies), EngineerFacts("eve"))
    assert filed.job.status == "awaiting_approval" and filed.job.risk_tier == "medium"
    with pytest.raises(Invalid, match="needs a reason"):
        reject_job(gov, RegulatorFacts("reg-1"), filed.job.id, "  ")
    rejected = reject_job(gov, RegulatorFacts("reg-1"), filed.job.id, "the purpose is too broad")
    assert rejected.status == "rejected" and rejected.approval_note == "the purpose is too broad"
    with pytest.raises(Conflict, match="a regulator rejected it"):
        check_runnable(rejected)


def test_if_the_ledger_cannot_be_written_the_answer_is_deny(
    sandbox_home: Settings, engine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    gov = get_governance(sandbox_home)

    def broken(record):  # type: ignore[no-untyped-def]
        raise LedgerWriteError("disk full")

    monkeypatch.setattr(gov.ledger, "append", broken)
    with pytest.raises(
        Forbidden, match="could not be written to the audit ledger, so the request is denied"
    ):
        company(sandbox_home, LOW[0])
    with Session(engine) as session:
        assert session.exec(select(Company)).all() == []
    assert not sandbox_home.company_dir(census.slug(LOW[0])).exists()


def test_revocation_is_decided_recorded_and_reaches_the_node(sandbox_home: Settings) -> None:
    company_id = company(sandbox_home, LOW[0])
    gov = get_governance(sandbox_home)
    node = NodeHome(sandbox_home.company_dir(company_id))
    extra = grant_consent(gov, company_id, "census", "fraud-model", node_dir=node.folder)
    assert any(c.consent_id == extra.id and c.revoked_at is None for c in node.consents())
    revoked = revoke_consent(gov, company_id, extra.id, "no longer needed", node_dir=node.folder)
    assert revoked.revoked_at is not None
    assert any(c.consent_id == extra.id and c.revoked_at is not None for c in node.consents())
    actions = [json.loads(e.entry)["action"] for e in gov.ledger.iter_entries()]
    assert actions.count("decision.revoke_consent") == 1 and "consent.revoked" in actions
    other = company(sandbox_home, LOW[1])
    with pytest.raises(Forbidden, match="not company"):
        _revoke_as(gov, other, extra.id)


def _revoke_as(gov: Governance, principal: str, consent_id: str) -> None:
    """A company trying to revoke another company's consent, through the decision point."""
    from sandbox.governance import company_facts, consent_facts
    from sandbox.registry import companies as company_store
    from sandbox.registry.models import Consent
    from sandbox.services.base import denied

    with Session(gov.engine) as session:
        consent = session.get(Consent, consent_id)
    decision = gov.decide(
        company_facts(company_store.get_company(gov.engine, principal)),
        "revoke_consent",
        consent_facts(consent),
    )
    if not decision.allowed:
        raise denied(decision)


def test_a_company_reads_only_its_own_audit_entries(sandbox_home: Settings) -> None:
    a, b = (company(sandbox_home, i) for i in LOW[:2])
    gov = get_governance(sandbox_home)
    assert authorize_audit_read(gov, acting_as(gov, "company", a), company=a).allowed
    with pytest.raises(Forbidden, match="only the audit entries about itself"):
        authorize_audit_read(gov, acting_as(gov, "company", a), company=b)
    with pytest.raises(Forbidden):
        authorize_audit_read(gov, acting_as(gov, "company", a))
    assert authorize_audit_read(gov, acting_as(gov, "regulator", "reg-1")).allowed
    assert [r["decision"]["allowed"] for r in ledger_decisions(gov, "read_audit")] == [
        True,
        False,
        False,
        True,
    ]


def test_a_tampered_policy_file_keeps_the_old_set_and_is_recorded(
    sandbox_home: Settings, tmp_path: Path
) -> None:
    first = Governance(sandbox_home)
    shipped = first.pdp.active_hash
    assert shipped == policy_set_hash(DEFAULT_POLICY_DIR)
    tampered = tmp_path / "policies"
    shutil.copytree(
        DEFAULT_POLICY_DIR, tampered, ignore=shutil.ignore_patterns("__pycache__", "*.py", "tests")
    )
    tier_high = tampered / "tier_high.cedar"
    tier_high.write_text(tier_high.read_text().replace("!resource.secure_aggregation", "false"))
    second = Governance(sandbox_home, policy_dir=tampered)
    assert second.pdp.active_hash == shipped, "the tampered set must not become active"
    failed = [r for r in second.activations if not r.activated]
    assert len(failed) == 1 and failed[0].policy_set_hash == policy_set_hash(tampered)
    records = ledger_decisions(second, "activate_policy")
    assert [r["decision"]["allowed"] for r in records] == [True, True, False]
    assert "baseline.policy.regulator_signature" in records[-1]["decision"]["policies"]
    # Signed by the regulator, the same change becomes active.
    regulator = identity.sandbox_key(sandbox_home.keys_dir, "regulator")
    signature = sign_policy_set(regulator, tampered)
    second.policy_store.file_signature(policy_set_hash(tampered), signature)
    third = Governance(sandbox_home, policy_dir=tampered)
    assert third.pdp.active_hash == policy_set_hash(tampered)
