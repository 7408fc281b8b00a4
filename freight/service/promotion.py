"""Promotion with bake time: an environment that `requires: {staging: 30m}` takes a commit only
after it was live on staging for 30 minutes without a break (still live, or replaced after it
had been that long). Judged from the finished deploys of the environment it requires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.db import App, Deploy, DeployStatus
from freight.durations import parse_duration
from freight.service import apps

# How many of the required environment's latest finished deploys are looked at.
LOOK_BACK = 200


@dataclass(frozen=True)
class Bake:
    """How long a sha has been live on an environment, at best (its longest stay there)."""

    environment: str
    needed: timedelta
    # Its longest unbroken time live there (None: never live there), and whether it still is.
    baked: timedelta | None
    live_now: bool
    # When the requirement is met, if it is not yet and the sha is still live there.
    met_at: datetime | None

    @property
    def met(self) -> bool:
        return self.baked is not None and self.baked >= self.needed


def bake(
    session: Session, app_id: int, environment: str, sha: str, needed: timedelta, *, at: datetime
) -> Bake:
    rows = list(
        session.execute(
            select(Deploy.sha, Deploy.date_finished)
            .where(
                Deploy.app_id == app_id,
                Deploy.environment == environment,
                Deploy.status == DeployStatus.FINISHED,
                Deploy.date_finished.is_not(None),
            )
            .order_by(Deploy.date_finished.desc(), Deploy.id.desc())
            .limit(LOOK_BACK)
        )
    )
    longest: timedelta | None = None
    live_now = False
    met_at = None
    until = at  # the newest deploy is live until now, each older one until the next
    for index, row in enumerate(rows):
        if row.sha == sha:
            stay = until - row.date_finished
            longest = stay if longest is None else max(longest, stay)
            if index == 0:
                live_now = True
                met_at = row.date_finished + needed
        until = row.date_finished
    return Bake(environment, needed, longest, live_now, met_at)


@dataclass(frozen=True)
class Unmet:
    rule: str  # web/production takes only what was live on staging for 30m
    missing: str  # 3f2a1b2 has been for 12m, met at 2026-12-07 10:12 UTC

    @property
    def text(self) -> str:
        return f"{self.rule}: {self.missing}"


def unmet(session: Session, app: App, environment: str, sha: str, *, at: datetime) -> list[Unmet]:
    """What the environment's promotion rules still miss for `sha` (nothing: it may go)."""
    missing = []
    for source, duration in apps.environment_of(app, environment).requires.items():
        found = bake(session, app.id, source, sha, parse_duration(duration), at=at)
        if found.met:
            continue
        rule = f"{app.name}/{environment} takes only what was live on {source} for {duration}"
        if found.baked is None:
            missing.append(Unmet(rule, f"{sha[:7]} was never live there"))
        elif found.live_now and found.met_at is not None:
            missing.append(
                Unmet(
                    rule,
                    f"{sha[:7]} has been for {_span(found.baked)}, met at "
                    f"{found.met_at:%Y-%m-%d %H:%M} UTC",
                )
            )
        else:
            missing.append(Unmet(rule, f"{sha[:7]} was live there for {_span(found.baked)} only"))
    return missing


def label(source: str) -> str:
    """What an environment that promotes by itself follows, where a branch would be named."""
    return f"promotion from {source}"


def _span(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
