"""jobs: indexes that list newest first, unfiltered or by status, family or owner, replacing
the single-column ones

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A filtered page used the column's index to find every matching row, then sorted them all
# (SQLite: 170 ms for family=mlp at 100,000 jobs). Led by the same column, these give the rows
# in order (newest first: created_at, id); the other filter columns in the key let a second
# filter and count(*) read only the index.
LISTING = {
    "ix_jobs_created_at_id": ["created_at", "id"],
    "ix_jobs_status_listing": ["status", "created_at", "id", "family", "owner_id"],
    "ix_jobs_family_listing": ["family", "created_at", "id", "status", "owner_id"],
    "ix_jobs_owner_id_listing": ["owner_id", "created_at", "id", "status", "family"],
}
REPLACED = ("status", "family", "owner_id", "created_at")  # ix_jobs_<column>, from 0001


def upgrade() -> None:
    for name, columns in LISTING.items():
        op.create_index(name, "jobs", columns)
    for column in REPLACED:
        op.drop_index(f"ix_jobs_{column}", table_name="jobs")


def downgrade() -> None:
    for column in REPLACED:
        op.create_index(f"ix_jobs_{column}", "jobs", [column])
    for name in LISTING:
        op.drop_index(name, table_name="jobs")
