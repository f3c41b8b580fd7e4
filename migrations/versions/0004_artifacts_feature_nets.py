"""per-epoch artifacts and the feature nets of sample quality

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint(
            "job_id", "fold", "epoch", "name", name=op.f("uq_artifacts_job_id_fold_epoch_name")
        ),
    )
    with op.batch_alter_table("artifacts") as batch:
        batch.create_index(batch.f("ix_artifacts_job_id"), ["job_id"], unique=False)
    op.create_table(
        "feature_nets",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_feature_nets")),
    )


def downgrade() -> None:
    op.drop_table("feature_nets")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_index(batch.f("ix_artifacts_job_id"))
    op.drop_table("artifacts")
