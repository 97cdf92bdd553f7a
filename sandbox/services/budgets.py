"""Privacy budgets checked before work starts.

A DP job spends each company's epsilon for the job's purpose. Whether a company's budget can
pay for the whole job is the participation policy's own rule (``admission.dp_budget_left``,
which every round applies): asked here for each company at filing, at approval and at start,
with what the company has spent for the purpose and what the job still needs of it. A job
some company cannot pay for is refused there, naming the companies and why, and the refusal
is recorded (``job.budget_short``), before anyone approves or starts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from policies.facts import RoundContext
from sandbox.errors import Conflict
from sandbox.governance import Governance, JobWorld
from sandbox.ledger import LedgerRecord, Purpose, Resource
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry import privacy as privacy_store
from sandbox.services.base import actor_of
from sandbox.services.companies import company_data

BUDGET_POLICY = "admission.dp_budget_left"


def budget_short(gov: Governance, world: JobWorld, spec: JobSpec, job_id: str) -> dict[str, str]:
    """The companies whose budget for the purpose cannot pay for what the job still needs of
    them, each with the policy's reason (asked, not recorded)."""
    if spec.privacy.dp is None:
        return {}
    short = {}
    for company, facts in sorted(world.companies.items()):
        spent = privacy_store.spent_for_purpose(gov.engine, company, spec.purpose).epsilon
        used = privacy_store.spent_in_job(gov.engine, company, job_id)[0]  # 0 before filing
        needed = max(0.0, spec.privacy.dp.epsilon - used)
        context = RoundContext(
            round=1, epsilon_spent=Decimal(str(spent)), epsilon_next=Decimal(str(needed))
        )
        decision = gov.pdp.consider(
            facts, "participate_in_round", world.job, context, world.entities
        )
        if not decision.allowed and BUDGET_POLICY in decision.policies:
            short[company] = " ".join(decision.reasons)
    return short


def check_budgets(
    gov: Governance, actor: Any, world: JobWorld, spec: JobSpec, job_id: str, step: str
) -> None:
    """Refuse (Conflict), recorded, when some company's budget cannot pay for the job."""
    short = budget_short(gov, world, spec, job_id)
    if not short:
        return
    gov.record(
        LedgerRecord(
            action="job.budget_short",
            actor=actor_of(actor),
            resource=Resource(kind="job", id=job_id),
            purpose=Purpose(name=spec.purpose, legal_basis="consent", consent_id="per-participant"),
            job_id=job_id,
            participants=list(spec.companies),
            details={"step": step, "companies": sorted(short)},
        )
    )
    named = "; ".join(f"{c}: {why}" for c, why in short.items())
    raise Conflict(
        f"refused at {step}: {len(short)} of the job's companies have too little privacy budget "
        f"left for purpose {spec.purpose!r} ({named}); leave them out, lower epsilon, or choose "
        "another purpose"
    )


@dataclass(frozen=True)
class PurposeBudget:
    purpose: str
    spent: float
    jobs: int
    caps: dict[str, float]
    """The cap per company per purpose of each risk tier (the job's tier decides which)."""

    def left(self, tier: str) -> float:
        return max(0.0, self.caps[tier] - self.spent)


def company_budgets(gov: Governance, actor: Any, company_id: str) -> list[PurposeBudget]:
    """What a company has spent and has left per purpose (a read of its own data)."""
    company_data(gov, actor, company_id, "privacy_budget")
    caps = {name: float(t.dp_epsilon_cap) for name, t in gov.tiers.tiers.items()}
    purposes = sorted({c.purpose for c in privacy_store.company_charges(gov.engine, company_id)})
    budgets = []
    for purpose in purposes:
        spend = privacy_store.spent_for_purpose(gov.engine, company_id, purpose)
        budgets.append(PurposeBudget(purpose, spend.epsilon, spend.jobs, caps))
    return budgets
