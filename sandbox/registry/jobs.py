"""The repository of jobs and what their runs leave behind: rounds, receipts, releases, and
the readable side of policy decisions.

A job's status moves only along :data:`sandbox.vocabulary.TRANSITIONS`; :func:`move_job`
refuses anything else, atomically (two callers cannot both move a job out of one status).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from sandbox.db import session_scope
from sandbox.errors import Conflict, Invalid, NotFound
from sandbox.protocol.jobspec import JobSpec
from sandbox.registry.models import Job, PolicyDecision, Receipt, Release, Round
from sandbox.utc import utcnow
from sandbox.vocabulary import FILING_OUTCOMES, TRANSITIONS, JobStatus, is_sha256


def insert_job(engine: Engine, job: Job) -> Job:
    """Store a job as filed: its admission decided (its status one of the filing outcomes),
    its spec's hash and its code bundle's hash with it."""
    if JobStatus(job.status) not in FILING_OUTCOMES:
        raise Invalid(f"a job is filed as one of {sorted(FILING_OUTCOMES)}, not {job.status!r}")
    if job.bundle_hash is None or not is_sha256(job.bundle_hash):
        raise Invalid("a code bundle hash is 64 lowercase hexadecimal digits")
    with session_scope(engine) as session:
        if session.get(Job, job.id) is not None:
            raise Conflict(f"a job {job.id!r} is filed already")
        session.add(job)
        return job


def find_job(engine: Engine, job_id: str) -> Job | None:
    with session_scope(engine) as session:
        return session.get(Job, job_id)


def get_job(engine: Engine, job_id: str) -> Job:
    job = find_job(engine, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def job_spec(job: Job) -> JobSpec:
    return JobSpec.model_validate(job.spec)


def move_job(
    engine: Engine,
    job_id: str,
    to: JobStatus,
    *,
    only_from: Iterable[JobStatus] | None = None,
    reason: str | None = None,
    **fields: Any,
) -> Job | None:
    """Move a job to status ``to`` with ``fields`` set, if its status now allows it (and is
    one of ``only_from`` when given); atomically. Returns the job, or None when its status
    did not allow the move."""
    allowed = [s for s, nexts in TRANSITIONS.items() if to in nexts]
    if only_from is not None:
        allowed = [s for s in allowed if s in set(only_from)]
    if not allowed:
        return None
    values: dict[str, Any] = {"status": to.value, **fields}
    if reason is not None:
        values["status_reason"] = reason[:2000]
    table = Job.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        moved = conn.execute(
            update(table)
            .where(table.c.id == job_id, table.c.status.in_([s.value for s in allowed]))
            .values(**values)
        ).rowcount
    return get_job(engine, job_id) if moved == 1 else None


def begin_run_values() -> dict[str, Any]:
    """The columns set when a run starts: its first start time is kept across resumes."""
    table = Job.__table__  # type: ignore[attr-defined]
    return {"started_at": func.coalesce(table.c.started_at, utcnow())}


def query_jobs(
    engine: Engine,
    filed_by: str | None = None,
    company: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first, filtered by who filed them, a participating company and status."""
    query = select(Job)
    if filed_by is not None:
        query = query.where(Job.filed_by == filed_by)
    if status is not None:
        query = query.where(Job.status == status)
    query = query.order_by(col(Job.filed_at).desc(), Job.id)
    with session_scope(engine) as session:
        if company is None:
            return list(session.exec(query.offset(offset).limit(limit)).all())
        # Participants live in the spec document; a company takes part in few jobs.
        taking_part = [j for j in session.exec(query).all() if company in j.spec["companies"]]
    return taking_part[offset : offset + limit]


def count_by_status(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}


# ---------------------------------------------------------------------------- rounds
def add_round(engine: Engine, record: Round, completed: bool) -> Round:
    """Store one round's record; a completed round also advances the job. A round number is
    stored once per job (the table's unique key), so a resumed job cannot record it twice."""
    with session_scope(engine) as session:
        job = session.get(Job, record.job_id)
        if job is None:
            raise NotFound(f"no job {record.job_id!r}")
        session.add(record)
        if completed:
            job.rounds_completed = record.number
            session.add(job)
        session.flush()
        return record


def rounds_of(engine: Engine, job_id: str) -> list[Round]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Round).where(Round.job_id == job_id).order_by(col(Round.number))
            ).all()
        )


# --------------------------------------------------------------------------- receipts
def add_receipts(engine: Engine, receipts: list[Receipt]) -> None:
    with session_scope(engine) as session:
        session.add_all(receipts)


def receipts_of_job(engine: Engine, job_id: str) -> list[Receipt]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Receipt)
                .where(Receipt.job_id == job_id)
                .order_by(col(Receipt.round), col(Receipt.id))
            ).all()
        )


def receipts_of(
    engine: Engine, company_id: str, after_id: int = 0, limit: int = 100
) -> list[Receipt]:
    """The company's receipts in the order they arrived, after receipt ``after_id``."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Receipt)
                .where(Receipt.company_id == company_id, col(Receipt.id) > after_id)
                .order_by(col(Receipt.id))
                .limit(limit)
            ).all()
        )


def all_receipts_of(engine: Engine, company_id: str) -> list[Receipt]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Receipt).where(Receipt.company_id == company_id).order_by(col(Receipt.id))
            ).all()
        )


# --------------------------------------------------------------------------- releases
def add_release(engine: Engine, release: Release) -> Release:
    """Store a release decision (allowed or denied); every decision is kept, none replaced."""
    with session_scope(engine) as session:
        if session.get(Job, release.job_id) is None:
            raise NotFound(f"no job {release.job_id!r}")
        session.add(release)
        session.flush()
        return release


def releases_of(engine: Engine, job_id: str) -> list[Release]:
    """A job's release decisions, oldest first."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Release).where(Release.job_id == job_id).order_by(col(Release.id))
            ).all()
        )


# -------------------------------------------------------------------------- decisions
def add_decision(engine: Engine, decision: PolicyDecision) -> None:
    with session_scope(engine) as session:
        session.add(decision)


def find_decision(engine: Engine, decision_id: str) -> PolicyDecision | None:
    """The readable side of a recorded decision (its reasons), if any."""
    with session_scope(engine) as session:
        return session.get(PolicyDecision, decision_id)


def decisions_by_id(engine: Engine, decision_ids: list[str]) -> dict[str, PolicyDecision]:
    """The readable side of many decisions at once."""
    notes: dict[str, PolicyDecision] = {}
    with session_scope(engine) as session:
        for start in range(0, len(decision_ids), 500):
            chunk = decision_ids[start : start + 500]
            rows = session.exec(
                select(PolicyDecision).where(col(PolicyDecision.decision_id).in_(chunk))
            ).all()
            notes.update({row.decision_id: row for row in rows})
    return notes


def jobs_by_id(engine: Engine, ids: list[str]) -> dict[str, Job]:
    with session_scope(engine) as session:
        rows = session.exec(select(Job).where(col(Job.id).in_(ids))).all()
    return {j.id: j for j in rows}
