"""Audit reads and exports: the ledger's entries, an entry with its proof, checkpoints,
consistency proofs, a full verification, an evidence bundle, a job's compliance summary and
report. Every one is a recorded decision (``read_audit``, or ``export_audit`` for exports)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from policies.facts import AuditLogFacts, AuditScope
from sandbox.errors import Conflict, Invalid, NotFound
from sandbox.governance import Annotation, Governance, job_world
from sandbox.ledger import EntryNotFound, LedgerIntegrityError
from sandbox.ledger.log import MAX_PAGE
from sandbox.registry import jobs as job_store
from sandbox.registry.models import Receipt
from sandbox.services.base import company_in_question, denied


def authorize_audit_read(
    gov: Governance,
    actor: Any,
    company: str | None = None,
    job: str | None = None,
    export: bool = False,
) -> Any:
    """Decide (and record) an audit read; raises Forbidden when denied."""
    scope_company = company_in_question(gov, company, actor)[1] if company else None
    scope_job = None
    entities: tuple[Any, ...] = ()
    if job:
        filed = job_store.get_job(gov.engine, job)
        world = job_world(
            gov.engine,
            filed.id,
            job_store.job_spec(filed),
            filed.filed_by,
            approved=filed.approved_at is not None,
        )
        scope_job, entities = world.job, world.entities
    decision = gov.decide(
        actor,
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
    actor: Any,
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
    authorize_audit_read(gov, actor, company=company, job=job)
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
    gov: Governance, actor: Any, index: int, company: str | None = None, job: str | None = None
) -> tuple[Any, Any, Any]:
    """One entry with its inclusion proof against the latest signed checkpoint (signed now if
    the latest does not cover the entry yet): ``(entry, proof, checkpoint)``.

    The entry is served as stored, even when it no longer matches its leaf hash: the proof
    comes from the stored tree, so whoever recomputes the leaf from the bytes sees the failure.
    When no signed checkpoint covers the entry and the log cannot sign one (it fails its
    integrity check), the read is refused as a conflict, with the reason."""
    authorize_audit_read(gov, actor, company=company, job=job)
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


def audit_checkpoint(gov: Governance, actor: Any) -> Any:
    """The latest signed checkpoint, signed now when the log has grown since."""
    authorize_audit_read(gov, actor)
    return gov.ledger.checkpoint()


def audit_consistency(gov: Governance, actor: Any, old_size: int, new_size: int) -> Any:
    """Proof that the tree of ``old_size`` entries is a prefix of that of ``new_size``."""
    authorize_audit_read(gov, actor)
    size = gov.ledger.size
    if not 1 <= old_size <= new_size <= size:
        raise Invalid(
            f"sizes must satisfy 1 <= old_size <= new_size <= {size} (the log's size now); "
            f"got {old_size} and {new_size}"
        )
    return gov.ledger.consistency_proof(old_size, new_size)


def audit_verify(gov: Governance, actor: Any, progress: Any = None) -> Any:
    """Recompute the whole ledger now (every hash, every checkpoint signature)."""
    authorize_audit_read(gov, actor)
    return gov.ledger.verify(progress)


def audit_export(gov: Governance, actor: Any, out_dir: Path, progress: Any = None) -> Path:
    """Write a self-contained evidence bundle of the whole ledger (an export, decided and
    recorded as such)."""
    authorize_audit_read(gov, actor, export=True)
    return gov.ledger.export_bundle(out_dir, progress)


def compliance_summary(gov: Governance, actor: Any, job_id: str) -> Any:
    """A job's compliance summary, every fact with its ledger index (an audit read of the
    job's entries)."""
    from sandbox.reports.compliance import job_summary

    authorize_audit_read(gov, actor, job=job_id)
    return job_summary(gov, job_id)


def compliance_report(gov: Governance, actor: Any, job_id: str) -> Any:
    """A job's full compliance report (record of processing, data use, every decision, the
    release assessment, each line with its ledger index and covering checkpoint): an export
    of the job's audit entries, decided and recorded as such."""
    from sandbox.reports.document import build_report

    authorize_audit_read(gov, actor, job=job_id, export=True)
    return build_report(gov, job_id)


def job_entries(gov: Governance, actor: Any, job_id: str) -> list[Any]:
    """Every ledger entry about a job, in index order, as stored (one decided read per page
    of a thousand)."""
    found: list[Any] = []
    after = -1
    while True:
        page = audit_entries(gov, actor, job=job_id, after_index=after, limit=MAX_PAGE)
        found += page
        if len(page) < MAX_PAGE:
            return found
        after = page[-1].index


def job_receipts(gov: Governance, actor: Any, job_id: str) -> list[Receipt]:
    """Every receipt the companies signed for a job, as stored (an audit read of the job)."""
    authorize_audit_read(gov, actor, job=job_id)
    return job_store.receipts_of_job(gov.engine, job_id)


def job_receipts_evidence(gov: Governance, actor: Any, job_id: str) -> Any:
    """A job's receipts as evidence to check offline (an export of the job's audit entries):
    the signed warrant, each company's public key and every receipt as signed."""
    from sandbox.protocol.job_receipts import receipts_document
    from sandbox.registry.companies import companies_by_id

    authorize_audit_read(gov, actor, job=job_id, export=True)
    job = job_store.get_job(gov.engine, job_id)
    if job.warrant is None:
        raise Conflict(f"job {job_id} has no warrant: it was never admitted to run")
    receipts = job_store.receipts_of_job(gov.engine, job_id)
    keys = companies_by_id(gov.engine, sorted({r.company_id for r in receipts}))
    return receipts_document(
        job.warrant,
        {company: found.public_key for company, found in keys.items()},
        [(r.company_id, r.payload, r.signature) for r in receipts],
    )
