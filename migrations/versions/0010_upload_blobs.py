"""uploads: arrays moved to upload_blobs (compressed), sizes and sha256 kept, names per owner

Revision ID: 0010
Revises: 0009
"""

import hashlib
import io
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

uploads = sa.table(
    "uploads",
    sa.column("id", sa.Integer()),
    sa.column("data", sa.LargeBinary()),
    sa.column("stored_bytes", sa.Integer()),
    sa.column("sha256", sa.String(64)),
)
blobs = sa.table(
    "upload_blobs", sa.column("upload_id", sa.Integer()), sa.column("data", sa.LargeBinary())
)
OWNER_NAME = "uq_uploads_owner_id_name"


def compressed(data: bytes) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


FOREIGN_KEY = "fk_upload_blobs_upload_id_uploads"


# The foreign key is added last and dropped first: on SQLite, batch mode rebuilds uploads
# (DROP TABLE), which would delete every blob through ON DELETE CASCADE.
def upgrade() -> None:
    op.create_table(
        "upload_blobs",
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", name=op.f("pk_upload_blobs")),
    )
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("stored_bytes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    ids = connection.scalars(sa.select(uploads.c.id).order_by(uploads.c.id)).all()
    for upload_id in ids:  # one upload's arrays in memory at a time
        data = connection.scalar(sa.select(uploads.c.data).where(uploads.c.id == upload_id))
        blob = compressed(data)
        connection.execute(sa.insert(blobs).values(upload_id=upload_id, data=blob))
        connection.execute(
            sa.update(uploads)
            .where(uploads.c.id == upload_id)
            .values(stored_bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
        )
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("stored_bytes", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)
        batch.drop_column("data")
        batch.drop_constraint("uq_uploads_name", type_="unique")
    with op.batch_alter_table("upload_blobs") as batch:
        batch.create_foreign_key(
            op.f(FOREIGN_KEY), "uploads", ["upload_id"], ["id"], ondelete="CASCADE"
        )
    op.create_index(OWNER_NAME, "uploads", [sa.text("coalesce(owner_id, '')"), "name"], unique=True)


def downgrade() -> None:
    """Fails if two owners have uploads of the same name (one namespace before)."""
    op.drop_index(OWNER_NAME, table_name="uploads")
    with op.batch_alter_table("upload_blobs") as batch:
        batch.drop_constraint(op.f(FOREIGN_KEY), type_="foreignkey")
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("data", sa.LargeBinary(), nullable=True))
    connection = op.get_bind()
    ids = connection.scalars(sa.select(blobs.c.upload_id)).all()
    for upload_id in ids:  # np.load reads the compressed .npz as it is
        data = connection.scalar(sa.select(blobs.c.data).where(blobs.c.upload_id == upload_id))
        connection.execute(sa.update(uploads).where(uploads.c.id == upload_id).values(data=data))
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("data", existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column("sha256")
        batch.drop_column("stored_bytes")
        batch.create_unique_constraint(batch.f("uq_uploads_name"), ["name"])
    op.drop_table("upload_blobs")
