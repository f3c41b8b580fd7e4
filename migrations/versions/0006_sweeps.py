"""sweeps, and the sweep, cell and repeat of a sweep's jobs

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    with op.batch_alter_table("sweeps") as batch:
        batch.create_index(batch.f("ix_sweeps_owner_id"), ["owner_id"], unique=False)
        batch.create_index(batch.f("ix_sweeps_created_at"), ["created_at"], unique=False)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("sweep_cell", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sweep_repeat", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_jobs_sweep_id"), ["sweep_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_jobs_sweep_id_sweeps"), "sweeps", ["sweep_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(batch.f("fk_jobs_sweep_id_sweeps"), type_="foreignkey")
        batch.drop_index(batch.f("ix_jobs_sweep_id"))
        batch.drop_column("sweep_repeat")
        batch.drop_column("sweep_cell")
        batch.drop_column("sweep_id")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_index(batch.f("ix_sweeps_created_at"))
        batch.drop_index(batch.f("ix_sweeps_owner_id"))
    op.drop_table("sweeps")
