"""Job warrants: the rules the policy decided for a job and the signed warrant issued for
it; regulators' key records endorsed by the installation's regulator key; the companies'
signed notices of their nodes' refusals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job", sa.Column("rules", sa.JSON(), nullable=True))
    op.add_column("job", sa.Column("warrant", sa.Text(), nullable=True))
    op.add_column("principal", sa.Column("endorsement", sa.JSON(), nullable=True))
    op.create_table(
        "node_refusal",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("task", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("cause", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("noticed_at", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("via", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("recorded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ledger_index", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_node_refusal_company_id"), "node_refusal", ["company_id"], unique=False
    )
    op.create_index(op.f("ix_node_refusal_job_id"), "node_refusal", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_node_refusal_job_id"), table_name="node_refusal")
    op.drop_index(op.f("ix_node_refusal_company_id"), table_name="node_refusal")
    op.drop_table("node_refusal")
    op.drop_column("principal", "endorsement")
    op.drop_column("job", "warrant")
    op.drop_column("job", "rules")
