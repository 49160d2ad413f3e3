"""Every package's tables in ``loa.db.Base.metadata``.

The floor layer owns the declarative base but cannot import the packages above it; this
module, at the top, imports each package's models by name so that ``create_all``, Alembic's
autogenerate and the migration tests see the whole schema."""

from __future__ import annotations

from sqlalchemy import MetaData

import alerts.models
import broadcasts.models
import controller.alarms
import controller.models
import controller.notify
import dashboard.models
import indicator.models
import loa.idempotency
import registry.models
import scheduler.models
from loa.db import Base, Database

MODEL_MODULES = (
    alerts.models,
    broadcasts.models,
    controller.alarms,
    controller.models,
    dashboard.models,
    indicator.models,
    registry.models,
    scheduler.models,
    controller.notify,
    loa.idempotency,
)


def import_all_models() -> MetaData:
    """The metadata with every table (importing this module registered them)."""
    return Base.metadata


def create_schema(db: Database) -> None:
    """Every package's tables in ``db`` (what ``loa`` does before any command)."""
    db.create_all()
