"""Settlement: compute vouchers and their use, jobs' settlement statements, disputes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STR = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "voucher",
        sa.Column("id", _STR(length=40), nullable=False),
        sa.Column("company_id", _STR(length=64), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", _STR(length=3), nullable=False),
        sa.Column("purpose", _STR(length=200), nullable=False),
        sa.Column("valid_until", _TIME(), nullable=False),
        sa.Column("issued_by", _STR(length=64), nullable=False),
        sa.Column("issued_at", _TIME(), nullable=False),
        sa.Column("decision_id", _STR(length=64), nullable=False),
        sa.ForeignKeyConstraint(["company_id"], ["company.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_voucher_company_id"), "voucher", ["company_id"], unique=False)
    op.create_table(
        "voucher_use",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("voucher_id", _STR(length=40), nullable=False),
        sa.Column("job_id", _STR(length=40), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["voucher_id"], ["voucher.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_voucher_use_job_id"), "voucher_use", ["job_id"], unique=False)
    op.create_index(op.f("ix_voucher_use_voucher_id"), "voucher_use", ["voucher_id"], unique=False)
    op.create_table(
        "settlement",
        sa.Column("job_id", _STR(length=40), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("signature", _STR(length=128), nullable=False),
        sa.Column("settled_by", _STR(length=64), nullable=False),
        sa.Column("settled_at", _TIME(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_table(
        "settlement_dispute",
        sa.Column("id", _STR(length=40), nullable=False),
        sa.Column("job_id", _STR(length=40), nullable=False),
        sa.Column("company_id", _STR(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", _STR(length=16), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", _STR(length=64), nullable=True),
        sa.Column("opened_at", _TIME(), nullable=False),
        sa.Column("resolved_at", _TIME(), nullable=True),
        sa.ForeignKeyConstraint(["company_id"], ["company.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_settlement_dispute_job_id"), "settlement_dispute", ["job_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_settlement_dispute_job_id"), table_name="settlement_dispute")
    op.drop_table("settlement_dispute")
    op.drop_table("settlement")
    op.drop_index(op.f("ix_voucher_use_voucher_id"), table_name="voucher_use")
    op.drop_index(op.f("ix_voucher_use_job_id"), table_name="voucher_use")
    op.drop_table("voucher_use")
    op.drop_index(op.f("ix_voucher_company_id"), table_name="voucher")
    op.drop_table("voucher")
