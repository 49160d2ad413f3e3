"""Safe sends and full control of scheduled bulletins; notes on alarm acknowledgement;
the province's own abbreviations for speech text.

- ``broadcast.client_key``: the idempotency key a form or API client sends, unique per
  creator, so a double click creates one bulletin, not two.
- ``broadcast.previous_version_id``: an edit creates a new version and keeps the old one
  (cancelled) as history.
- ``alarm.ack_note``: what the technician wrote when acknowledging.
- ``tts_abbreviation``: abbreviations a province adds from the web, over the shipped list.

Revision ID: 0007
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("broadcast", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_key", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("previous_version_id", BIGINT, nullable=True))
        batch_op.create_foreign_key(
            "fk_broadcast_previous_version", "broadcast", ["previous_version_id"], ["id"]
        )
        batch_op.create_unique_constraint("uq_broadcast_client_key", ["created_by", "client_key"])
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ack_note", sa.String(length=500), nullable=True))
    op.create_table(
        "tts_abbreviation",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("abbr", sa.String(length=40), nullable=False),
        sa.Column("spoken", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("abbr", name="uq_tts_abbreviation_abbr"),
    )


def downgrade() -> None:
    op.drop_table("tts_abbreviation")
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.drop_column("ack_note")
    with op.batch_alter_table("broadcast", schema=None) as batch_op:
        batch_op.drop_constraint("uq_broadcast_client_key", type_="unique")
        batch_op.drop_constraint("fk_broadcast_previous_version", type_="foreignkey")
        batch_op.drop_column("previous_version_id")
        batch_op.drop_column("client_key")
