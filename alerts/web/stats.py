"""``GET /v1/stats``: alert counts and time to fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from alerts import stats
from alerts.web.api import Admin, EngineDep, NowDep

router = APIRouter(tags=["stats"])


@router.get("/v1/stats", dependencies=[Admin])
def get_stats(engine: EngineDep, now: NowDep,
              days: Annotated[int, Query(ge=1, le=366, description="Window of resolved alerts")] = 30) -> dict[str, Any]:
    """Alerts by state, and median / 90th-percentile time to fix per provider and per code."""
    return stats.time_to_fix(engine, now=now, window=timedelta(days=days))
