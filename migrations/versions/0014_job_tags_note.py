"""jobs.name, jobs.tags and jobs.note: a user's name, labels and words for a job
(PATCH /jobs/{id})

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added columns only: SQLite adds them in place (no batch rebuild, which with foreign keys
    # on would delete the jobs' rows in other tables).
    op.add_column("jobs", sa.Column("name", sa.String(200), nullable=True))
    op.add_column("jobs", sa.Column("tags", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "note")
    op.drop_column("jobs", "tags")
    op.drop_column("jobs", "name")
