"""content belongs to a commune (NULL: the province's, shared down to every commune)

Before this, every officer saw, downloaded and broadcast every commune's uploads. Existing
rows made by a commune officer are given that officer's (first) commune; the rest stay the
province's.

Revision ID: 0005
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "owner_commune_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )
        batch_op.create_index(
            batch_op.f("ix_content_owner_commune_id"), ["owner_commune_id"], unique=False
        )
    op.execute(
        "UPDATE content SET owner_commune_id = ("
        " SELECT MIN(uc.commune_id) FROM app_user u"
        " JOIN app_user_commune uc ON uc.user_id = u.id"
        " WHERE u.username = content.creator AND u.role = 'commune')"
        " WHERE source <> 'province'"
    )


def downgrade() -> None:
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_content_owner_commune_id"))
        batch_op.drop_column("owner_commune_id")
