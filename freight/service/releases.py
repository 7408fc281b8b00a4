"""Release state: which commit is live where (the last finished deploy), and what came before."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from freight.db import App, Deploy, DeployStatus
from freight.service import apps


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


def release_state(session: Session, app_name: str | None = None) -> list[Release]:
    """Per app and environment: the live deploy, the running one and the queue length."""
    query = select(App).order_by(App.name)
    if app_name is not None:
        query = query.where(App.name == app_name)
    queued = {
        (app_id, environment): count
        for app_id, environment, count in session.execute(
            select(Deploy.app_id, Deploy.environment, func.count(Deploy.id))
            .where(Deploy.status == DeployStatus.PENDING)
            .group_by(Deploy.app_id, Deploy.environment)
        )
    }
    result = []
    for app in session.scalars(query):
        for environment in apps.spec_of(app).environments:
            running = session.scalar(
                select(Deploy).where(
                    Deploy.app_id == app.id,
                    Deploy.environment == environment,
                    Deploy.status == DeployStatus.IN_PROGRESS,
                )
            )
            result.append(
                Release(
                    app=app.name,
                    environment=environment,
                    live=live_deploy(session, app.id, environment),
                    running=running,
                    queued=queued.get((app.id, environment), 0),
                )
            )
    return result
