"""Fleet health summary: the first thing a technician and a monitoring probe look at."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from controller import fleet_queries
from dashboard.context import AppContext
from dashboard.deps import DbSession, get_ctx
from dashboard.schemas import HealthSummary, NodeCounts
from loa.timeutil import format_datetime, now_ms

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get("/health/summary", response_model=HealthSummary)
def health_summary(s: DbSession, ctx: AppContext = Depends(get_ctx)):
    return HealthSummary(
        nodes=NodeCounts(**fleet_queries.state_counts(s)),
        rejected_messages=fleet_queries.rejected_counts(s),
        pending_nodes=fleet_queries.pending_count(s),
        controller=fleet_queries.controller_stats(ctx.controller),
        generated_at=format_datetime(now_ms()),
    )


@router.get("/health/live", include_in_schema=False)
def liveness() -> dict[str, str]:
    return {"status": "ok"}
