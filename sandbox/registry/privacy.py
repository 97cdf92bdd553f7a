"""The privacy ledger in the registry: what each company has spent, per job and per purpose.

The spend is in the database, so it survives a restarted coordinator; the tamper-evident
ledger receives the same figures with each round's record. Charging is write-ahead: a run is
charged before its task is sent, then settled with what the company reports. The purpose cap
is checked again inside the charging transaction, under a lock on the company's row, so that
two jobs of one purpose cannot both spend the last of a company's budget.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from sandbox.db import session_scope
from sandbox.errors import NotFound
from sandbox.privacy.accounting import DpSchedule, PrivacyBudgetExceeded, Run, composed_epsilon
from sandbox.privacy.budget import BudgetFacts
from sandbox.registry.models import Company, PrivacySpend
from sandbox.utc import utcnow


@dataclass(frozen=True)
class Spend:
    """A company's cumulative spend: epsilon and delta summed over jobs (basic composition)."""

    epsilon: float
    delta: float
    jobs: int


def _rows(session: Session, company_id: str, **where: str) -> list[PrivacySpend]:
    query = select(PrivacySpend).where(PrivacySpend.company_id == company_id)
    for column, value in where.items():
        query = query.where(getattr(PrivacySpend, column) == value)
    return list(session.exec(query.order_by(col(PrivacySpend.id))).all())


def _spend(rows: list[PrivacySpend]) -> Spend:
    by_job: dict[str, list[PrivacySpend]] = defaultdict(list)
    for row in rows:
        by_job[row.job_id].append(row)
    epsilon = sum(max(r.epsilon_job for r in job_rows) for job_rows in by_job.values())
    delta = sum(max(r.delta for r in job_rows) for job_rows in by_job.values())
    return Spend(epsilon=epsilon, delta=delta, jobs=len(by_job))


def spent_for_purpose(engine: Engine, company_id: str, purpose: str) -> Spend:
    with session_scope(engine) as session:
        return _spend(_rows(session, company_id, purpose=purpose))


def spent_in_job(engine: Engine, company_id: str, job_id: str) -> tuple[float, int]:
    """The company's epsilon in the job so far and the number of runs it was charged for."""
    with session_scope(engine) as session:
        rows = _rows(session, company_id, job_id=job_id)
    return (max((r.epsilon_job for r in rows), default=0.0), len(rows))


def company_charges(engine: Engine, company_id: str) -> list[PrivacySpend]:
    """Every run the company was charged for, oldest first."""
    with session_scope(engine) as session:
        return _rows(session, company_id)


def job_spends(engine: Engine, job_id: str) -> list[PrivacySpend]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(PrivacySpend)
                .where(PrivacySpend.job_id == job_id)
                .order_by(col(PrivacySpend.id))
            ).all()
        )


@dataclass(frozen=True)
class RunScope:
    """Whose next run, in which job and round, under which schedule and purpose cap."""

    company_id: str
    purpose: str
    job_id: str
    round: int
    schedule: DpSchedule
    purpose_cap: float
    baseline: bool = False
    """The run is the company's local-only baseline (round 0), not a round's training."""

    @property
    def run(self) -> Run:
        return self.schedule.baseline_run if self.baseline else self.schedule.run


def _facts(rows: list[PrivacySpend], scope: RunScope) -> BudgetFacts:
    in_job = [r for r in rows if r.job_id == scope.job_id]
    done = [Run(r.noise_multiplier, r.sample_rate, r.steps) for r in in_job]
    delta = scope.schedule.delta
    next_epsilon = composed_epsilon([*done, scope.run], delta) - composed_epsilon(done, delta)
    return BudgetFacts(
        company=scope.company_id,
        purpose=scope.purpose,
        job_id=scope.job_id,
        round=scope.round,
        spent_purpose=_spend(rows).epsilon,
        spent_job=max((r.epsilon_job for r in in_job), default=0.0),
        runs_done=len(in_job),
        next_epsilon=next_epsilon,
        purpose_cap=scope.purpose_cap,
        job_epsilon=scope.schedule.target_epsilon,
        delta=scope.schedule.delta,
    )


def budget_facts(engine: Engine, scope: RunScope) -> BudgetFacts:
    """The facts a budget decision about the company's next run rests on."""
    with session_scope(engine) as session:
        return _facts(_rows(session, scope.company_id, purpose=scope.purpose), scope)


def charge_run(engine: Engine, scope: RunScope) -> PrivacySpend:
    """Charge the next run before its task is sent; refuses (``PrivacyBudgetExceeded``) when
    it would take the company past the purpose cap or the job's own epsilon."""
    with session_scope(engine) as session:
        locked = session.exec(
            select(Company).where(Company.id == scope.company_id).with_for_update()
        ).first()
        if locked is None:
            raise NotFound(f"no company {scope.company_id!r}")
        facts = _facts(_rows(session, scope.company_id, purpose=scope.purpose), scope)
        allowed, why = facts.decide()
        if not allowed:
            raise PrivacyBudgetExceeded(why)
        schedule = scope.schedule
        row = PrivacySpend(
            company_id=scope.company_id,
            purpose=scope.purpose,
            job_id=scope.job_id,
            round=scope.round,
            epsilon=facts.next_epsilon,
            epsilon_job=facts.spent_job + facts.next_epsilon,
            delta=schedule.delta,
            noise_multiplier=schedule.noise_multiplier,
            sample_rate=schedule.sample_rate,
            steps=scope.run.steps,
        )
        session.add(row)
        session.flush()
        return row


def settle_run(
    engine: Engine,
    spend_id: int,
    epsilon: float,
    epsilon_job: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
) -> PrivacySpend:
    """Record what the company reported for a charged run. The charge never goes down: the
    stored figures are the larger of the charge and the report."""
    for value in (epsilon, epsilon_job, delta):
        if not math.isfinite(value) or value < 0:
            raise ValueError("reported privacy figures must be finite and non-negative")
    with session_scope(engine) as session:
        row = session.get(PrivacySpend, spend_id)
        if row is None:
            raise NotFound(f"no privacy charge {spend_id}")
        row.reported_epsilon = epsilon
        row.reported_epsilon_job = epsilon_job
        row.epsilon = max(row.epsilon, epsilon)
        row.epsilon_job = max(row.epsilon_job, epsilon_job)
        row.delta = max(row.delta, delta)
        row.noise_multiplier = noise_multiplier
        row.sample_rate = sample_rate
        row.steps = steps
        row.status = "reported"
        row.settled_at = utcnow()
        session.add(row)
        return row


def annotate_run(engine: Engine, spend_id: int, note: str) -> None:
    """Say why a charged run was not settled (no reply, refused reply); the charge stays."""
    with session_scope(engine) as session:
        row = session.get(PrivacySpend, spend_id)
        if row is None:
            raise NotFound(f"no privacy charge {spend_id}")
        row.note = note[:2000]
        session.add(row)


def release_run(engine: Engine, spend_id: int) -> None:
    """Withdraw a charge whose task was never sent (the round stopped before sending)."""
    with session_scope(engine) as session:
        row = session.get(PrivacySpend, spend_id)
        if row is None or row.status != "charged":
            raise ValueError(f"privacy charge {spend_id} is not an open charge")
        session.delete(row)
