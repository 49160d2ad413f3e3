"""Idempotency keys for every creating endpoint (``loa.idempotency``).

- ``idempotency_key``: a key a person sent with a creating request, with the request's
  fingerprint, what it created and the answer; unique per person, written in the same
  transaction as the creation.

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "idempotency_key",
        sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=80), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_ms", BIGINT, nullable=False),
        sa.UniqueConstraint("username", "key", name="uq_idempotency_key_user_key"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_key")
