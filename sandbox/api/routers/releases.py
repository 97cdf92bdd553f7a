"""Releases: a regulator's review of a model the release gate held for want of evidence
(the statement to sign, and the signed review)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, StringConstraints

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.routers.jobs import JobId
from sandbox.api.schemas import ApprovalStatementOut, Signature, Strict
from sandbox.governance import Governance
from sandbox.services import jobs as job_service
from sandbox.services import releases
from sandbox.utc import rfc3339, utcnow

router = APIRouter(tags=["regulators: approvals and audit"])


class ReleaseReviewIn(Strict):
    """A regulator's review: approve or reject, the note (required to reject), when it was
    signed, and the regulator's Ed25519 signature over the review statement
    (``GET /releases/{job_id}/review-statement`` gives the bytes to sign)."""

    approve: bool
    note: Annotated[str, StringConstraints(max_length=2000)] = ""
    signed_at: Annotated[str, StringConstraints(max_length=40)]
    signature: Signature


class ReleaseOut(BaseModel):
    job_id: str
    model_hash: str
    tier: str
    allowed: bool
    outcome: str = Field(description="allow, deny or insufficient-evidence")
    reasons: list[str]
    decided_by: str
    exported: bool


@router.get("/releases/{job_id}/review-statement", response_model=ApprovalStatementOut)
def review_statement(
    job_id: JobId,
    approve: bool = Query(...),
    note: str = Query("", max_length=2000),
    signed_at: str | None = Query(None, max_length=40),
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ApprovalStatementOut:
    """The statement the calling regulator signs to approve or reject the release of the
    job's held model with this note (now, unless `signed_at` is given). Reading it is
    reading the job: policy action `read_job`."""
    job_service.read_job(gov, me.facts, job_id, "release_review_statement")
    held = releases.held_release(gov, job_id)
    moment = signed_at or rfc3339(utcnow())
    statement = releases.review_statement(
        job_id, held.model_hash, me.who.id, approve, moment, note.strip()
    )
    return ApprovalStatementOut(statement=statement.decode("utf-8"), signed_at=moment)


@router.post("/releases/{job_id}/review", response_model=ReleaseOut)
def review(
    job_id: JobId,
    body: ReleaseReviewIn,
    me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> ReleaseOut:
    """Review a model held for want of evidence, signed by the regulator. An approval asks
    the release policy again with the review; it cannot overturn evidence that a limit is
    exceeded. Policy actions: `review_release`, then `release_model`."""
    release = releases.review_release(
        gov, me.facts, job_id, body.approve, body.note, body.signed_at, body.signature
    )
    return ReleaseOut(
        job_id=release.job_id,
        model_hash=release.model_hash,
        tier=release.tier,
        allowed=release.allowed,
        outcome=release.outcome,
        reasons=list(release.reasons),
        decided_by=release.decided_by,
        exported=release.exported_to is not None,
    )
