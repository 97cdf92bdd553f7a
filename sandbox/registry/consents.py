"""The repository of consents: a company's grant of a dataset to a purpose, until an expiry,
revocable at any time."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from sandbox.db import session_scope
from sandbox.errors import Conflict, Invalid, NotFound
from sandbox.registry.models import Consent, Dataset
from sandbox.utc import utcnow
from sandbox.vocabulary import dataset_id, new_id


def new_consents(
    company_id: str,
    dataset: str,
    purposes: Iterable[str],
    valid_for: timedelta,
    ids: Iterable[str] | None = None,
) -> list[Consent]:
    """Consents of ``dataset``, one per purpose, from now for ``valid_for`` (not stored)."""
    if valid_for <= timedelta(0):
        raise Invalid("a consent must be valid for a positive period")
    now = utcnow()
    purposes = list(purposes)
    chosen = list(ids) if ids is not None else [new_id("consent") for _ in purposes]
    return [
        Consent(
            id=consent_id,
            company_id=company_id,
            dataset_id=dataset_id(company_id, dataset),
            purpose=purpose,
            granted_at=now,
            expires_at=now + valid_for,
        )
        for consent_id, purpose in zip(chosen, purposes, strict=True)
    ]


def add_consent(engine: Engine, consent: Consent) -> Consent:
    with session_scope(engine) as session:
        if session.get(Dataset, consent.dataset_id) is None:
            raise NotFound(f"company {consent.company_id!r} has no dataset {consent.dataset_id!r}")
        session.add(consent)
        return consent


def find_consent(engine: Engine, company_id: str, consent_id: str) -> Consent | None:
    """The company's consent ``consent_id``; None if there is none or it is another's."""
    with session_scope(engine) as session:
        consent = session.get(Consent, consent_id)
    return consent if consent is not None and consent.company_id == company_id else None


def mark_revoked(engine: Engine, company_id: str, consent_id: str, reason: str = "") -> Consent:
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


def consents_of(engine: Engine, company_id: str) -> list[Consent]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Consent)
                .where(Consent.company_id == company_id)
                .order_by(col(Consent.granted_at), Consent.id)
            ).all()
        )


def consents_for(engine: Engine, dataset_ids: list[str], purpose: str) -> list[Consent]:
    """Every consent (live or not) of the datasets for ``purpose``."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Consent).where(
                    col(Consent.dataset_id).in_(dataset_ids),
                    Consent.purpose == purpose,
                )
            ).all()
        )
