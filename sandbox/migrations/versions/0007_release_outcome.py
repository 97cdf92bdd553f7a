"""A release decision's outcome: allow, deny, or insufficient evidence (held for review).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "release",
        sa.Column(
            "outcome",
            sqlmodel.sql.sqltypes.AutoString(length=32),
            nullable=False,
            server_default="deny",
        ),
    )
    # Decisions made before outcomes existed were allowed or denied, nothing in between.
    op.execute("UPDATE release SET outcome = 'allow' WHERE allowed")


def downgrade() -> None:
    op.drop_column("release", "outcome")
