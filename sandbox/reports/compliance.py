"""A job's compliance summary: what was decided and done about one job, each fact with the
ledger index of the entry that records it, so that a regulator can prove every line against
a signed checkpoint.

The registry gives the readable side (reasons, metrics); the ledger the record of truth. The
summary reads at most ``max_entries`` of the job's ledger entries and says when it stopped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from sandbox.governance import Governance
from sandbox.ledger.log import MAX_PAGE
from sandbox.protocol.receipts import stated_job_epsilon
from sandbox.registry import jobs as job_store
from sandbox.registry.models import PolicyDecision
from sandbox.registry.privacy import job_spends

MAX_ENTRIES = 20_000


class DecisionFact(BaseModel):
    decision_id: str
    allowed: bool
    policies: list[str]
    reasons: list[str]
    principal: str
    ledger_index: int


class RoundFact(BaseModel):
    number: int
    status: str
    took_part: list[str]
    missing: list[str]
    rejected: list[str]
    mean_auc: float | None
    ledger_index: int | None


class ParticipationFact(BaseModel):
    round: int
    company: str
    allowed: bool
    policies: list[str]
    ledger_index: int


class CompanyUse(BaseModel):
    receipts: int
    epsilon: float = Field(description="epsilon charged to the company in this job")
    epsilon_receipted: float = Field(
        description="epsilon for the job that its node states in its signed receipts"
    )
    rows: int
    ledger_indices: list[int] = Field(description="the ledger entries of its receipts")


class LedgerSpan(BaseModel):
    entries: int
    first_index: int | None
    last_index: int | None
    complete: bool = Field(description="false when the summary stopped reading the job's entries")
    by_action: dict[str, list[int]]


class ComplianceSummary(BaseModel):
    job_id: str
    purpose: str
    risk_tier: str
    status: str
    status_reason: str | None
    spec_hash: str
    filed_by: str
    filed_at: datetime
    participants: list[str]
    filed_index: int | None
    admission: DecisionFact | None
    approval_required: bool
    approval: DecisionFact | None
    approved_by: str | None
    approval_note: str | None
    started_indices: list[int]
    rounds: list[RoundFact]
    participation: list[ParticipationFact]
    companies: dict[str, CompanyUse]
    model_hash: str | None
    model_index: int | None
    ledger: LedgerSpan


def _use(uses: dict[str, CompanyUse], company: str) -> CompanyUse:
    return uses.setdefault(
        company,
        CompanyUse(receipts=0, epsilon=0.0, epsilon_receipted=0.0, rows=0, ledger_indices=[]),
    )


def _job_entries(gov: Governance, job_id: str, limit: int) -> tuple[list[Any], bool]:
    found: list[Any] = []
    after = -1
    while len(found) < limit:
        page = gov.ledger.entries(after_index=after, limit=MAX_PAGE, job_id=job_id)
        found.extend(page)
        if len(page) < MAX_PAGE:
            return found[:limit], True
        after = page[-1].index
    return found[:limit], False


def job_summary(gov: Governance, job_id: str, max_entries: int = MAX_ENTRIES) -> ComplianceSummary:
    job = job_store.get_job(gov.engine, job_id)
    spec = job_store.job_spec(job)
    entries, complete = _job_entries(gov, job_id, max_entries)
    by_action: dict[str, list[int]] = {}
    decisions: dict[str, tuple[int, Any]] = {}
    round_index: dict[int, int] = {}
    participation_entries = []
    uses: dict[str, CompanyUse] = {}
    model_index = filed_index = None
    for item in entries:
        record = item.record
        by_action.setdefault(record.action, []).append(item.index)
        if record.decision is not None:
            decisions[record.decision.decision_id] = (item.index, record)
            if record.action == "decision.participate_in_round":
                participation_entries.append((item.index, record))
        elif record.action in ("round.completed", "round.failed") and record.round is not None:
            round_index[record.round] = item.index
        elif record.action == "model.trained":
            model_index = item.index
        elif record.action == "job.filed":
            filed_index = item.index
        elif record.action == "receipt.recorded":
            _use(uses, record.actor.principal).ledger_indices.append(item.index)
    signed: dict[str, list[tuple[str, float | None, str]]] = {}
    for receipt in job_store.receipts_of_job(gov.engine, job_id):
        use = _use(uses, receipt.company_id)
        use.receipts += 1
        signed.setdefault(receipt.company_id, []).append(
            (receipt.task, receipt.epsilon, receipt.payload)
        )
        if receipt.task == "train":
            use.rows = max(use.rows, receipt.rows)
    for company, stated in signed.items():
        uses[company].epsilon_receipted = stated_job_epsilon(stated)
    for charge in job_spends(gov.engine, job_id):
        use = _use(uses, charge.company_id)
        use.epsilon = max(use.epsilon, charge.epsilon_job)

    approvals = [
        d
        for d, (_, r) in decisions.items()
        if r.action in ("decision.approve_job", "decision.reject_job") and r.decision.allowed
    ]
    approval_id = approvals[-1] if approvals else None
    notes = _decision_notes(gov, [d for d in (job.admission_decision, approval_id) if d])

    def fact(decision_id: str | None) -> DecisionFact | None:
        if decision_id is None or decision_id not in decisions:
            return None
        index, record = decisions[decision_id]
        note = notes.get(decision_id)
        return DecisionFact(
            decision_id=decision_id,
            allowed=record.decision.allowed,
            policies=list(record.decision.policies),
            reasons=list(note.reasons) if note else [],
            principal=record.actor.principal,
            ledger_index=index,
        )

    rounds = []
    for r in job_store.rounds_of(gov.engine, job_id):
        evaluation = r.metrics.get("evaluation") or {}
        rounds.append(
            RoundFact(
                number=r.number,
                status=r.status,
                took_part=list(r.took_part),
                missing=[m["company"] for m in r.missing],
                rejected=[m["company"] for m in r.rejected],
                mean_auc=evaluation.get("mean_auc"),
                ledger_index=round_index.get(r.number),
            )
        )
    return ComplianceSummary(
        job_id=job.id,
        purpose=job.purpose,
        risk_tier=job.risk_tier,
        status=job.status,
        status_reason=job.status_reason,
        spec_hash=job.spec_hash,
        filed_by=job.filed_by,
        filed_at=job.filed_at,
        participants=list(spec.companies),
        filed_index=filed_index,
        admission=fact(job.admission_decision),
        approval_required=job.status == "awaiting_approval" or job.approved_at is not None,
        approval=fact(approval_id),
        approved_by=job.approved_by,
        approval_note=job.approval_note,
        started_indices=by_action.get("job.started", []),
        rounds=rounds,
        participation=[
            ParticipationFact(
                round=record.round or 0,
                company=record.actor.principal,
                allowed=record.decision.allowed,
                policies=list(record.decision.policies),
                ledger_index=index,
            )
            for index, record in participation_entries
        ],
        companies=uses,
        model_hash=job.model_hash,
        model_index=model_index,
        ledger=LedgerSpan(
            entries=len(entries),
            first_index=entries[0].index if entries else None,
            last_index=entries[-1].index if entries else None,
            complete=complete,
            by_action=by_action,
        ),
    )


def _decision_notes(gov: Governance, decision_ids: list[str]) -> dict[str, PolicyDecision]:
    """The readable reasons of decisions (bound to their ledger entries by hash)."""
    return job_store.decisions_by_id(gov.engine, decision_ids)
