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
from sqlmodel import Session, select

from sandbox import pki
from sandbox.bundle import running_bundle
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
    NodeKey,
    PolicyDecision,
    PrivacySpend,
    Receipt,
    Release,
    Round,
    utcnow,
)

_SHA256 = re.compile(r"[0-9a-f]{64}")

# The largest count a registry column holds on every database (a 32-bit INTEGER in PostgreSQL).
MAX_COUNT = 2**31 - 1

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
    if not _SHA256.fullmatch(manifest.content_hash):
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
    engine: Engine,
    spec: JobSpec,
    filed_by: str,
    job_id: str | None = None,
    bundle_hash: str | None = None,
    **fields: object,
) -> Job:
    """Store a validated spec with its hash, and file the code bundle that will run it (by
    default the code of this process); every named company must have the dataset. ``fields``
    (status, risk tier, admission decision) are stored with it, in one step."""
    bundle = bundle_hash if bundle_hash is not None else running_bundle().digest
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
        _file_algorithm(session, job, bundle, spec.spec_hash)
        return job


def _file_algorithm(session: Session, job: Job, bundle_hash: str, spec_hash: str) -> None:
    if not _SHA256.fullmatch(bundle_hash):
        raise Invalid("a code bundle hash is 64 lowercase hexadecimal digits")
    if spec_hash != job.spec_hash:
        raise Conflict(f"job {job.id} was filed with another spec (hash {job.spec_hash[:16]}…)")
    if job.bundle_hash is not None and job.bundle_hash != bundle_hash:
        raise Conflict(f"job {job.id} already has a filed code bundle; file a new job instead")
    job.bundle_hash = bundle_hash
    session.add(job)
    # Ledger hook: the algorithm filing (job, spec hash, bundle hash, filer) is recorded here.


def file_algorithm(engine: Engine, job_id: str, bundle_hash: str, spec_hash: str) -> Job:
    """Algorithm filing: bind ``job_id`` to the hash of its spec and of the code bundle that
    may run it. Company nodes refuse every task of the job whose running code hashes to
    anything else. A filed bundle is never replaced."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        _file_algorithm(session, job, bundle_hash, spec_hash)
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


def count_jobs_by_status(engine: Engine) -> dict[str, int]:
    """How many jobs are in each status."""
    from sqlalchemy import func

    with session_scope(engine) as session:
        rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: count for status, count in rows}


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
                select(Receipt).where(Receipt.job_id == job_id).order_by(Receipt.round)
            ).all()
        )


@dataclass(frozen=True)
class JobSpend:
    """What one job cost one company in privacy: what the coordinator charged (write-ahead,
    never below what the company reported) and what the company's own signed receipts state."""

    job_id: str
    purpose: str
    budget: float | None
    epsilon: float
    epsilon_receipted: float
    delta: float | None
    runs: int
    runs_unsettled: int
    receipts: int


def company_spend(engine: Engine, company_id: str) -> list[JobSpend]:
    """The company's privacy spend per job, oldest job first."""
    with session_scope(engine) as session:
        charges = session.exec(
            select(PrivacySpend)
            .where(PrivacySpend.company_id == company_id)
            .order_by(PrivacySpend.id)  # type: ignore[arg-type]
        ).all()
        receipts = session.exec(
            select(Receipt).where(Receipt.company_id == company_id).order_by(Receipt.id)  # type: ignore[arg-type]
        ).all()
        job_ids = list(dict.fromkeys([c.job_id for c in charges] + [r.job_id for r in receipts]))
        jobs = {
            j.id: j
            for j in session.exec(select(Job).where(Job.id.in_(job_ids))).all()  # type: ignore[attr-defined]
        }
    spends = []
    for job_id in job_ids:
        job = jobs[job_id]
        charged = [c for c in charges if c.job_id == job_id]
        signed = [r for r in receipts if r.job_id == job_id]
        dp = (job.spec.get("privacy") or {}).get("dp") or {}
        spends.append(
            JobSpend(
                job_id=job_id,
                purpose=job.purpose,
                budget=dp.get("epsilon"),
                epsilon=max((c.epsilon_job for c in charged), default=0.0),
                epsilon_receipted=sum(r.epsilon or 0.0 for r in signed if r.task == "train"),
                delta=max((c.delta for c in charged), default=None),
                runs=len(charged),
                runs_unsettled=sum(1 for c in charged if c.status != "reported"),
                receipts=len(signed),
            )
        )
    return spends


def policy_decision(engine: Engine, decision_id: str) -> PolicyDecision | None:
    """The readable side of a recorded decision (its reasons), if any."""
    with session_scope(engine) as session:
        return session.get(PolicyDecision, decision_id)


def record_release(engine: Engine, release: Release) -> Release:
    """Store a release decision (allowed or denied); every decision is kept, none replaced."""
    with session_scope(engine) as session:
        if session.get(Job, release.job_id) is None:
            raise NotFound(f"no job {release.job_id!r}")
        session.add(release)
        session.flush()
        return release


def job_releases(engine: Engine, job_id: str) -> list[Release]:
    """A job's release decisions, oldest first."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Release).where(Release.job_id == job_id).order_by(Release.id)  # type: ignore[arg-type]
            ).all()
        )


# ----------------------------------------------------------------------- node keys
def set_node_key(
    engine: Engine, company_id: str, public_key: str, replace: bool = False
) -> NodeKey:
    """Record the public half of a company's SuperNode authentication key. A different key
    replaces the old one only with ``replace`` (its SuperLink registration is then void)."""
    try:
        line = pki.normalise_node_public_key(public_key)
    except pki.PkiError as exc:
        raise Invalid(f"node key: {exc}") from exc
    with session_scope(engine) as session:
        if session.get(Company, company_id) is None:
            raise NotFound(f"no company {company_id!r}")
        other = session.exec(
            select(NodeKey).where(NodeKey.public_key == line, NodeKey.company_id != company_id)
        ).first()
        if other is not None:
            raise Conflict("this node key is already another company's")
        current = session.get(NodeKey, company_id)
        if current is not None and current.public_key == line:
            return current
        if current is not None and not replace:
            raise Conflict(f"company {company_id!r} already has another node key")
        if current is not None:
            session.delete(current)
            session.flush()
        record = NodeKey(
            company_id=company_id, public_key=line, fingerprint=pki.node_key_fingerprint(line)
        )
        session.add(record)
        return record


def get_node_key(engine: Engine, company_id: str) -> NodeKey:
    with session_scope(engine) as session:
        record = session.get(NodeKey, company_id)
        if record is None:
            raise NotFound(f"company {company_id!r} has no node key")
        return record


def list_node_keys(engine: Engine) -> list[NodeKey]:
    with session_scope(engine) as session:
        return list(session.exec(select(NodeKey).order_by(NodeKey.company_id)).all())


def record_node_registration(
    engine: Engine, company_id: str, public_key: str, superlink: str, node_id: str
) -> NodeKey:
    """The SuperLink at ``superlink`` admitted ``public_key`` as node ``node_id``. Refused when
    the registry's key for the company has changed in the meantime."""
    with session_scope(engine) as session:
        record = session.get(NodeKey, company_id)
        if record is None or record.public_key != pki.normalise_node_public_key(public_key):
            raise Conflict(f"the registry's node key of {company_id!r} is not the one registered")
        record.superlink = superlink
        record.flower_node_id = str(int(node_id))
        record.registered_at = utcnow()
        session.add(record)
        return record
