"""Freight's small read-only endpoints: deploys per day, and the client config."""

from __future__ import annotations

from importlib.metadata import version

from freight.api.deps import Reader, SessionDep, Values
from freight.api.inputs import Arguments, documented, parse
from freight.api.routing import Router
from freight.db import utcnow
from freight.service import apps, deploys

router = Router(tags=["stats"])
DAYS = 31


class StatsQuery(Arguments):
    app: str | None = None


@router.get(
    "/deploy-stats/", operation_id="deploy_stats", openapi_extra=documented(StatsQuery, body=False)
)
def deploy_stats(db: SessionDep, who: Reader, values: Values) -> list[tuple[int, int]]:
    """31 `[unix time of UTC midnight, deploys started that day]` pairs, oldest first."""
    query = parse(StatsQuery, values)
    if query.app is not None:
        apps.get_app(db, query.app, apps=who.apps)
    days = deploys.daily_counts(db, days=DAYS, today=utcnow(), app=query.app, apps=who.apps)
    return [(int(day.timestamp()), count) for day, count in days]


@router.get("/config/", operation_id="client_config")
def client_config(who: Reader) -> dict[str, str | None]:
    return {"SENTRY_PUBLIC_DSN": None, "VERSION": version("freight")}
