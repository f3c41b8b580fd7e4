"""sweeps.family: the families of a sweep's cells, joined, so a sweep may have several

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR's length, and rebuilding the table there (batch mode)
    # would drop it, which with foreign keys on deletes the sweeps' jobs.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "sweeps", "family", type_=sa.String(255), existing_type=sa.String(32), nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        # A sweep of several families keeps its first.
        op.execute("UPDATE sweeps SET family = split_part(family, ',', 1)")
        op.alter_column(
            "sweeps", "family", type_=sa.String(32), existing_type=sa.String(255), nullable=False
        )
