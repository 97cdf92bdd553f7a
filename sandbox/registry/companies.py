"""The repository of companies and their datasets (manifests only, never rows)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from sandbox.data.manifest import DatasetManifest
from sandbox.db import session_scope
from sandbox.errors import Conflict, Invalid, NotFound, check_id
from sandbox.identity import decode_public_key_b64
from sandbox.registry.models import Company, Consent, Dataset
from sandbox.vocabulary import dataset_id, is_sha256

MAX_COUNT = 2**31 - 1
"""The largest count a registry column holds on every database (a 32-bit INTEGER)."""


def check_public_key(public_key: str) -> None:
    try:
        decode_public_key_b64(public_key)
    except ValueError as exc:
        raise Invalid(f"public_key: {exc}") from exc


def check_filled(manifest: DatasetManifest) -> None:
    """A manifest that a company's vault preparation filled in: a row count, and a content
    hash of SHA-256 hex; counts that every database holds."""
    if manifest.row_count is None or manifest.content_hash is None:
        raise Invalid("the manifest lacks its row count and content hash; prepare the vault first")
    if not is_sha256(manifest.content_hash):
        raise Invalid(
            "content_hash must be the SHA-256 of the vault files, 64 lower-case hex digits"
        )
    for name in ("row_count", "train_rows", "test_rows"):
        value = getattr(manifest, name)
        if value is not None and not 0 <= value <= MAX_COUNT:
            raise Invalid(f"{name} must be between 0 and {MAX_COUNT}, not {value}")
    if manifest.row_count < 1:
        raise Invalid("row_count must be at least 1: a dataset without rows serves no job")


def _dataset_row(company_id: str, manifest: DatasetManifest) -> Dataset:
    assert manifest.row_count is not None and manifest.content_hash is not None
    return Dataset(
        id=dataset_id(company_id, manifest.name),
        company_id=company_id,
        name=manifest.name,
        industry=manifest.industry,
        grade=manifest.grade,
        personal_data=manifest.personal_data,
        row_count=manifest.row_count,
        content_hash=manifest.content_hash,
        manifest=manifest.model_dump(mode="json"),
    )


def add_company(
    engine: Engine,
    company: Company,
    manifest: DatasetManifest | None = None,
    consents: list[Consent] | None = None,
) -> tuple[Company, Dataset | None, list[Consent]]:
    """Add a company and, optionally, its dataset and consents over it, in one transaction:
    all or nothing."""
    check_id(company.id, "company id")
    check_public_key(company.public_key)
    if not company.industry.strip():
        raise Invalid("industry must not be empty")
    consents = consents or []
    if manifest is None and consents:
        raise Invalid("consents cover a dataset: give the dataset's manifest with them")
    if manifest is not None:
        check_filled(manifest)
    with session_scope(engine) as session:
        if session.get(Company, company.id) is not None:
            raise Conflict(f"a company with id {company.id!r} has already joined")
        session.add(company)
        session.flush()  # without ORM relationships, flush parents before children
        dataset = None
        if manifest is not None:
            dataset = _dataset_row(company.id, manifest)
            session.add(dataset)
            session.flush()
        for consent in consents:
            check_id(consent.purpose, "purpose")
            if dataset is None or (consent.company_id, consent.dataset_id) != (
                company.id,
                dataset.id,
            ):
                raise Invalid(f"consent {consent.id} does not name this company's dataset")
        session.add_all(consents)
        session.flush()
        return company, dataset, consents


def find_company(engine: Engine, company_id: str) -> Company | None:
    with session_scope(engine) as session:
        return session.get(Company, company_id)


def get_company(engine: Engine, company_id: str) -> Company:
    company = find_company(engine, company_id)
    if company is None:
        raise NotFound(f"no company {company_id!r}")
    return company


def all_companies(engine: Engine) -> list[Company]:
    with session_scope(engine) as session:
        return list(session.exec(select(Company).order_by(Company.id)).all())


def add_dataset(engine: Engine, company_id: str, manifest: DatasetManifest) -> Dataset:
    """Add the manifest of a dataset that the company's vault has filled in."""
    check_filled(manifest)
    with session_scope(engine) as session:
        if session.get(Company, company_id) is None:
            raise NotFound(f"no company {company_id!r}")
        dataset = _dataset_row(company_id, manifest)
        if session.get(Dataset, dataset.id) is not None:
            raise Conflict(f"company {company_id!r} already registered a dataset {manifest.name!r}")
        session.add(dataset)
        return dataset


def find_dataset(engine: Engine, company_id: str, name: str) -> Dataset | None:
    with session_scope(engine) as session:
        return session.get(Dataset, dataset_id(company_id, name))


def get_dataset(engine: Engine, company_id: str, name: str) -> Dataset:
    found = find_dataset(engine, company_id, name)
    if found is None:
        raise NotFound(f"company {company_id!r} has no dataset {name!r}")
    return found


def datasets_of(engine: Engine, company_id: str) -> list[Dataset]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Dataset).where(Dataset.company_id == company_id).order_by(Dataset.id)
            ).all()
        )


def datasets_named(engine: Engine, companies: list[str], name: str) -> dict[str, Dataset]:
    """The dataset ``name`` of each of ``companies`` that has one, by dataset id."""
    ids = [dataset_id(c, name) for c in companies]
    with session_scope(engine) as session:
        rows = session.exec(select(Dataset).where(col(Dataset.id).in_(ids))).all()
    return {d.id: d for d in rows}


def companies_by_id(engine: Engine, ids: list[str]) -> dict[str, Company]:
    with session_scope(engine) as session:
        rows = session.exec(select(Company).where(col(Company.id).in_(ids))).all()
    return {c.id: c for c in rows}
