"""Service functions over the registry. The CLI, the API and the coordinator call these, so
each rule is enforced in one place."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import select

from sandbox.data.manifest import DatasetManifest, check_identifier
from sandbox.db import session_scope
from sandbox.identity import decode_public_key_b64
from sandbox.jobspec import JobSpec
from sandbox.registry.errors import Conflict, Invalid, NotFound
from sandbox.registry.models import (
    Company,
    Consent,
    Dataset,
    Job,
    PolicyDecision,
    Receipt,
    Round,
    utcnow,
)

# The largest count a registry column holds on every database (a 32-bit INTEGER in PostgreSQL).
MAX_COUNT = 2**31 - 1
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Ids that the registry, the policies and the ledger all accept: of companies, principals and
purposes given through the API."""
_ID = re.compile(ID_PATTERN)


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise Invalid(
            f"{what} {value!r} must start with a letter or digit and hold only letters, digits, "
            "'_' or '-' (at most 64 characters)"
        )
    return value


def as_utc(value: datetime) -> datetime:
    """Databases may hand back naive datetimes (SQLite); everything here is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dataset_id(company_id: str, name: str) -> str:
    return f"{company_id}/{name}"


def join_company(
    engine: Engine, company_id: str, name: str, industry: str, public_key: str
) -> Company:
    check_identifier(company_id, "company id")
    try:
        decode_public_key_b64(public_key)
    except ValueError as exc:
        raise Invalid(f"public_key: {exc}") from exc
    if not industry.strip():
        raise Invalid("industry must not be empty")
    with session_scope(engine) as session:
        if session.get(Company, company_id) is not None:
            raise Conflict(f"a company with id {company_id!r} has already joined")
        company = Company(
            id=company_id, name=name, industry=industry.strip(), public_key=public_key
        )
        session.add(company)
        return company


def check_filled(manifest: DatasetManifest) -> None:
    """A manifest that a company's vault preparation filled in: a row count, and a content
    hash of SHA-256 hex; counts that every database holds."""
    if manifest.row_count is None or manifest.content_hash is None:
        raise Invalid("the manifest lacks its row count and content hash; prepare the vault first")
    if not _SHA256_HEX.match(manifest.content_hash):
        raise Invalid(
            "content_hash must be the SHA-256 of the vault files, 64 lower-case hex digits"
        )
    for name in ("row_count", "train_rows", "test_rows"):
        value = getattr(manifest, name)
        if value is not None and not 0 <= value <= MAX_COUNT:
            raise Invalid(f"{name} must be between 0 and {MAX_COUNT}, not {value}")
    if manifest.row_count < 1:
        raise Invalid("row_count must be at least 1: a dataset without rows serves no job")


def register_dataset(engine: Engine, company_id: str, manifest: DatasetManifest) -> Dataset:
    """Register a manifest that the company's vault has filled in (counts and hash)."""
    check_filled(manifest)
    with session_scope(engine) as session:
        company = session.get(Company, company_id)
        if company is None:
            raise NotFound(f"no company {company_id!r}")
        ds_id = dataset_id(company_id, manifest.name)
        if session.get(Dataset, ds_id) is not None:
            raise Conflict(f"company {company_id!r} already registered a dataset {manifest.name!r}")
        dataset = Dataset(
            id=ds_id,
            company_id=company_id,
            name=manifest.name,
            industry=manifest.industry,
            grade=manifest.grade,
            personal_data=manifest.personal_data,
            row_count=manifest.row_count,
            content_hash=manifest.content_hash,
            manifest=manifest.model_dump(mode="json"),
        )
        session.add(dataset)
        return dataset


def grant_consent(
    engine: Engine,
    company_id: str,
    dataset: str,
    purpose: str,
    valid_for: timedelta = timedelta(days=365),
    consent_id: str | None = None,
) -> Consent:
    check_identifier(purpose, "purpose")
    if valid_for <= timedelta(0):
        raise Invalid("a consent must be valid for a positive period")
    with session_scope(engine) as session:
        ds = session.get(Dataset, dataset_id(company_id, dataset))
        if ds is None:
            raise NotFound(f"company {company_id!r} has no dataset {dataset!r}")
        now = utcnow()
        consent = Consent(
            id=consent_id or new_id("consent"),
            company_id=company_id,
            dataset_id=ds.id,
            purpose=purpose,
            granted_at=now,
            expires_at=now + valid_for,
        )
        session.add(consent)
        return consent


def revoke_consent(engine: Engine, company_id: str, consent_id: str, reason: str = "") -> Consent:
    with session_scope(engine) as session:
        consent = session.get(Consent, consent_id)
        if consent is None or consent.company_id != company_id:
            raise NotFound(f"company {company_id!r} holds no consent {consent_id!r}")
        if consent.revoked_at is not None:
            raise Conflict(f"consent {consent_id} was already revoked")
        consent.revoked_at = utcnow()
        consent.revocation_reason = reason[:500] or None
        session.add(consent)
        return consent


def live_consent(engine: Engine, company_id: str, dataset: str, purpose: str) -> Consent | None:
    """The company's live consent of ``dataset`` for ``purpose`` now, if any."""
    now = utcnow()
    with session_scope(engine) as session:
        rows = session.exec(
            select(Consent).where(
                Consent.company_id == company_id,
                Consent.dataset_id == dataset_id(company_id, dataset),
                Consent.purpose == purpose,
                Consent.revoked_at.is_(None),  # type: ignore[union-attr]
            )
        ).all()
    live = [c for c in rows if as_utc(c.expires_at) > now]
    return max(live, key=lambda c: as_utc(c.expires_at)) if live else None


def get_company(engine: Engine, company_id: str) -> Company:
    with session_scope(engine) as session:
        company = session.get(Company, company_id)
        if company is None:
            raise NotFound(f"no company {company_id!r}")
        return company


def list_companies(engine: Engine) -> list[Company]:
    with session_scope(engine) as session:
        return list(session.exec(select(Company).order_by(Company.id)).all())


def company_datasets(engine: Engine, company_id: str) -> list[Dataset]:
    with session_scope(engine) as session:
        return list(session.exec(select(Dataset).where(Dataset.company_id == company_id)).all())


def get_dataset(engine: Engine, company_id: str, name: str) -> Dataset:
    with session_scope(engine) as session:
        ds = session.get(Dataset, dataset_id(company_id, name))
        if ds is None:
            raise NotFound(f"company {company_id!r} has no dataset {name!r}")
        return ds


def file_job(
    engine: Engine, spec: JobSpec, filed_by: str, job_id: str | None = None, **fields: object
) -> Job:
    """Store a validated spec with its hash; every named company must have the dataset.
    ``fields`` (status, risk tier, admission decision) are stored with it, in one step."""
    with session_scope(engine) as session:
        missing = []
        for company_id in spec.companies:
            if session.get(Dataset, dataset_id(company_id, spec.dataset)) is None:
                missing.append(company_id)
        if missing:
            raise Invalid(f"these companies have no dataset {spec.dataset!r}: {', '.join(missing)}")
        job = Job(
            id=job_id or new_id("job"),
            purpose=spec.purpose,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec.spec_hash,
            filed_by=filed_by,
        )
        for key, value in fields.items():
            setattr(job, key, value)
        session.add(job)
        return job


def get_job(engine: Engine, job_id: str) -> Job:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job


def job_spec(job: Job) -> JobSpec:
    return JobSpec.model_validate(job.spec)


def set_job_status(
    engine: Engine, job_id: str, status: str, reason: str | None = None, **fields: object
) -> Job:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        job.status = status
        if reason is not None:
            job.status_reason = reason
        for key, value in fields.items():
            setattr(job, key, value)
        session.add(job)
        return job


def job_rounds(engine: Engine, job_id: str) -> list[Round]:
    with session_scope(engine) as session:
        return list(
            session.exec(select(Round).where(Round.job_id == job_id).order_by(Round.number)).all()
        )


def new_grants(
    company_id: str, dataset: str, purposes: Iterable[str], valid_for: timedelta
) -> list[Consent]:
    """Consents of a joining company's dataset, one per purpose, from now for ``valid_for``."""
    now = utcnow()
    return [
        Consent(
            id=new_id("consent"),
            company_id=company_id,
            dataset_id=dataset_id(company_id, dataset),
            purpose=purpose,
            granted_at=now,
            expires_at=now + valid_for,
        )
        for purpose in purposes
    ]


def enrol_company(
    engine: Engine,
    company: Company,
    manifest: DatasetManifest,
    grants: list[Consent],
) -> tuple[Company, Dataset, list[Consent]]:
    """Join, register the dataset and grant consents in one transaction: all or nothing."""
    for grant in grants:
        check_identifier(grant.purpose, "purpose")
    try:
        decode_public_key_b64(company.public_key)
    except ValueError as exc:
        raise Invalid(f"public_key: {exc}") from exc
    check_filled(manifest)
    with session_scope(engine) as session:
        if session.get(Company, company.id) is not None:
            raise Conflict(f"a company with id {company.id!r} has already joined")
        session.add(company)
        session.flush()  # without ORM relationships, flush parents before children
        dataset = Dataset(
            id=dataset_id(company.id, manifest.name),
            company_id=company.id,
            name=manifest.name,
            industry=manifest.industry,
            grade=manifest.grade,
            personal_data=manifest.personal_data,
            row_count=manifest.row_count,
            content_hash=manifest.content_hash,
            manifest=manifest.model_dump(mode="json"),
        )
        session.add(dataset)
        session.flush()
        for grant in grants:
            if grant.company_id != company.id or grant.dataset_id != dataset.id:
                raise Invalid(f"consent {grant.id} does not name this company's dataset")
        session.add_all(grants)
        session.flush()
        return company, dataset, grants


def record_round(engine: Engine, record: Round, completed: bool) -> Round:
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


def begin_run(engine: Engine, job_id: str, from_statuses: Iterable[str]) -> bool:
    """Mark a job running if it is in one of ``from_statuses``, atomically: of two callers
    that start the same job at once, exactly one gets True."""
    table = Job.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        result = conn.execute(
            update(table)
            .where(table.c.id == job_id, table.c.status.in_(list(from_statuses)))
            .values(status="running", started_at=func.coalesce(table.c.started_at, utcnow()))
        )
        return result.rowcount == 1


def list_jobs(
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
    query = query.order_by(Job.filed_at.desc(), Job.id)  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        if company is None:
            return list(session.exec(query.offset(offset).limit(limit)).all())
        # Participants live in the spec document; a company takes part in few jobs.
        taking_part = [j for j in session.exec(query).all() if company in j.spec["companies"]]
    return taking_part[offset : offset + limit]


def company_consents(engine: Engine, company_id: str) -> list[Consent]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Consent)
                .where(Consent.company_id == company_id)
                .order_by(Consent.granted_at, Consent.id)  # type: ignore[arg-type]
            ).all()
        )


def company_receipts(
    engine: Engine, company_id: str, after_id: int = 0, limit: int = 100
) -> list[Receipt]:
    """The company's receipts in the order they arrived, after receipt ``after_id``."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Receipt)
                .where(Receipt.company_id == company_id, Receipt.id > after_id)  # type: ignore[operator]
                .order_by(Receipt.id)  # type: ignore[arg-type]
                .limit(limit)
            ).all()
        )


def job_receipts(engine: Engine, job_id: str) -> list[Receipt]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Receipt).where(Receipt.job_id == job_id).order_by(Receipt.id)  # type: ignore[arg-type]
            ).all()
        )


@dataclass(frozen=True)
class JobSpend:
    """What one job cost one company: the privacy its own signed training receipts state."""

    job_id: str
    purpose: str
    budget: float | None
    epsilon: float
    delta: float | None
    rounds: int
    receipts: int
    rows: int


def company_spend(engine: Engine, company_id: str) -> list[JobSpend]:
    """The company's privacy spend per job, from its signed receipts (training rounds spend
    budget; evaluation does not)."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Receipt, Job)
            .join(Job, Job.id == Receipt.job_id)  # type: ignore[arg-type]
            .where(Receipt.company_id == company_id)
            .order_by(Receipt.id)  # type: ignore[arg-type]
        ).all()
    by_job: dict[str, list[tuple[Receipt, Job]]] = {}
    for receipt, job in rows:
        by_job.setdefault(job.id, []).append((receipt, job))
    spends = []
    for job_id, pairs in by_job.items():
        job = pairs[0][1]
        train = [r for r, _ in pairs if r.task == "train"]
        dp = (job.spec.get("privacy") or {}).get("dp") or {}
        deltas = [r.delta for r in train if r.delta is not None]
        spends.append(
            JobSpend(
                job_id=job_id,
                purpose=job.purpose,
                budget=dp.get("epsilon"),
                epsilon=sum(r.epsilon or 0.0 for r in train),
                delta=max(deltas) if deltas else None,
                rounds=len({r.round for r in train}),
                receipts=len(pairs),
                rows=max((r.rows for r in train), default=0),
            )
        )
    return spends


def policy_decision(engine: Engine, decision_id: str) -> PolicyDecision | None:
    """The readable side of a recorded decision (its reasons), if any."""
    with session_scope(engine) as session:
        return session.get(PolicyDecision, decision_id)
