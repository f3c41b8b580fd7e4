"""jobs.stack_key: jobs with the same key may train as one stack

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("stack_key", sa.String(64), nullable=True))
    # A worker looks for the queued jobs of a key, oldest first.
    op.create_index("ix_jobs_stack_key", "jobs", ["stack_key", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_stack_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stack_key")
