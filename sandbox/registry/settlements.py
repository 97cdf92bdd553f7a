"""Vouchers, their use in settlements, jobs' settlement statements and disputes."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from sandbox.db import session_scope
from sandbox.errors import NotFound
from sandbox.registry.models import Settlement, SettlementDispute, Voucher, VoucherUse

Row = TypeVar("Row", Voucher, SettlementDispute)


def _insert(engine: Engine, row: Row) -> Row:
    with session_scope(engine) as session:
        session.add(row)
        session.commit()
        session.refresh(row)
        return row


def add_voucher(engine: Engine, voucher: Voucher) -> Voucher:
    return _insert(engine, voucher)


def vouchers_of(engine: Engine, company_id: str) -> list[Voucher]:
    """The company's vouchers, those that expire first first."""
    with session_scope(engine) as session:
        return list(session.exec(
            select(Voucher).where(Voucher.company_id == company_id)
            .order_by(col(Voucher.valid_until), col(Voucher.id))
        ).all())  # fmt: skip


def used(engine: Engine, voucher_ids: list[str], except_job: str | None = None) -> dict[str, int]:
    """Cents taken from each voucher by settlements (other than ``except_job``'s)."""
    with session_scope(engine) as session:
        query = select(VoucherUse).where(col(VoucherUse.voucher_id).in_(voucher_ids))
        if except_job is not None:
            query = query.where(VoucherUse.job_id != except_job)
        taken: dict[str, int] = {v: 0 for v in voucher_ids}
        for use in session.exec(query).all():
            taken[use.voucher_id] += use.amount
        return taken


def save_settlement(engine: Engine, settlement: Settlement, uses: list[VoucherUse]) -> Settlement:
    """Store a job's statement (replacing an earlier revision) and what it takes from
    vouchers (replacing what the earlier revision took), in one transaction."""
    with session_scope(engine) as session:
        session.exec(delete(VoucherUse).where(col(VoucherUse.job_id) == settlement.job_id))
        earlier = session.get(Settlement, settlement.job_id)
        if earlier is not None:
            session.delete(earlier)
            session.flush()
        session.add(settlement)
        session.add_all(uses)
        session.commit()
        session.refresh(settlement)
        return settlement


def find_settlement(engine: Engine, job_id: str) -> Settlement | None:
    with session_scope(engine) as session:
        return session.get(Settlement, job_id)


def get_settlement(engine: Engine, job_id: str) -> Settlement:
    found = find_settlement(engine, job_id)
    if found is None:
        raise NotFound(f"job {job_id} has no settlement yet")
    return found


def add_dispute(engine: Engine, dispute: SettlementDispute) -> SettlementDispute:
    return _insert(engine, dispute)


def disputes_of(engine: Engine, job_id: str) -> list[SettlementDispute]:
    with session_scope(engine) as session:
        return list(session.exec(
            select(SettlementDispute).where(SettlementDispute.job_id == job_id)
            .order_by(col(SettlementDispute.opened_at), col(SettlementDispute.id))
        ).all())  # fmt: skip


def resolve_dispute(
    engine: Engine, dispute_id: str, status: str, resolution: str, by: str, at: datetime
) -> SettlementDispute:
    with session_scope(engine) as session:
        dispute = session.get(SettlementDispute, dispute_id)
        if dispute is None:
            raise NotFound(f"no dispute {dispute_id!r}")
        dispute.status, dispute.resolution = status, resolution
        dispute.resolved_by, dispute.resolved_at = by, at
        session.add(dispute)
        session.commit()
        session.refresh(dispute)
        return dispute
