"""Covering indexes for the indicator's proof-of-play aggregations (issue 16, item 7).

A province's year holds millions of ``airing_target`` rows. The evaluation groups them per
(airing, commune) and per (commune, village, airing); with these two indexes the database
walks the rows already in that order and reads only the index, instead of visiting the
wide table and sorting every row (indicator/evaluate.py, docs/indicator.md section 7).

Revision ID: 0015
Revises: 0009 (0010 when written; main gained 0011 and 0009 meanwhile)
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_airing_target_outcome",
        "airing_target",
        ["airing_id", "commune_id", "village_id", "phase", "started_at_ms"],
    )
    op.create_index(
        "ix_airing_target_village_outcome",
        "airing_target",
        ["commune_id", "village_id", "airing_id", "phase", "started_at_ms"],
    )


def downgrade() -> None:
    op.drop_index("ix_airing_target_village_outcome", table_name="airing_target")
    op.drop_index("ix_airing_target_outcome", table_name="airing_target")
