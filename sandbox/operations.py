"""The governed operations of the sandbox: ask the policy, record, then act.

The CLI and the API call these and nothing lower, so every rule is enforced in one place:
each function builds the facts from the registry, asks the policy engine (the decision is
in the ledger before it is used), refuses with the policy's readable reasons when denied,
and records what was done.

Who acts: the API passes the authenticated principal's policy facts (``actor``); the CLI,
which runs on the sandbox's own machine, acts as the company, engineer or regulator it names.
Reads are governed too: every read of a company's data, of a job or of the ledger is a
recorded decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from policies.engine import Decision
from policies.facts import (
    AccountFacts,
    AuditLogFacts,
    AuditScope,
    CompanyFacts,
    ConsentFacts,
    DatasetFacts,
    EngineerFacts,
    JobListScope,
    OperatorFacts,
    RegistryFacts,
    RegulatorFacts,
)
from sandbox import principals
from sandbox.data.manifest import DatasetManifest
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
from sandbox.ledger.records import MAX_PARTICIPANTS
from sandbox.node import NodeHome
from sandbox.onboarding import Onboarded, onboard_company
from sandbox.principals import Who
from sandbox.registry import service
from sandbox.registry.errors import Conflict, Forbidden, Invalid, NotFound
from sandbox.registry.models import (
    ApiToken,
    Company,
    Consent,
    Dataset,
    Job,
    Principal,
    Receipt,
    utcnow,
)
from sandbox.registry.service import as_utc, check_id, dataset_id, new_id

PrincipalFacts = CompanyFacts | EngineerFacts | RegulatorFacts | OperatorFacts
_RECORD_ROLES = {
    "Company": "company",
    "Engineer": "engineer",
    "Regulator": "regulator",
    "Operator": "operator",
}


def denied(decision: Any) -> Forbidden:
    reasons = " ".join(decision.reasons) or "denied by policy"
    return Forbidden(
        f"{reasons} (decision {decision.decision_id})",
        decision_id=decision.decision_id,
        reasons=tuple(decision.reasons),
    )


def authorize(
    gov: Governance,
    principal: Any,
    action: str,
    resource: Any,
    context: Any = None,
    entities: Sequence[Any] = (),
    annotation: Annotation | None = None,
) -> Decision:
    """Decide (and record); raise Forbidden with the policy's reasons when denied."""
    decision = gov.decide(principal, action, resource, context, entities, annotation)
    if not decision.allowed:
        raise denied(decision)
    return decision


def actor_of(principal: Any) -> Actor:
    """The ledger's actor for a principal's policy facts."""
    role = _RECORD_ROLES[principal.KIND]
    return Actor(
        principal=principal.id,
        role=role,  # type: ignore[arg-type]
        organisation=principal.id if role == "company" else None,
    )


def _as(principal: str | Any, kind: type) -> Any:
    """A principal named by id (the CLI) or given as policy facts (the API)."""
    return kind(principal) if isinstance(principal, str) else principal


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
    _decide_enrolment(gov, company, manifest, purposes, datetime.now(UTC) + valid_for)
    done = onboard_company(gov.engine, node_dir, company_id, name, table, purposes, valid_for, seed)
    gov.record_many(_enrolment_records(done.company, done.dataset, done.consents))
    return done


@dataclass(frozen=True)
class Enrolled:
    company: Company
    dataset: Dataset | None
    consents: list[Consent]


def enrol(
    gov: Governance,
    company_id: str,
    name: str,
    industry: str,
    public_key: str,
    manifest: DatasetManifest | None = None,
    purposes: tuple[str, ...] = (),
    valid_for: timedelta = timedelta(days=365),
    node_dir: Path | None = None,
) -> Enrolled:
    """A company joins with its public key and, optionally, the manifest its own node filled in
    (rows never leave the company) and consents over that dataset: each step decided, all or
    nothing. The API's join; :func:`join` is the same for a company whose node is here. The
    consents are also written to the company's own node record when its folder is on this
    machine (elsewhere the company's node tooling records them)."""
    check_id(company_id, "company id")
    for purpose in purposes:
        check_id(purpose, "purpose")
    if len(set(purposes)) != len(purposes):
        raise Invalid("a purpose is named twice")
    if purposes and manifest is None:
        raise Invalid("consents cover a dataset: give the dataset's manifest with the purposes")
    if manifest is not None:
        service.check_filled(manifest)
        if manifest.industry != industry:
            raise Invalid(
                f"the manifest declares industry {manifest.industry!r}, the company "
                f"{industry!r}; they must agree"
            )
    company = CompanyFacts(id=company_id, industry=industry)
    _decide_enrolment(gov, company, manifest, purposes, datetime.now(UTC) + valid_for)
    row = Company(id=company_id, name=name, industry=industry, public_key=public_key)
    if manifest is None:
        joined = service.join_company(gov.engine, company_id, name, industry, public_key)
        gov.record_many(_enrolment_records(joined, None, []))
        return Enrolled(joined, None, [])
    grants = service.new_grants(company_id, manifest.name, purposes, valid_for)
    joined, dataset, consents = service.enrol_company(gov.engine, row, manifest, grants)
    gov.record_many(_enrolment_records(joined, dataset, consents))
    for consent in consents:
        _node_update(node_dir, lambda node, c=consent: node.record_grant(_local(c, manifest.name)))
    return Enrolled(joined, dataset, consents)


def _new_dataset_facts(company_id: str, manifest: DatasetManifest) -> DatasetFacts:
    return DatasetFacts(
        id=dataset_id(company_id, manifest.name),
        company=company_id,
        industry=manifest.industry,
        grade=manifest.grade,
        personal_data=manifest.personal_data,
    )


def _decide_enrolment(
    gov: Governance,
    company: CompanyFacts,
    manifest: DatasetManifest | None,
    purposes: tuple[str, ...],
    expires: datetime,
) -> None:
    """The decisions of a join: joining, registering the dataset, each consent."""
    authorize(
        gov,
        company,
        "join",
        RegistryFacts(),
        annotation=Annotation(resource_kind="company", resource_id=company.id, owner=company.id),
    )
    if manifest is None:
        return
    dataset = _new_dataset_facts(company.id, manifest)
    authorize(
        gov,
        company,
        "register_dataset",
        dataset,
        annotation=Annotation(owner=company.id, grade=manifest.grade),
    )
    for purpose in purposes:
        consent = ConsentFacts(
            id=f"new-consent-{purpose}",
            company=company.id,
            dataset=dataset.id,
            purpose=purpose,
            expires_at=expires,
        )
        authorize(
            gov,
            company,
            "grant_consent",
            consent,
            entities=[dataset],
            annotation=Annotation(
                owner=company.id, purpose=purpose, consent_id="pending", resource_kind="consent"
            ),
        )


def _dataset_record(dataset: Dataset) -> LedgerRecord:
    return LedgerRecord(
        action="dataset.registered",
        actor=Actor(principal=dataset.company_id, role="company", organisation=dataset.company_id),
        resource=Resource(
            kind="dataset",
            id=dataset.id,
            owner=dataset.company_id,
            content_hash=dataset.content_hash,
            grade=dataset.grade,  # type: ignore[arg-type]
        ),
        details={"rows": dataset.row_count, "personal_data": dataset.personal_data},
    )


def _enrolment_records(
    company: Company, dataset: Dataset | None, consents: list[Consent]
) -> list[LedgerRecord]:
    records = [
        LedgerRecord(
            action="company.joined",
            actor=Actor(principal=company.id, role="company", organisation=company.id),
            resource=Resource(kind="company", id=company.id, owner=company.id),
            details={"public_key_id": company.public_key and _key_id(company.public_key)},
        )
    ]
    if dataset is not None:
        records.append(_dataset_record(dataset))
    records += [_consent_record("consent.granted", c) for c in consents]
    return records


def _company(gov: Governance, company_id: str, actor: Any) -> tuple[Company | None, Any, Any]:
    """The company (None if it is not in the registry), its policy facts, and who acts: the
    API's principal, or (the CLI) the company itself. For an id that is not in the registry
    the facts describe a company that is not there, so that the policy still decides whether
    the asker may learn that; the company itself, absent, cannot ask."""
    with service.session_scope(gov.engine) as session:
        company = session.get(Company, company_id)
    if company is None:
        if actor is None:
            raise NotFound(f"no company {company_id!r}")
        return None, CompanyFacts(id=company_id, industry="(not in the registry)"), actor
    facts = company_facts(company)
    return company, facts, actor or facts


def register_dataset(
    gov: Governance, company_id: str, manifest: DatasetManifest, actor: Any = None
) -> Dataset:
    """Register the manifest of a dataset the company's node has prepared (never its rows)."""
    _, _, actor = _company(gov, company_id, actor)
    service.check_filled(manifest)
    authorize(
        gov,
        actor,
        "register_dataset",
        _new_dataset_facts(company_id, manifest),
        annotation=Annotation(owner=company_id, grade=manifest.grade),
    )
    dataset = service.register_dataset(gov.engine, company_id, manifest)
    gov.record(_dataset_record(dataset))
    return dataset


def _key_id(public_key: str) -> str:
    from sandbox.identity import key_id

    return key_id(public_key)


def _consent_record(action: str, consent: Consent) -> LedgerRecord:
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


def _hidden(gov: Governance, actor: Any, company: CompanyFacts, missing: str) -> Exception:
    """What to answer when a company's dataset or consent is not there: NotFound, but only to
    whom the policy lets read that company's data; anyone else is denied (and recorded), so
    that asking cannot reveal which datasets or consents another company holds."""
    decision = gov.decide(
        actor,
        "read_company_data",
        company,
        annotation=Annotation(
            owner=company.id,
            resource_kind="company",
            resource_id=company.id,
            details={"view": "lookup"},
        ),
    )
    return NotFound(missing) if decision.allowed else denied(decision)


def grant_consent(
    gov: Governance,
    company_id: str,
    dataset: str,
    purpose: str,
    valid_for: timedelta = timedelta(days=365),
    node_dir: Path | None = None,
    actor: Any = None,
) -> Consent:
    """Grant consent; the company's own node record is updated when its folder is here.
    ``actor`` is who asks (the API's principal); by default the company itself."""
    check_id(purpose, "purpose")
    if valid_for <= timedelta(0):
        raise Invalid("a consent must be valid for a positive period")
    _, facts, company = _company(gov, company_id, actor)
    with service.session_scope(gov.engine) as session:
        ds = session.get(Dataset, dataset_id(company_id, dataset))
    if ds is None:
        raise _hidden(gov, company, facts, f"company {company_id!r} has no dataset {dataset!r}")
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
    gov.record(_consent_record("consent.granted", consent))
    _node_update(node_dir, lambda node: node.record_grant(_local(consent, dataset)))
    return consent


def revoke_consent(
    gov: Governance,
    company_id: str,
    consent_id: str,
    reason: str = "",
    node_dir: Path | None = None,
    actor: Any = None,
) -> Consent:
    """Revoke consent: the next round of any job using it goes on without this company.
    ``actor`` is who asks (the API's principal); by default the company itself."""
    _, facts, company = _company(gov, company_id, actor)
    with service.session_scope(gov.engine) as session:
        consent = session.get(Consent, consent_id)
    if consent is None or consent.company_id != company_id:
        raise _hidden(
            gov, company, facts, f"company {company_id!r} holds no consent {consent_id!r}"
        )
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
    # The company's own record first: a revocation there only makes its node more careful.
    _node_update(node_dir, lambda node: _mirror_revocation(node, consent, utcnow()))
    revoked = service.revoke_consent(gov.engine, company_id, consent_id, reason)
    gov.record(_consent_record("consent.revoked", revoked))
    return revoked


def _local(consent: Consent, dataset: str, revoked_at: datetime | None = None):  # type: ignore[no-untyped-def]
    from sandbox.node import LocalConsent

    return LocalConsent(
        consent.id, dataset, consent.purpose, as_utc(consent.expires_at), revoked_at
    )


def _mirror_revocation(node: NodeHome, consent: Consent, when: datetime) -> None:
    """Record a revocation at the company's node; a consent the node never recorded (granted
    without its folder at hand) is recorded there as granted and revoked."""
    if any(c.consent_id == consent.id for c in node.consents()):
        node.record_revocation(consent.id, when)
    else:
        node.record_grant(_local(consent, consent.dataset_id.split("/", 1)[1], when))


def _node_update(node_dir: Path | None, change) -> None:  # type: ignore[no-untyped-def]
    """Apply ``change`` to the company's node record when the node folder is on this machine
    (simulated companies; a company's own CLI). Elsewhere the company's node tooling does it."""
    if node_dir is not None and (node_dir / "node.json").exists():
        change(NodeHome(node_dir))


# ------------------------------------------------------------------------------ jobs
def file_job(
    gov: Governance, spec: JobSpec, engineer: str | Any, job_id: str | None = None
) -> FiledJob:
    """File a job: admission is decided by policy. An admitted job of the high tier (or with
    important-grade data) waits for a regulator's approval before it may run. ``engineer``
    is the filer's id (the CLI) or policy facts (the API's principal, of whatever role: the
    policy decides). A filing is stored with its decision, admitted or not."""
    filer = _as(engineer, EngineerFacts)
    job_id = job_id or new_id("job")
    check_id(spec.purpose, "purpose")
    if len(spec.companies) > MAX_PARTICIPANTS:
        raise Invalid(f"a job names at most {MAX_PARTICIPANTS} companies")
    world = job_world(gov.engine, job_id, spec, filer.id, approved=False)
    missing = sorted(set(spec.companies) - set(world.companies))
    if missing:
        raise Invalid(f"these companies are not in the registry: {', '.join(missing)}")
    without = sorted(c for c in spec.companies if f"{c}/{spec.dataset}" not in world.datasets)
    if without:
        raise Invalid(f"these companies have no dataset {spec.dataset!r}: {', '.join(without)}")
    tier = gov.job_tier(list(world.datasets.values()))
    decision = gov.decide(
        filer,
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
    # The record is made (and validated) before anything is stored.
    record = LedgerRecord(
        action="job.filed",
        actor=actor_of(filer),
        resource=Resource(kind="job", id=job_id),
        purpose=Purpose(name=spec.purpose, legal_basis="consent", consent_id="per-participant"),
        job_id=job_id,
        participants=list(spec.companies),
        details={"spec_sha256": spec.spec_hash, "tier": tier, "status": status},
    )
    job = service.file_job(
        gov.engine,
        spec,
        filed_by=filer.id,
        job_id=job_id,
        status=status,
        status_reason=" ".join(decision.reasons) if not decision.allowed else None,
        risk_tier=tier,
        admission_decision=decision.decision_id,
    )
    gov.record(record)
    return FiledJob(
        job=job,
        decision_id=decision.decision_id,
        allowed=decision.allowed,
        reasons=decision.reasons,
    )


def _decide_approval(gov: Governance, regulator: Any, job: Job) -> Any:
    spec = service.job_spec(job)
    world = job_world(gov.engine, job.id, spec, job.filed_by, approved=False)
    return gov.decide(
        regulator,
        "approve_job",
        world.job,
        entities=world.entities,
        annotation=Annotation(job_id=job.id, purpose=spec.purpose, consent_id="per-participant"),
    )


def approve_job(gov: Governance, regulator: str | Any, job_id: str, note: str = "") -> Job:
    """A regulator approves a job that awaits approval (``regulator``: an id, or the API
    principal's policy facts)."""
    who = _as(regulator, RegulatorFacts)
    job = service.get_job(gov.engine, job_id)
    if job.status != "awaiting_approval":
        raise Conflict(f"job {job_id} is {job.status}, not awaiting approval")
    decision = _decide_approval(gov, who, job)
    if not decision.allowed:
        raise denied(decision)
    job = service.set_job_status(
        gov.engine,
        job_id,
        "approved",
        approved_by=who.id,
        approved_at=utcnow(),
        approval_note=note[:2000] or None,
    )
    gov.record(
        LedgerRecord(
            action="job.approved",
            actor=actor_of(who),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={"decision": decision.decision_id},
        )
    )
    return job


def reject_job(gov: Governance, regulator: str | Any, job_id: str, reason: str) -> Job:
    who = _as(regulator, RegulatorFacts)
    if not reason.strip():
        raise Invalid("a rejection needs a reason")
    job = service.get_job(gov.engine, job_id)
    if job.status != "awaiting_approval":
        raise Conflict(f"job {job_id} is {job.status}, not awaiting approval")
    world = job_world(gov.engine, job.id, service.job_spec(job), job.filed_by, approved=False)
    decision = gov.decide(
        who,
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
            actor=actor_of(who),
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
    scope_company = _company(gov, company, who)[1] if company else None
    scope_job = None
    entities: tuple[Any, ...] = ()
    if job:
        filed = service.get_job(gov.engine, job)
        world = job_world(
            gov.engine,
            filed.id,
            service.job_spec(filed),
            filed.filed_by,
            approved=filed.approved_at is not None,
        )
        scope_job, entities = world.job, world.entities
    decision = gov.decide(
        who,
        "export_audit" if export else "read_audit",
        AuditLogFacts(),
        AuditScope(company=scope_company, job=scope_job),
        entities=entities,
        annotation=Annotation(owner=company, job_id=job),
    )
    if not decision.allowed:
        raise denied(decision)
    return decision


def audit_entries(
    gov: Governance,
    who: Who,
    *,
    company: str | None = None,
    job: str | None = None,
    after_index: int = -1,
    limit: int = 100,
    since: datetime | None = None,
    until: datetime | None = None,
    principal: str | None = None,
    action: str | None = None,
    allowed: bool | None = None,
) -> list[Any]:
    """Ledger entries in index order, filtered; ``company`` and ``job`` are also the scope the
    policy judges (a company reads the entries about itself, an engineer those of their jobs).
    Entries are served as stored: one that was changed carries its ``problem``."""
    authorize_audit_read(gov, who.role, who.id, company=company, job=job)
    return gov.ledger.stored_entries(
        after_index=after_index,
        limit=limit,
        since=since,
        until=until,
        principal=principal,
        company=company,
        job_id=job,
        action=action,
        allowed=allowed,
    )


def audit_entry(
    gov: Governance, who: Who, index: int, company: str | None = None, job: str | None = None
) -> tuple[Any, Any, Any]:
    """One entry with its inclusion proof against the latest signed checkpoint (signed now if
    the latest does not cover the entry yet): ``(entry, proof, checkpoint)``.

    The entry is served as stored, even when it no longer matches its leaf hash: the proof
    comes from the stored tree, so whoever recomputes the leaf from the bytes sees the failure.
    When no signed checkpoint covers the entry and the log cannot sign one (it fails its
    integrity check), the read is refused as a conflict, with the reason."""
    from sandbox.ledger import EntryNotFound, LedgerIntegrityError

    authorize_audit_read(gov, who.role, who.id, company=company, job=job)
    found = gov.ledger.stored_entries(after_index=index - 1, limit=1, company=company, job_id=job)
    if not found or found[0].index != index:
        scope = " about company " + company if company else ""
        scope += " of job " + job if job else ""
        raise NotFound(f"no ledger entry at index {index}{scope}")
    try:
        return gov.ledger.prove_stored(index)
    except EntryNotFound as exc:
        raise NotFound(str(exc)) from exc
    except LedgerIntegrityError as exc:
        raise Conflict(
            f"no signed checkpoint covers entry {index} and the log refuses to sign one: {exc}"
        ) from exc


def audit_checkpoint(gov: Governance, who: Who) -> Any:
    """The latest signed checkpoint, signed now when the log has grown since."""
    authorize_audit_read(gov, who.role, who.id)
    return gov.ledger.checkpoint()


def audit_consistency(gov: Governance, who: Who, old_size: int, new_size: int) -> Any:
    """Proof that the tree of ``old_size`` entries is a prefix of that of ``new_size``."""
    authorize_audit_read(gov, who.role, who.id)
    size = gov.ledger.size
    if not 1 <= old_size <= new_size <= size:
        raise Invalid(
            f"sizes must satisfy 1 <= old_size <= new_size <= {size} (the log's size now); "
            f"got {old_size} and {new_size}"
        )
    return gov.ledger.consistency_proof(old_size, new_size)


def audit_verify(gov: Governance, who: Who) -> Any:
    """Recompute the whole ledger now (every hash, every checkpoint signature)."""
    authorize_audit_read(gov, who.role, who.id)
    return gov.ledger.verify()


def compliance_summary(gov: Governance, who: Who, job_id: str) -> Any:
    """A job's compliance summary, every fact with its ledger index (an audit read of the
    job's entries)."""
    from sandbox.reports.compliance import job_summary

    authorize_audit_read(gov, who.role, who.id, job=job_id)
    return job_summary(gov, job_id)


def compliance_report(gov: Governance, role: str, principal: str, job_id: str) -> Any:
    """A job's full compliance report (record of processing, data use, every decision, the
    release assessment, each line with its ledger index and covering checkpoint): an export
    of the job's audit entries, decided and recorded as such."""
    from sandbox.reports.document import build_report

    authorize_audit_read(gov, role, principal, job=job_id, export=True)
    return build_report(gov, job_id)


# ------------------------------------------------------------------------ starting jobs
def start_job(gov: Governance, actor: Any, job_id: str, launch: Callable[[str], None]) -> Job:
    """Start a job's run: decided by policy (who, and whether the job is approved where its
    tier asks), then the job is marked running (atomically: two starts cannot both win) and
    ``launch`` starts it. If ``launch`` fails, the job goes back to where it was."""
    job = _authorize_job(gov, actor, job_id, "start_job", Annotation(job_id=job_id))
    if job.status == "running":
        raise Conflict(
            f"job {job_id} is running already; if its run died, resume it on the sandbox's "
            f"machine with `sandbox job run {job_id}`"
        )
    check_runnable(job)
    if not service.begin_run(gov.engine, job_id, [s for s in RUNNABLE if s != "running"]):
        raise Conflict(f"job {job_id} was started by someone else just now")
    try:
        launch(job_id)
    except BaseException:
        service.set_job_status(gov.engine, job_id, job.status, started_at=job.started_at)
        raise
    gov.record(
        LedgerRecord(
            action="job.started",
            actor=actor_of(actor),
            resource=Resource(kind="job", id=job_id),
            job_id=job_id,
            details={"rounds_completed": job.rounds_completed},
        )
    )
    return service.get_job(gov.engine, job_id)


# -------------------------------------------------------------------------------- reads
def _view(view: str, **more: Any) -> Annotation:
    return Annotation(details={"view": view}, **more)


def read_registry(gov: Governance, actor: Any, view: str) -> None:
    """Decide a read of the registry as a whole (companies, principals, policy set)."""
    authorize(gov, actor, "read_registry", RegistryFacts(), annotation=_view(view))


def list_companies(gov: Governance, actor: Any) -> list[Company]:
    read_registry(gov, actor, "companies")
    return service.list_companies(gov.engine)


def company_data(gov: Governance, actor: Any, company_id: str, view: str) -> Company:
    """Decide a read of one company's data (profile, datasets, consents, receipts, spend)."""
    company, facts, actor = _company(gov, company_id, actor)
    authorize(
        gov,
        actor,
        "read_company_data",
        facts,
        annotation=_view(view, owner=company_id, resource_kind="company", resource_id=company_id),
    )
    if company is None:
        raise NotFound(f"no company {company_id!r}")
    return company


def company_datasets(gov: Governance, actor: Any, company_id: str) -> list[Dataset]:
    company_data(gov, actor, company_id, "datasets")
    return service.company_datasets(gov.engine, company_id)


def company_consents(gov: Governance, actor: Any, company_id: str) -> list[Consent]:
    company_data(gov, actor, company_id, "consents")
    return service.company_consents(gov.engine, company_id)


def company_receipts(
    gov: Governance, actor: Any, company_id: str, after_id: int = 0, limit: int = 100
) -> list[Receipt]:
    """Every use of the company's data: its signed receipts, in the order they arrived."""
    company_data(gov, actor, company_id, "receipts")
    return service.company_receipts(gov.engine, company_id, after_id, limit)


def company_spend(gov: Governance, actor: Any, company_id: str) -> list[service.JobSpend]:
    """The privacy budget the company has spent, per job."""
    company_data(gov, actor, company_id, "privacy_spend")
    return service.company_spend(gov.engine, company_id)


def list_jobs(
    gov: Governance,
    actor: Any,
    engineer: str | None = None,
    company: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first. ``engineer`` and ``company`` are the scope the policy judges: an
    engineer lists the jobs they filed, a company those it takes part in."""
    _authorize_job_list(gov, actor, engineer, company, "jobs")
    return service.list_jobs(gov.engine, engineer, company, status, offset, limit)


def job_counts(gov: Governance, actor: Any) -> dict[str, int]:
    """How many jobs are in each status: a listing of all jobs, decided as one."""
    _authorize_job_list(gov, actor, None, None, "job_counts")
    return service.count_jobs_by_status(gov.engine)


def _authorize_job_list(
    gov: Governance, actor: Any, engineer: str | None, company: str | None, view: str
) -> None:
    scope = JobListScope(
        engineer=EngineerFacts(engineer) if engineer is not None else None,
        company=_company(gov, company, actor)[1] if company else None,
    )
    authorize(
        gov, actor, "list_jobs", RegistryFacts(), scope, annotation=_view(view, owner=company)
    )


def read_job(gov: Governance, actor: Any, job_id: str, view: str) -> Job:
    """Decide a read of a job (status, rounds, metrics, result, progress)."""
    return _authorize_job(gov, actor, job_id, "read_job", _view(view, job_id=job_id))


def _authorize_job(
    gov: Governance, actor: Any, job_id: str, action: str, annotation: Annotation
) -> Job:
    """Decide ``action`` on a job, with its facts as the registry holds them now."""
    job = service.get_job(gov.engine, job_id)
    world = job_world(
        gov.engine, job.id, service.job_spec(job), job.filed_by, job.approved_at is not None
    )
    authorize(gov, actor, action, world.job, entities=world.entities, annotation=annotation)
    return job


# ------------------------------------------------------------------ principals and tokens
def _principal_record(
    action: str, actor: Any, account: AccountFacts, **details: Any
) -> LedgerRecord:
    return LedgerRecord(
        action=action,
        actor=actor_of(actor),
        resource=Resource(kind="key", id=account.id),
        details=details,
    )


def register_principal(
    gov: Governance,
    actor: Any,
    principal_id: str,
    role: str,
    public_key: str,
    organisation: str | None = None,
) -> Principal:
    """Register an engineer, regulator or operator with its Ed25519 public key."""
    principals.check_registration(principal_id, role, public_key, organisation)
    account = AccountFacts(role=role, holder=principal_id)
    authorize(
        gov,
        actor,
        "register_principal",
        account,
        annotation=Annotation(resource_kind="key", resource_id=account.id),
    )
    registered = principals.register(
        gov.engine, principal_id, role, public_key, actor.id, organisation
    )
    gov.record(
        _principal_record("principal.registered", actor, account, public_key_id=_key_id(public_key))
    )
    return registered


def list_principals(gov: Governance, actor: Any) -> list[Principal]:
    read_registry(gov, actor, "principals")
    return principals.list_principals(gov.engine)


def disable_principal(gov: Governance, actor: Any, principal_id: str) -> Principal:
    """Disable a principal: its tokens are revoked and it gets no new ones."""
    check_id(principal_id, "principal id")
    with service.session_scope(gov.engine) as session:
        found = session.get(Principal, principal_id)
    # Only registered principals can be disabled; an unknown id is judged as an engineer's.
    account = _decide_account(
        gov, actor, "register_principal", found.role if found else "engineer", principal_id
    )
    disabled, revoked = principals.disable(gov.engine, principal_id)
    gov.record(_principal_record("principal.disabled", actor, account, tokens_revoked=revoked))
    return disabled


def _issue(
    gov: Governance, who: Who, ttl: timedelta, proof: str | None, channel: str
) -> principals.IssuedToken:
    authorize(
        gov,
        who.facts,
        "manage_tokens",
        who.account,
        annotation=Annotation(resource_kind="key", resource_id=who.account.id),
    )
    issued = principals.create_token(gov.engine, who, ttl, proof, channel)
    gov.record(
        _principal_record(
            "token.issued",
            who.facts,
            who.account,
            token_id=issued.record.id,
            channel=channel,
            expires=as_utc(issued.record.expires_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    )
    return issued


def issue_token(
    gov: Governance,
    role: str,
    principal_id: str,
    timestamp: str,
    nonce: str,
    signature: str,
    ttl: timedelta = principals.DEFAULT_TTL,
) -> principals.IssuedToken:
    """A token for a principal that proved possession of its key by a signed request."""
    who, proof = principals.verify_token_request(
        gov.engine, role, principal_id, timestamp, nonce, signature
    )
    return _issue(gov, who, ttl, proof, "signed-request")


def issue_token_locally(
    gov: Governance, role: str, principal_id: str, ttl: timedelta = principals.DEFAULT_TTL
) -> principals.IssuedToken:
    """A token issued on the sandbox's own machine (the CLI), for tests and demos."""
    try:
        who = principals.resolve(gov.engine, role, principal_id)
    except NotFound as exc:
        raise NotFound(f"{exc}; register it first (`sandbox principal add`)") from None
    return _issue(gov, who, ttl, None, "local")


def open_session(gov: Governance, who: Who) -> None:
    """A browser signs in with a token: decided like any use of one's own tokens."""
    authorize(
        gov,
        who.facts,
        "manage_tokens",
        who.account,
        annotation=Annotation(
            resource_kind="key", resource_id=who.account.id, details={"view": "session"}
        ),
    )


def _account(gov: Governance, role: str, principal_id: str) -> AccountFacts | None:
    """The account of a principal, or None when there is no such principal."""
    try:
        return principals.resolve(gov.engine, role, principal_id).account
    except NotFound:
        return None


def _decide_account(
    gov: Governance, actor: Any, action: str, role: str, principal_id: str
) -> AccountFacts:
    """Decide ``action`` on a principal's account. An account that does not exist is judged as
    if it did (active): whether it exists is told only to whom the policy would allow."""
    account = _account(gov, role, principal_id)
    judged = account or AccountFacts(role=role, holder=principal_id)
    authorize(
        gov,
        actor,
        action,
        judged,
        annotation=Annotation(resource_kind="key", resource_id=judged.id),
    )
    if account is None:
        raise NotFound(f"no {role} {principal_id!r}")
    return account


def list_tokens(gov: Governance, actor: Any, role: str, principal_id: str) -> list[ApiToken]:
    """The tokens a principal was issued (never the tokens themselves)."""
    principals.check_role(role)
    _decide_account(gov, actor, "manage_tokens", role, principal_id)
    return principals.list_tokens(gov.engine, role, principal_id)


def revoke_token(gov: Governance, actor: Any, token_id: str) -> ApiToken:
    """Revoke a token: one's own, or (the operator) anyone's."""
    token = principals.get_token(gov.engine, token_id)
    account = _account(gov, token.role, token.principal_id) or AccountFacts(
        role=token.role, holder=token.principal_id, status="removed"
    )
    authorize(
        gov,
        actor,
        "manage_tokens",
        account,
        annotation=Annotation(resource_kind="key", resource_id=account.id),
    )
    revoked = principals.revoke_token(gov.engine, token_id)
    gov.record(_principal_record("token.revoked", actor, account, token_id=token_id))
    return revoked


# ------------------------------------------------------------------------- policy sets
def activate_policy_set(
    gov: Governance, actor: Any, files: dict[str, bytes], signature: str
) -> Any:
    """Make a policy set active: decided by the active set's ``activate_policy`` rules (a
    valid regulator signature over the set's hash, files that validate), recorded either
    way. An activated set is filed in the installation's store, so it is what later starts
    load. Raises Forbidden, listing what was wrong, when the set was not activated."""
    from policies.activation import activate
    from policies.policyset import POLICY_SUFFIX, SCHEMA_FILE
    from policies.tiers import TIERS_FILE

    required = {SCHEMA_FILE, TIERS_FILE}
    missing = sorted(required - set(files))
    strays = sorted(n for n in files if n not in required and not n.endswith(POLICY_SUFFIX))
    if missing or strays or not any(n.endswith(POLICY_SUFFIX) for n in files):
        raise Invalid(
            f"a policy set is {SCHEMA_FILE}, {TIERS_FILE} and one or more *{POLICY_SUFFIX} "
            f"files; missing: {', '.join(missing) or 'none'}; not part of a set: "
            f"{', '.join(strays) or 'none'}"
        )
    result = activate(gov.pdp, files, signature, gov.regulator_public_key, operator=actor)
    if not result.activated:
        reasons = list(result.decision.reasons) + list(result.problems)
        raise Forbidden(
            f"the policy set was not activated: {'; '.join(reasons)} "
            f"(decision {result.decision.decision_id})",
            decision_id=result.decision.decision_id,
            reasons=tuple(reasons),
        )
    gov.policy_store.save_active(files, signature)
    return result
