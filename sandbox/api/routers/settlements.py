"""Settlement: compute vouchers for companies, a completed job's signed settlement statement
(JSON and CSV), and the companies' contests of it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field, StringConstraints

from sandbox.api.auth import Caller, caller, governance
from sandbox.api.schemas import Out, Strict
from sandbox.governance import Governance
from sandbox.services import settlements as settlement_service
from sandbox.vocabulary import ID_PATTERN, JOB_ID_PATTERN

router = APIRouter(tags=["settlement"])

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="job id")]
CompanyId = Annotated[str, Path(pattern=ID_PATTERN, description="the company's id")]
DisputeId = Annotated[str, Path(pattern=r"^dsp-[0-9a-f]{12}$", description="a dispute's id")]
Amount = Annotated[Decimal, Field(ge=0, le=10**9, max_digits=14, decimal_places=2)]


class VoucherIn(Strict):
    amount: Amount = Field(description="in the settlement currency's units (e.g. 20.00)")
    valid_days: int = Field(default=365, ge=1, le=3650)
    purpose: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class VoucherOut(Out):
    id: str
    company_id: str
    amount: int = Field(description="cents")
    currency: str
    purpose: str
    valid_until: datetime
    issued_by: str
    issued_at: datetime
    decision_id: str


class VoucherBalanceOut(BaseModel):
    voucher: VoucherOut
    used: int = Field(description="cents taken by settlements")
    left: int = Field(description="cents left")


class SettleIn(Strict):
    value: Amount = Field(description="the job's value to distribute, in currency units")


class DisputeIn(Strict):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class ResolutionIn(Strict):
    outcome: Literal["upheld", "rejected"]
    note: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class DisputeOut(Out):
    id: str
    job_id: str
    company_id: str
    revision: int
    reason: str
    status: str
    resolution: str | None
    resolved_by: str | None
    opened_at: datetime
    resolved_at: datetime | None


class SettlementOut(BaseModel):
    job_id: str
    revision: int
    complete: bool = Field(description="the whole statement (else the reader's own lines)")
    statement: dict[str, Any]
    statement_text: str | None = Field(description="the signed canonical text, when complete")
    signature: str | None = Field(description="the operator's Ed25519 signature over it")
    statement_sha256: str
    settled_by: str
    settled_at: datetime
    disputes: list[DisputeOut]


def _out(found: settlement_service.SettlementView) -> SettlementOut:
    settled = found.settlement
    return SettlementOut(
        job_id=settled.job_id, revision=settled.revision, complete=found.complete,
        statement=found.statement,
        statement_text=settled.statement if found.complete else None,
        signature=settled.signature if found.complete else None,
        statement_sha256=found.statement_sha256, settled_by=settled.settled_by,
        settled_at=settled.settled_at,
        disputes=[DisputeOut.model_validate(d) for d in found.disputes],
    )  # fmt: skip


@router.post("/companies/{company_id}/vouchers", status_code=201, response_model=VoucherOut)
def issue_voucher(
    company_id: CompanyId, body: VoucherIn, me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> VoucherOut:  # fmt: skip
    """Issue a compute voucher under the written terms (tiers.toml [settlement]): to a small
    firm or a first-time participant, up to the terms' maximum. Policy action:
    `issue_voucher`."""
    voucher = settlement_service.issue_voucher(
        gov, me.facts, company_id, body.amount, body.valid_days, body.purpose
    )
    return VoucherOut.model_validate(voucher)


@router.get("/companies/{company_id}/vouchers", response_model=list[VoucherBalanceOut])
def list_vouchers(
    company_id: CompanyId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> list[VoucherBalanceOut]:
    """A company's vouchers and what is left of each. Policy action: `read_company_data`."""
    return [
        VoucherBalanceOut(voucher=VoucherOut.model_validate(b.voucher), used=b.used, left=b.left)
        for b in settlement_service.vouchers(gov, me.facts, company_id)
    ]


@router.post("/jobs/{job_id}/settlement", status_code=201, response_model=SettlementOut)
def settle(
    job_id: JobId, body: SettleIn, me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> SettlementOut:  # fmt: skip
    """Draw up a completed job's settlement statement for the declared value: each
    company's contribution share, compute cost (metered at its node), vouchers applied and
    net, signed with the operator's key. Policy action: `settle_job`."""
    settlement_service.settle(gov, me.facts, job_id, body.value)
    return _out(settlement_service.settlement_of(gov, me.facts, job_id))


@router.get("/jobs/{job_id}/settlement", response_model=SettlementOut)
def settlement(
    job_id: JobId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> SettlementOut:
    """A job's settlement statement; a company sees its own line and the others' totals.
    Policy actions: `read_job`, `read_job_figures`."""
    return _out(settlement_service.settlement_of(gov, me.facts, job_id))


@router.get("/jobs/{job_id}/settlement.csv", response_class=PlainTextResponse)
def settlement_csv(
    job_id: JobId, me: Caller = Depends(caller), gov: Governance = Depends(governance)
) -> PlainTextResponse:
    """The statement's table as CSV, shaped like the JSON."""
    found = settlement_service.settlement_of(gov, me.facts, job_id)
    return PlainTextResponse(
        settlement_service.statement_csv(found.statement),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="settlement-{job_id}.csv"'},
    )


@router.post("/jobs/{job_id}/settlement/disputes", status_code=201, response_model=DisputeOut)
def contest(
    job_id: JobId, body: DisputeIn, me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> DisputeOut:  # fmt: skip
    """A company in the job contests its current settlement statement, with the reason.
    Policy action: `contest_settlement`."""
    return DisputeOut.model_validate(settlement_service.contest(gov, me.facts, job_id,
                                                                body.reason))  # fmt: skip


@router.post("/jobs/{job_id}/settlement/disputes/{dispute_id}/resolve", response_model=DisputeOut)
def resolve(
    job_id: JobId, dispute_id: DisputeId, body: ResolutionIn, me: Caller = Depends(caller),
    gov: Governance = Depends(governance),
) -> DisputeOut:  # fmt: skip
    """Resolve an open contest: upheld (a new revision of the statement may follow) or
    rejected, with a note. Policy action: `resolve_dispute`."""
    return DisputeOut.model_validate(settlement_service.resolve(
        gov, me.facts, job_id, dispute_id, body.outcome, body.note
    ))  # fmt: skip
