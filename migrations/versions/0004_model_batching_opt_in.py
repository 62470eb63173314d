"""model batching is opt-in

Batching used to default to 8 rows for every model with a dynamic first dimension,
which mixes clients' data when that dimension is not a batch. Rows still at the old
default (8) are switched off (0); values chosen explicitly (anything else) stay.
An operator who had chosen 8 on purpose re-enables it with
``litegate models update NAME --max-batch 8``. Downgrade keeps 0 (off in every version).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE models SET max_batch_size = 0 WHERE max_batch_size = 8")


def downgrade() -> None:
    pass  # 0 means "off" to the previous code as well; nothing to undo
