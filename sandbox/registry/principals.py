"""The repository of the API's principals (engineers, regulators, operators, with their
public keys) and their tokens (stored only as their SHA-256)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from sandbox.db import session_scope
from sandbox.errors import Conflict, NotFound
from sandbox.registry.models import ApiToken, Principal
from sandbox.utc import utcnow


def add_principal(engine: Engine, principal: Principal) -> Principal:
    with session_scope(engine) as session:
        if session.get(Principal, principal.id) is not None:
            raise Conflict(f"a principal with id {principal.id!r} is registered already")
        session.add(principal)
        return principal


def find_principal(engine: Engine, principal_id: str) -> Principal | None:
    with session_scope(engine) as session:
        return session.get(Principal, principal_id)


def get_principal(engine: Engine, principal_id: str) -> Principal:
    principal = find_principal(engine, principal_id)
    if principal is None:
        raise NotFound(f"no principal {principal_id!r}")
    return principal


def all_principals(engine: Engine) -> list[Principal]:
    with session_scope(engine) as session:
        return list(session.exec(select(Principal).order_by(Principal.id)).all())


def mark_disabled(engine: Engine, principal_id: str) -> tuple[Principal, int]:
    """Disable a principal and revoke every token it holds, in one transaction; returns the
    principal and how many tokens were revoked."""
    now = utcnow()
    with session_scope(engine) as session:
        principal = session.get(Principal, principal_id)
        if principal is None:
            raise NotFound(f"no principal {principal_id!r}")
        if principal.status != "active":
            raise Conflict(f"principal {principal_id!r} is disabled already")
        principal.status = "disabled"
        principal.disabled_at = now
        session.add(principal)
        live = session.exec(
            select(ApiToken).where(
                ApiToken.principal_id == principal_id,
                ApiToken.role == principal.role,
                col(ApiToken.revoked_at).is_(None),
            )
        ).all()
        for token in live:
            token.revoked_at = now
            session.add(token)
        return principal, len(live)


def add_token(engine: Engine, record: ApiToken) -> ApiToken:
    """Store a token; a signed request (its ``proof_sha256``) serves for one token only."""
    try:
        with session_scope(engine) as session:
            session.add(record)
    except IntegrityError:
        raise Conflict(
            "this signed request was used already; sign a new one with a fresh nonce"
        ) from None
    return record


def token_by_digest(engine: Engine, digest: str) -> ApiToken | None:
    with session_scope(engine) as session:
        return session.exec(select(ApiToken).where(ApiToken.token_sha256 == digest)).first()


def tokens_of(engine: Engine, role: str, principal_id: str) -> list[ApiToken]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(ApiToken)
                .where(ApiToken.role == role, ApiToken.principal_id == principal_id)
                .order_by(col(ApiToken.created_at), ApiToken.id)
            ).all()
        )


def get_token(engine: Engine, token_id: str) -> ApiToken:
    with session_scope(engine) as session:
        record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound(f"no token {token_id!r}")
    return record


def mark_token_revoked(engine: Engine, token_id: str) -> ApiToken:
    with session_scope(engine) as session:
        record = session.get(ApiToken, token_id)
        if record is None:
            raise NotFound(f"no token {token_id!r}")
        if record.revoked_at is not None:
            raise Conflict(f"token {token_id} was revoked already")
        record.revoked_at = utcnow()
        session.add(record)
        return record
