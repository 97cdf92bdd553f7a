"""The repository of company SuperNode keys (deployment engine) and their registration with
a SuperLink."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from sandbox.db import session_scope
from sandbox.errors import Conflict, Invalid, NotFound
from sandbox.identity import pki
from sandbox.registry.models import Company, NodeKey, NodeRefusal
from sandbox.utc import utcnow


def normalise_node_key(public_key: str) -> str:
    try:
        return pki.normalise_node_public_key(public_key)
    except pki.PkiError as exc:
        raise Invalid(f"node key: {exc}") from exc


def put_node_key(engine: Engine, company_id: str, line: str, replace: bool = False) -> NodeKey:
    """Store the public half (a normalised OpenSSH line) of a company's SuperNode key. A
    different key replaces the old one only with ``replace`` (its SuperLink registration is
    then void)."""
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


def find_node_key(engine: Engine, company_id: str) -> NodeKey | None:
    with session_scope(engine) as session:
        return session.get(NodeKey, company_id)


def get_node_key(engine: Engine, company_id: str) -> NodeKey:
    record = find_node_key(engine, company_id)
    if record is None:
        raise NotFound(f"company {company_id!r} has no node key")
    return record


def list_node_keys(engine: Engine) -> list[NodeKey]:
    with session_scope(engine) as session:
        return list(session.exec(select(NodeKey).order_by(NodeKey.company_id)).all())


def mark_registered(
    engine: Engine, company_id: str, public_key: str, superlink: str, node_id: str
) -> NodeKey:
    """The SuperLink at ``superlink`` admitted ``public_key`` as node ``node_id``. Refused when
    the registry's key for the company has changed in the meantime."""
    line = normalise_node_key(public_key)
    with session_scope(engine) as session:
        record = session.get(NodeKey, company_id)
        if record is None or record.public_key != line:
            raise Conflict(f"the registry's node key of {company_id!r} is not the one registered")
        record.superlink = superlink
        record.flower_node_id = str(int(node_id))
        record.registered_at = utcnow()
        session.add(record)
        return record


# ----------------------------------------------------------------------- refusal notices
def add_refusal(engine: Engine, refusal: NodeRefusal) -> tuple[NodeRefusal, bool]:
    """Store a refusal notice once; returns it and whether it is new."""
    with session_scope(engine) as session:
        found = session.get(NodeRefusal, refusal.id)
        if found is not None:
            return found, False
        session.add(refusal)
        session.flush()
        session.refresh(refusal)
        return refusal, True


def set_refusal_index(engine: Engine, refusal_id: str, index: int) -> None:
    with session_scope(engine) as session:
        row = session.get(NodeRefusal, refusal_id)
        if row is not None:
            row.ledger_index = index
            session.add(row)


def refusals_of(
    engine: Engine, company_id: str | None = None, job_id: str | None = None
) -> list[NodeRefusal]:
    query = select(NodeRefusal)
    if company_id is not None:
        query = query.where(NodeRefusal.company_id == company_id)
    if job_id is not None:
        query = query.where(NodeRefusal.job_id == job_id)
    with session_scope(engine) as session:
        return list(session.exec(query.order_by(col(NodeRefusal.recorded_at))).all())
