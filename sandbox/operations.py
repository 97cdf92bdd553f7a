"""The governed operations of the sandbox: ask the policy, record, then act.

The CLI and the API call these and nothing lower, so every rule is enforced in one place:
each function builds the facts from the registry, asks the policy engine (the decision is
in the ledger before it is used), refuses with the policy's readable reasons when denied,
and records what was done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from policies.facts import (
    AuditLogFacts,
    AuditScope,
    CompanyFacts,
    ConsentFacts,
    DatasetFacts,
    EngineerFacts,
    RegistryFacts,
    RegulatorFacts,
)
from sandbox.data.validation import ValidatedTable
from sandbox.governance import (
    Annotation,
    Governance,
    company_facts,
    consent_facts,
    dataset_facts,
    job_world,
)
from sandbox.jobspec import JobSpec
from sandbox.ledger import Actor, LedgerRecord, Purpose, Resource
from sandbox.node import NodeHome
from sandbox.onboarding import Onboarded, onboard_company
from sandbox.registry import service
from sandbox.registry.errors import Conflict, Forbidden, Invalid, NotFound
from sandbox.registry.models import Consent, Job, utcnow
from sandbox.registry.service import as_utc, dataset_id, new_id


def denied(decision: Any) -> Forbidden:
    reasons = " ".join(decision.reasons) or "denied by policy"
    return Forbidden(f"{reasons} (decision {decision.decision_id})")


@dataclass(frozen=True)
class FiledJob:
    job: Job
    decision_id: str
    allowed: bool
    reasons: tuple[str, ...]


# ------------------------------------------------------------------------- companies
def join(
    gov: Governance,
    node_dir: Path,
    company_id: str,
    name: str,
    table: ValidatedTable,
    purposes: tuple[str, ...] = (),
    valid_for: timedelta = timedelta(days=365),
    seed: int = 0,
) -> Onboarded:
    """A company joins with a dataset and consents: each step decided, all or nothing."""
    manifest = table.manifest
    company = CompanyFacts(id=company_id, industry=manifest.industry)
    decision = gov.decide(
        company,
        "join",
        RegistryFacts(),
        annotation=Annotation(resource_kind="company", resource_id=company_id, owner=company_id),
    )
    if not decision.allowed:
        raise denied(decision)
    ds_id = dataset_id(company_id, manifest.name)
    dataset = DatasetFacts(
        id=ds_id,
        company=company_id,
        industry=manifest.industry,
        grade=manifest.grade,
        personal_data=manifest.personal_data,
    )
    decision = gov.decide(
        company,
        "register_dataset",
        dataset,
        annotation=Annotation(owner=company_id, grade=manifest.grade),
    )
    if not decision.allowed:
        raise denied(decision)
    expires = datetime.now(UTC) + valid_for
    for purpose in purposes:
        consent = ConsentFacts(
            id=f"new-consent-{purpose}",
            company=company_id,
            dataset=ds_id,
            purpose=purpose,
            expires_at=expires,
        )
        decision = gov.decide(
            company,
            "grant_consent",
            consent,
            entities=[dataset],
            annotation=Annotation(
                owner=company_id, purpose=purpose, consent_id="pending", resource_kind="consent"
            ),
        )
        if not decision.allowed:
            raise denied(decision)
    done = onboard_company(gov.engine, node_dir, company_id, name, table, purposes, valid_for, seed)
    records = [
        LedgerRecord(
            action="company.joined",
            actor=Actor(principal=company_id, role="company", organisation=company_id),
            resource=Resource(kind="company", id=company_id, owner=company_id),
            details={"public_key_id": done.company.public_key and _key_id(done.company.public_key)},
        ),
        LedgerRecord(
            action="dataset.registered",
            actor=Actor(principal=company_id, role="company", organisation=company_id),
            resource=Resource(
                kind="dataset",
                id=done.dataset.id,
                owner=company_id,
                content_hash=done.dataset.content_hash,
                grade=done.dataset.grade,  # type: ignore[arg-type]
            ),
            details={"rows": done.dataset.row_count, "personal_data": done.dataset.personal_data},
        ),
    ]
    records += [
        _consent_record("consent.granted", c, done.dataset.content_hash) for c in done.consents
    ]
    gov.record_many(records)
    return done


def _key_id(public_key: str) -> str:
    from sandbox.identity import key_id

    return key_id(public_key)


def _consent_record(action: str, consent: Consent, content_hash: str | None = None) -> LedgerRecord:
    return LedgerRecord(
        action=action,
        actor=Actor(principal=consent.company_id, role="company", organisation=consent.company_id),
        resource=Resource(kind="consent", id=consent.id, owner=consent.company_id),
        purpose=Purpose(name=consent.purpose, legal_basis="consent", consent_id=consent.id),
        details={
            "dataset": consent.dataset_id,
            "expires": as_utc(consent.expires_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )


def grant_consent(
    gov: Governance,
    company_id: str,
    dataset: str,
    purpose: str,
    valid_for: timedelta = timedelta(days=365),
    node_dir: Path | None = None,
) -> Consent:
    """Grant consent; the company's own node record is updated when its folder is here."""
    company = company_facts(service.get_company(gov.engine, company_id))
    ds = service.get_dataset(gov.engine, company_id, dataset)
    consent_id = new_id("consent")
    facts = ConsentFacts(
        id=consent_id,
        company=company_id,
        dataset=ds.id,
        purpose=purpose,
        expires_at=datetime.now(UTC) + valid_for,
    )
    decision = gov.decide(
        company,
        "grant_consent",
        facts,
        entities=[dataset_facts(ds)],
        annotation=Annotation(owner=company_id, purpose=purpose, consent_id=consent_id),
    )
    if not decision.allowed:
        raise denied(decision)
    consent = service.grant_consent(
        gov.engine, company_id, dataset, purpose, valid_for, consent_id=consent_id
    )
    _node_update(node_dir, lambda node: node.record_grant(_local(consent, dataset)))
    gov.record(_consent_record("consent.granted", consent))
    return consent


def revoke_consent(
    gov: Governance,
    company_id: str,
    consent_id: str,
    reason: str = "",
    node_dir: Path | None = None,
) -> Consent:
    """Revoke consent: the next round of any job using it goes on without this company."""
    company = company_facts(service.get_company(gov.engine, company_id))
    with service.session_scope(gov.engine) as session:
        consent = session.get(Consent, consent_id)
    if consent is None or consent.company_id != company_id:
        raise NotFound(f"company {company_id!r} holds no consent {consent_id!r}")
    ds = service.get_dataset(gov.engine, company_id, consent.dataset_id.split("/", 1)[1])
    decision = gov.decide(
        company,
        "revoke_consent",
        consent_facts(consent),
        entities=[dataset_facts(ds)],
        annotation=Annotation(owner=company_id, purpose=consent.purpose, consent_id=consent_id),
    )
    if not decision.allowed:
        raise denied(decision)
    revoked = service.revoke_consent(gov.engine, company_id, consent_id, reason)
    _node_update(
        node_dir, lambda node: node.record_revocation(consent_id, as_utc(revoked.revoked_at))
    )  # type: ignore[arg-type]
    gov.record(_consent_record("consent.revoked", revoked))
    return revoked


def _local(consent: Consent, dataset: str):  # type: ignore[no-untyped-def]
    from sandbox.node import LocalConsent

    return LocalConsent(consent.id, dataset, consent.purpose, as_utc(consent.expires_at))


def _node_update(node_dir: Path | None, change) -> None:  # type: ignore[no-untyped-def]
    """Apply ``change`` to the company's node record when the node folder is on this machine
    (simulated companies; a company's own CLI). Elsewhere the company's node tooling does it."""
    if node_dir is not None and (node_dir / "node.json").exists():
        change(NodeHome(node_dir))


# ------------------------------------------------------------------------------ jobs
def file_job(gov: Governance, spec: JobSpec, engineer: str, job_id: str | None = None) -> FiledJob:
    """File a job: admission is decided by policy. An admitted job of the high tier (or with
    important-grade data) waits for a regulator's approval before it may run."""
    job_id = job_id or new_id("job")
    world = job_world(gov.engine, job_id, spec, engineer, approved=False)
    missing = sorted(set(spec.companies) - set(world.companies))
    if missing:
        raise Invalid(f"these companies are not in the registry: {', '.join(missing)}")
    without = sorted(c for c in spec.companies if f"{c}/{spec.dataset}" not in world.datasets)
    if without:
        raise Invalid(f"these companies have no dataset {spec.dataset!r}: {', '.join(without)}")
    tier = gov.job_tier(list(world.datasets.values()))
    decision = gov.decide(
        EngineerFacts(engineer),
        "submit_job",
        world.job,
        entities=world.entities,
        annotation=Annotation(
            job_id=job_id,
            purpose=spec.purpose,
            consent_id="per-participant",
            participants=spec.companies,
        ),
    )
    grades = {d.grade for d in world.datasets.values()}
    if not decision.allowed:
        status = "denied"
    elif tier == "high" or "important" in grades:
        status = "awaiting_approval"
    else:
        status = "admitted"
    job = service.file_job(gov.engine, spec, filed_by=engineer, job_id=job_id)
    job = service.set_job_status(
        gov.engine,
        job.id,
        status,
        reason=" ".join(decision.reasons) if not decision.allowed else None,
        risk_tier=tier,
        admission_decision=decision.decision_id,
    )
    gov.record(
        LedgerRecord(
            action="job.filed",
            actor=Actor(principal=engineer, role="engineer"),
            resource=Resource(kind="job", id=job.id),
            purpose=Purpose(name=spec.purpose, legal_basis="consent", consent_id="per-participant"),
            job_id=job.id,
            participants=list(spec.companies),
            details={"spec_sha256": job.spec_hash, "tier": tier, "status": status},
        )
    )
    return FiledJob(
        job=job,
        decision_id=decision.decision_id,
        allowed=decision.allowed,
        reasons=decision.reasons,
    )


def _decide_approval(gov: Governance, regulator: str, job: Job) -> Any:
    spec = service.job_spec(job)
    world = job_world(gov.engine, job.id, spec, job.filed_by, approved=False)
    return gov.decide(
        RegulatorFacts(regulator),
        "approve_job",
        world.job,
        entities=world.entities,
        annotation=Annotation(job_id=job.id, purpose=spec.purpose, consent_id="per-participant"),
    )


def approve_job(gov: Governance, regulator: str, job_id: str, note: str = "") -> Job:
    job = service.get_job(gov.engine, job_id)
    if job.status != "awaiting_approval":
        raise Conflict(f"job {job_id} is {job.status}, not awaiting approval")
    decision = _decide_approval(gov, regulator, job)
    if not decision.allowed:
        raise denied(decision)
    job = service.set_job_status(
        gov.engine,
        job_id,
        "approved",
        approved_by=regulator,
        approved_at=utcnow(),
        approval_note=note[:2000] or None,
    )
    gov.record(
        LedgerRecord(
            action="job.approved",
            actor=Actor(principal=regulator, role="regulator"),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={"decision": decision.decision_id},
        )
    )
    return job


def reject_job(gov: Governance, regulator: str, job_id: str, reason: str) -> Job:
    if not reason.strip():
        raise Invalid("a rejection needs a reason")
    job = service.get_job(gov.engine, job_id)
    if job.status != "awaiting_approval":
        raise Conflict(f"job {job_id} is {job.status}, not awaiting approval")
    world = job_world(gov.engine, job.id, service.job_spec(job), job.filed_by, approved=False)
    decision = gov.decide(
        RegulatorFacts(regulator),
        "reject_job",
        world.job,
        entities=world.entities,
        annotation=Annotation(job_id=job_id),
    )
    if not decision.allowed:
        raise denied(decision)
    job = service.set_job_status(
        gov.engine,
        job_id,
        "rejected",
        reason=reason.strip()[:2000],
        approval_note=reason.strip()[:2000],
    )
    gov.record(
        LedgerRecord(
            action="job.rejected",
            actor=Actor(principal=regulator, role="regulator"),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={"decision": decision.decision_id},
        )
    )
    return job


RUNNABLE = ("admitted", "approved", "running", "stopped", "failed")


def check_runnable(job: Job) -> None:
    if job.status not in RUNNABLE:
        hint = {
            "awaiting_approval": "it awaits a regulator's approval",
            "denied": "its admission was denied",
            "rejected": "a regulator rejected it",
            "completed": "it has completed",
        }.get(job.status, f"it is {job.status}")
        raise Conflict(f"job {job.id} cannot run: {hint}")


# ----------------------------------------------------------------------------- audit
def authorize_audit_read(
    gov: Governance,
    role: str,
    principal: str,
    company: str | None = None,
    job: str | None = None,
    export: bool = False,
) -> Any:
    """Decide (and record) an audit read; raises Forbidden when denied."""
    from sandbox.governance import principal_facts

    who = principal_facts(role, principal, gov.engine)
    scope_company = company_facts(service.get_company(gov.engine, company)) if company else None
    scope_job = None
    if job:
        filed = service.get_job(gov.engine, job)
        scope_job = job_world(
            gov.engine,
            filed.id,
            service.job_spec(filed),
            filed.filed_by,
            approved=filed.approved_at is not None,
        ).job
    decision = gov.decide(
        who,
        "export_audit" if export else "read_audit",
        AuditLogFacts(),
        AuditScope(company=scope_company, job=scope_job),
        annotation=Annotation(owner=company, job_id=job),
    )
    if not decision.allowed:
        raise denied(decision)
    return decision
