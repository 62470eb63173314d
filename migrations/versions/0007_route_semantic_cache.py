"""route semantic cache options

``routes.semantic_cache``: the semantic cache's settings as JSON (embedding_model,
threshold, max_entries, ttl_s, shared_across_keys); NULL: no semantic cache.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("semantic_cache", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("semantic_cache")
