"""metrics per cross-validation fold

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.add_column(sa.Column("fold", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint("uq_metrics_job_id_epoch", type_="unique")
        batch.create_unique_constraint("uq_metrics_job_id_fold_epoch", ["job_id", "fold", "epoch"])


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.drop_constraint("uq_metrics_job_id_fold_epoch", type_="unique")
        batch.create_unique_constraint("uq_metrics_job_id_epoch", ["job_id", "epoch"])
        batch.drop_column("fold")
