"""Monthly roll-ups of the indicator's measurements, and the day counters that invalidate
them (issue 16, item 7; docs/indicator.md section 7).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from indicator.models import drop_rollup_trigger_ddl, rollup_trigger_ddl

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "indicator_day_version",
        sa.Column("day", BIG, primary_key=True, autoincrement=False),
        sa.Column("version", BIG, nullable=False),
    )
    op.create_table(
        "indicator_rollup_month",
        sa.Column("start_ms", BIG, primary_key=True, autoincrement=False),
        sa.Column("end_ms", BIG, nullable=False),
        sa.Column("versions", BIG, nullable=False),
        sa.Column("watch", sa.String(32), nullable=False),
        sa.Column("airings_end_ms", BIG, nullable=False),
        sa.Column("computed_ms", BIG, nullable=False),
    )
    op.create_table(
        "indicator_rollup_village",
        sa.Column("month_ms", BIG, primary_key=True, autoincrement=False),
        sa.Column("village_id", BIG, primary_key=True, autoincrement=False),
        sa.Column("first_ms", BIG, nullable=False),
        sa.Column("covered_ms", BIG, nullable=False),
        sa.Column("placements", sa.String(32), nullable=False),
    )
    op.create_table(
        "indicator_rollup_node",
        sa.Column("month_ms", BIG, primary_key=True, autoincrement=False),
        sa.Column("village_id", BIG, primary_key=True, autoincrement=False),
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("placed_ms", BIG, nullable=False),
        sa.Column("up_ms", BIG, nullable=False),
        sa.Column("seen_ms", BIG, nullable=False),
        sa.Column("start_available", sa.Boolean(), nullable=False),
        sa.Column("end_available", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "indicator_rollup_aimed",
        sa.Column("month_ms", BIG, primary_key=True, autoincrement=False),
        sa.Column("commune_id", BIG, primary_key=True, autoincrement=False),
        sa.Column("village_id", BIG, primary_key=True, autoincrement=False),
        sa.Column("aimed", BIG, nullable=False),
        sa.Column("played", BIG, nullable=False),
    )
    op.create_table(
        "indicator_rollup_heard",
        sa.Column("month_ms", BIG, primary_key=True, autoincrement=False),
        sa.Column("commune_id", BIG, primary_key=True, autoincrement=False),
        sa.Column("airing_id", BIG, primary_key=True, autoincrement=False),
        sa.Column("slot_ms", BIG, nullable=False),
        sa.Column("duration_ms", BIG, nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
    )
    for statement in rollup_trigger_ddl(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_rollup_trigger_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    for table in (
        "indicator_rollup_heard",
        "indicator_rollup_aimed",
        "indicator_rollup_node",
        "indicator_rollup_village",
        "indicator_rollup_month",
        "indicator_day_version",
    ):
        op.drop_table(table)
