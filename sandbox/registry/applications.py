"""The repository of companies' applications to join."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from sandbox.db import session_scope
from sandbox.errors import Conflict, NotFound
from sandbox.registry.models import CompanyApplication

APPLICATION_STATUSES = ("pending", "admitted", "refused")


def add_application(engine: Engine, application: CompanyApplication) -> CompanyApplication:
    with session_scope(engine) as session:
        session.add(application)
        session.flush()
        session.refresh(application)
        return application


def get_application(engine: Engine, application_id: str) -> CompanyApplication:
    with session_scope(engine) as session:
        found = session.get(CompanyApplication, application_id)
        if found is None:
            raise NotFound(f"no application {application_id!r}")
        return found


def applications(
    engine: Engine, status: str | None = None, limit: int = 200
) -> list[CompanyApplication]:
    """Applications, oldest first (``status``: only those)."""
    query = select(CompanyApplication)
    if status is not None:
        query = query.where(CompanyApplication.status == status)
    query = query.order_by(col(CompanyApplication.submitted_at)).limit(limit)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def update_pending(engine: Engine, application_id: str, **fields: Any) -> CompanyApplication:
    """Change a pending application (Conflict when it was decided meanwhile)."""
    with session_scope(engine) as session:
        found = session.get(CompanyApplication, application_id)
        if found is None:
            raise NotFound(f"no application {application_id!r}")
        if found.status != "pending":
            raise Conflict(f"application {application_id} was {found.status} already")
        for name, value in fields.items():
            setattr(found, name, value)
        session.add(found)
        session.flush()
        session.refresh(found)
        return found


def application_of_request(engine: Engine, request_sha256: str) -> CompanyApplication | None:
    """The application a signed request made already (a request serves once)."""
    query = select(CompanyApplication).where(CompanyApplication.request_sha256 == request_sha256)
    with session_scope(engine) as session:
        return session.exec(query).first()
