"""Regulators: the queue of jobs awaiting approval, approve and reject, a job's compliance
summary, and the audit ledger: entries (filtered, paged by index), one entry with its
inclusion proof, the latest signed checkpoint, consistency proofs, verification now.

Companies and engineers read the ledger here too, within their scope (`company=` themselves,
`job=` their own job), as the policy allows.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.routers.jobs import JobId, job_out
from sandbox.api.schemas import (
    ApprovalIn,
    ApprovalStatementOut,
    CheckpointOut,
    ConsistencyOut,
    EntryOut,
    EntryPage,
    Id,
    JobOut,
    JobPage,
    ProofOut,
    RejectionIn,
    VerificationOut,
    record_json,
)
from sandbox.errors import Invalid, SandboxError
from sandbox.governance import Governance
from sandbox.identity import public_b64
from sandbox.reports.compliance import ComplianceSummary
from sandbox.services import audit as audit_service
from sandbox.services import jobs as job_service
from sandbox.utc import rfc3339, utcnow

router = APIRouter(tags=["regulators: approvals and audit"])

MAX_INDEX = 2**53 - 1
ActionName = Annotated[
    str, Query(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}$", max_length=64)
]
JobScope = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$", description="a job's id")
]


class VerificationBusy(SandboxError):
    status = 429
    title = "A verification is running"


def _utc(value: datetime | None, name: str) -> datetime | None:
    """A query time in UTC (a time without a zone is taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"{name} is outside the range of times the ledger holds") from None


# ------------------------------------------------------------------------- approvals
@router.get("/approvals", response_model=JobPage)
def approval_queue(
    offset: int = Query(0, ge=0, le=1_000_000),
    limit: int = Query(50, ge=1, le=500),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> JobPage:
    """The jobs awaiting a regulator's approval, newest first. Policy action: `list_jobs`."""
    jobs = job_service.list_jobs(
        gov, me.facts, status="awaiting_approval", offset=offset, limit=limit
    )
    return JobPage(jobs=[job_out(gov, j) for j in jobs], offset=offset, limit=limit)


@router.post("/approvals/{job_id}/approve", response_model=JobOut)
def approve(
    job_id: JobId,
    body: ApprovalIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> JobOut:
    """Approve a job that awaits approval, with the regulator's own signature over the
    job's filed spec and code (see `GET /approvals/{job_id}/statement`); the note is
    recorded and the job's warrant carries the signature to every company's node. Policy
    action: `approve_job`."""
    approved = job_service.approve_job(
        gov, me.facts, job_id, body.note, body.signed_at, body.signature
    )
    return job_out(gov, approved)


@router.get("/approvals/{job_id}/statement", response_model=ApprovalStatementOut)
def approval_statement(
    job_id: JobId,
    note: str = Query("", max_length=2000),
    signed_at: str | None = Query(None, max_length=40),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ApprovalStatementOut:
    """The statement the calling regulator signs to approve the job with this note (now,
    unless `signed_at` is given). Reading it is reading the job: policy action
    `read_job`."""
    job_service.read_job(gov, me.facts, job_id, "approval_statement")
    moment = signed_at or rfc3339(utcnow())
    statement = job_service.approval_statement(gov, job_id, me.who.id, moment, note)
    return ApprovalStatementOut(statement=statement.decode("utf-8"), signed_at=moment)


@router.post("/approvals/{job_id}/reject", response_model=JobOut)
def reject(
    job_id: JobId,
    body: RejectionIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> JobOut:
    """Reject a job that awaits approval, with a reason. Policy action: `reject_job`."""
    return job_out(gov, job_service.reject_job(gov, me.facts, job_id, body.reason))


@router.get("/jobs/{job_id}/compliance", response_model=ComplianceSummary)
def compliance(
    job_id: JobId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> ComplianceSummary:
    """A job's compliance summary: admission, approval, rounds, participants, receipts,
    epsilon per company, model hash, each with its ledger index. Policy action:
    `read_audit` (scope: the job)."""
    summary: ComplianceSummary = audit_service.compliance_summary(gov, me.facts, job_id)
    return summary


# ----------------------------------------------------------------------------- audit
@router.get("/audit/entries", response_model=EntryPage)
def entries(
    after: int = Query(-1, ge=-1, le=MAX_INDEX, description="entries after this index"),
    limit: int = Query(100, ge=1, le=1000),
    since: datetime | None = Query(None, description="record time, inclusive (UTC)"),
    until: datetime | None = Query(None, description="record time, exclusive (UTC)"),
    actor: Id | None = Query(None, description="the acting principal"),
    company: Id | None = Query(None, description="entries about this company"),
    job: JobScope = None,
    action: ActionName | None = None,
    decision: Literal["allow", "deny"] | None = Query(None),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> EntryPage:
    """Ledger entries in index order, filtered; page on with `after` = the last index you
    got. Policy action: `read_audit` (scope: `company`, `job`, or the whole ledger)."""
    found = audit_service.audit_entries(
        gov,
        me.facts,
        company=company,
        job=job,
        after_index=after,
        limit=limit,
        since=_utc(since, "since"),
        until=_utc(until, "until"),
        principal=actor,
        action=action,
        allowed=None if decision is None else decision == "allow",
    )
    return EntryPage(
        entries=[EntryOut.of(e) for e in found],
        next_after=found[-1].index if len(found) == limit else None,
    )


@router.get("/audit/entries/{index}", response_model=ProofOut)
def entry(
    index: Annotated[int, Path(ge=0, le=MAX_INDEX)],
    company: Id | None = Query(None, description="scope: an entry about this company"),
    job: JobScope = None,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ProofOut:
    """One entry with its inclusion proof against the latest signed checkpoint (signed now if
    the latest does not cover it). Verify it with nothing but the log's public key. Policy
    action: `read_audit`. An entry changed in the database is served as stored, with
    `intact: false`: it then fails to verify, as it should."""
    item, proof, checkpoint = audit_service.audit_entry(gov, me.facts, index, company, job)
    return ProofOut(
        index=item.index,
        tree_size=proof.tree_size,
        leaf_hash=proof.leaf_hash.hex(),
        audit_path=[h.hex() for h in proof.hashes],
        root=checkpoint.root.hex(),
        checkpoint=checkpoint.note,
        entry=item.entry.decode("utf-8"),
        record=record_json(item.record),
        intact=item.intact,
        problem=item.problem,
    )


@router.get("/audit/checkpoint", response_model=CheckpointOut)
def checkpoint(
    me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> CheckpointOut:
    """The latest signed checkpoint (a C2SP signed note over the log's size and root), signed
    now if the log has grown. Policy action: `read_audit`."""
    signed = audit_service.audit_checkpoint(gov, me.facts)
    return CheckpointOut(
        origin=signed.origin,
        size=signed.size,
        root=signed.root.hex(),
        note=signed.note,
        signed_at=signed.signed_at,
        public_key=public_b64(gov.ledger.public_key),
        verifier_key=gov.ledger.verifier_key,
    )


@router.get("/audit/consistency", response_model=ConsistencyOut)
def consistency(
    old_size: int = Query(ge=1, le=MAX_INDEX),
    new_size: int = Query(ge=1, le=MAX_INDEX),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ConsistencyOut:
    """Proof that the log of `old_size` entries is a prefix of the log of `new_size`. Policy
    action: `read_audit`."""
    proof = audit_service.audit_consistency(gov, me.facts, old_size, new_size)
    return ConsistencyOut(
        old_size=proof.old_size,
        new_size=proof.new_size,
        proof=[h.hex() for h in proof.hashes],
        old_root=gov.ledger.root(proof.old_size).hex(),
        new_root=gov.ledger.root(proof.new_size).hex(),
    )


_verifying = threading.Lock()


@router.post("/audit/verify", response_model=VerificationOut)
def verify(me: Caller = Depends(caller), gov: Governance = Depends(governance)) -> VerificationOut:
    """Verify the whole ledger now: every entry re-hashed, every node and checkpoint
    signature checked; names the first bad index. One at a time per server. Policy action:
    `read_audit`."""
    if not _verifying.acquire(blocking=False):
        raise VerificationBusy("a verification is running on this server; retry when it is done")
    try:
        report = audit_service.audit_verify(gov, me.facts)
    finally:
        _verifying.release()
    return VerificationOut(
        ok=report.ok,
        size=report.size,
        first_bad_index=report.first_bad_index,
        problems=report.problems,
        checkpoints=report.checkpoints,
        attested_size=report.attested_size,
    )
