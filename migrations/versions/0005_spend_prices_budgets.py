"""spend: prices per variant, budgets per key

Prices are USD per 1M tokens on each route variant (NULL: no price); a key's budget is
USD per period with an optional alert fraction (NULL: no budget). Usage itself lives in
the limiter's counters (memory or Redis), not in SQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("route_variants") as batch:
        batch.add_column(sa.Column("price_input_per_1m", sa.Float(), nullable=True))
        batch.add_column(sa.Column("price_output_per_1m", sa.Float(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("budget_alert_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("budget_alert_at")
        batch.drop_column("budget_period")
        batch.drop_column("budget_usd")
    with op.batch_alter_table("route_variants") as batch:
        batch.drop_column("price_output_per_1m")
        batch.drop_column("price_input_per_1m")
