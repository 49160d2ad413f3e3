"""Warning tones per event type (issue 19, item 4).

- ``alert_template.tone_pattern`` / ``tone_hz``: the province chooses per event type whether
  and how the warning tone sounds (NULL = the "*" template's, else the province setting;
  "" = no tone).
- ``cap_alert.tone``: the tone chosen with the alert's text, so an approval later and every
  repeat sound the same tone as the first airing, and the alert page can say which it was.

All nullable: existing templates keep the province setting, existing alerts resolve it as
before.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_template") as batch:
        batch.add_column(sa.Column("tone_pattern", sa.String(40), nullable=True))
        batch.add_column(sa.Column("tone_hz", sa.Float(), nullable=True))
    with op.batch_alter_table("cap_alert") as batch:
        batch.add_column(sa.Column("tone", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cap_alert") as batch:
        batch.drop_column("tone")
    with op.batch_alter_table("alert_template") as batch:
        batch.drop_column("tone_hz")
        batch.drop_column("tone_pattern")
