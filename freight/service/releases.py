"""Release state: which commit is live where (the last finished deploy), and what came before."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Integer, String, column, func, select, values
from sqlalchemy.orm import Session

from freight.db import App, Deploy, DeployStatus, Lock
from freight.service import apps, locks


def live_deploy(session: Session, app_id: int, environment: str) -> Deploy | None:
    return session.scalar(
        select(Deploy)
        .where(
            Deploy.app_id == app_id,
            Deploy.environment == environment,
            Deploy.status == DeployStatus.FINISHED,
        )
        .order_by(Deploy.date_finished.desc(), Deploy.id.desc())
        .limit(1)
    )


def current_sha(session: Session, app_id: int, environment: str) -> str | None:
    deploy = live_deploy(session, app_id, environment)
    return deploy.sha if deploy else None


def previous_sha(session: Session, app_id: int, environment: str) -> str | None:
    """The last finished sha other than the live one: what a rollback goes back to."""
    current = current_sha(session, app_id, environment)
    if current is None:
        return None
    return session.scalar(
        select(Deploy.sha)
        .where(
            Deploy.app_id == app_id,
            Deploy.environment == environment,
            Deploy.status == DeployStatus.FINISHED,
            Deploy.sha != current,
        )
        .order_by(Deploy.date_finished.desc(), Deploy.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class Release:
    app: str
    environment: str
    live: Deploy | None
    running: Deploy | None
    queued: int
    locks: list[Lock] = field(default_factory=list)


def release_state(
    session: Session, app_name: str | None = None, *, apps_allowed: frozenset[str] | None = None
) -> list[Release]:
    """Per app and environment: the live deploy, the running one, the queue length and the
    locks in force; a handful of queries whatever the number of apps."""
    query = select(App).order_by(App.name)
    if app_name is not None:
        query = query.where(App.name == app_name)
    if apps_allowed is not None:
        query = query.where(App.name.in_(apps_allowed))
    app_rows = list(session.scalars(query))
    ids = [app.id for app in app_rows]
    pairs = [(app.id, env) for app in app_rows for env in apps.spec_of(app).environments]
    live = _live_deploys(session, pairs)
    running = {
        (d.app_id, d.environment): d
        for d in session.scalars(
            select(Deploy).where(Deploy.app_id.in_(ids), Deploy.status == DeployStatus.IN_PROGRESS)
        )
    }
    queued = {
        (app_id, environment): count
        for app_id, environment, count in session.execute(
            select(Deploy.app_id, Deploy.environment, func.count(Deploy.id))
            .where(Deploy.app_id.in_(ids), Deploy.status == DeployStatus.PENDING)
            .group_by(Deploy.app_id, Deploy.environment)
        )
    }
    in_force: dict[int, list[Lock]] = {}
    for lock in locks.active_for_apps(session, ids):
        in_force.setdefault(lock.app_id, []).append(lock)
    result = []
    for app in app_rows:
        for environment in apps.spec_of(app).environments:
            key = (app.id, environment)
            result.append(
                Release(
                    app=app.name,
                    environment=environment,
                    live=live.get(key),
                    running=running.get(key),
                    queued=queued.get(key, 0),
                    locks=[
                        lock
                        for lock in in_force.get(app.id, [])
                        if lock.environment in (None, environment)
                    ],
                )
            )
    return result


def _live_deploys(session: Session, pairs: list[tuple[int, str]]) -> dict[tuple[int, str], Deploy]:
    """The live deploy of each (app id, environment): its latest finished one. Deploys of one
    app/env run one at a time in id order, so the latest finished is the one with the highest
    id; one index lookup per pair (ix_deploy_queue), however long the history."""
    if not pairs:
        return {}
    # A CTE, not FROM (VALUES ...) AS t(a, b): SQLite takes the column names only that way.
    wanted = (
        values(column("app_id", Integer), column("environment", String), name="wanted")
        .data(pairs)
        .cte("wanted")
    )
    newest = (
        select(func.max(Deploy.id))
        .where(
            Deploy.app_id == wanted.c.app_id,
            Deploy.environment == wanted.c.environment,
            Deploy.status == DeployStatus.FINISHED,
        )
        .scalar_subquery()
    )
    ids = [i for (i,) in session.execute(select(newest).select_from(wanted)) if i is not None]
    if not ids:
        return {}
    return {
        (d.app_id, d.environment): d
        for d in session.scalars(select(Deploy).where(Deploy.id.in_(ids)))
    }


def history(
    session: Session, *, app: str, environment: str, offset: int = 0, limit: int = 25
) -> list[Deploy]:
    """The finished deploys of one app/env, newest first: what was live, and when."""
    return list(
        session.scalars(
            select(Deploy)
            .join(App)
            .where(
                App.name == app,
                Deploy.environment == environment,
                Deploy.status == DeployStatus.FINISHED,
            )
            .order_by(Deploy.date_finished.desc(), Deploy.id.desc())
            .offset(offset)
            .limit(limit)
        )
    )
