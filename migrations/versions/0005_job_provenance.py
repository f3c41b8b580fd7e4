"""jobs record their provenance (versions, dataset hash, seeds) and what they rerun

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rerun_of", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_jobs_rerun_of"), ["rerun_of"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_rerun_of"))
        batch.drop_column("rerun_of")
        batch.drop_column("provenance")
