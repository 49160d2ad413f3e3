"""Alarm notifications (issue 18, item 7): per-user subscriptions (e-mail or webhook) and
the outbox of deliveries that are retried until sent or failed (``controller.notify``).

Revision ID: 0011
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notify_subscription",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=12), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("severities", sa.JSON(), nullable=False),
        sa.Column("communes", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_ms", BIGINT, nullable=False),
        sa.Column("updated_ms", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username", "channel", name="uq_notify_user_channel"),
    )
    op.create_index("ix_notify_subscription_username", "notify_subscription", ["username"])
    op.create_table(
        "notify_delivery",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("alarm_id", BIGINT, nullable=False),
        sa.Column("subscription_id", BIGINT, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", BIGINT, nullable=False),
        sa.Column("next_ms", BIGINT, nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_ms", BIGINT, nullable=False),
        sa.Column("sent_ms", BIGINT, nullable=True),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarm.id"]),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["notify_subscription.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alarm_id", "subscription_id", name="uq_notify_delivery"),
    )
    op.create_index("ix_notify_delivery_alarm_id", "notify_delivery", ["alarm_id"])
    op.create_index("ix_notify_delivery_subscription_id", "notify_delivery", ["subscription_id"])
    op.create_index("ix_notify_delivery_status", "notify_delivery", ["status"])


def downgrade() -> None:
    op.drop_table("notify_delivery")
    op.drop_table("notify_subscription")
