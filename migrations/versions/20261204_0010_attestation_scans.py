"""Scanned records of FM/wired station inspections (issue 16, item 5).

- ``attestation_scan``: the PDF/JPEG/PNG scan of the paper record an inspector signed,
  stored in the database beside the attestation (same backup, same transaction as the
  attestation and its audit row).

Revision ID: 0010
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "attestation_scan",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("attestation_id", BIGINT, nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("media_type", sa.String(length=40), nullable=False),
        sa.Column("size_bytes", BIGINT, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", BIGINT, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["attestation_id"], ["manual_attestation.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attestation_scan", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attestation_scan_attestation_id", ["attestation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attestation_scan", schema=None) as batch_op:
        batch_op.drop_index("ix_attestation_scan_attestation_id")
    op.drop_table("attestation_scan")
