"""The notification outbox: deploy events kept in order, each delivered once to each notifier."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from freight import notifiers, vcs
from freight.db import App, Deploy, DeployStatus, Notification, NotifierState, utcnow
from freight.errors import FreightError
from freight.notifiers import DeployEvent
from freight.plugins import PluginConfig
from freight.service import apps, logs

EVENTS = ("queued", "started", "finished", "failed", "cancelled")
# The deploy's status as of the event, whatever it is by the time the event is delivered.
STATUS_AT = {"queued": "pending", "started": "in_progress"} | {e: e for e in EVENTS[2:]}


def enqueue(session: Session, deploy: Deploy, event: str) -> None:
    assert event in EVENTS, event
    session.flush()
    session.add(Notification(deploy_id=deploy.id, event=event))
    session.flush()


# Lines of the log a failure notice carries.
LOG_TAIL_LINES = 20


def event_of(
    deploy: Deploy,
    event: str,
    *,
    public_url: str,
    commits: int | None = None,
    log_tail: tuple[str, ...] = (),
) -> DeployEvent:
    return DeployEvent(
        event=event,
        deploy_id=deploy.id,
        app=deploy.app.name,
        environment=deploy.environment,
        number=deploy.number,
        ref=deploy.ref,
        sha=deploy.sha,
        status=STATUS_AT[event],
        user=deploy.user.name if deploy.user else "",
        duration=deploy.duration,
        link=f"{public_url.rstrip('/')}/deploys/{deploy.app.name}/{deploy.environment}/{deploy.number}/",
        reason=deploy.reason,
        prev_sha=deploy.prev_sha,
        repository=deploy.app.repository.url,
        commits=commits,
        date_created=_iso(deploy.date_created),
        date_started=_iso(deploy.date_started),
        date_finished=_iso(deploy.date_finished),
        params=dict(deploy.params or {}),
        log_tail=log_tail,
        force_reason=deploy.force_reason if deploy.forced_past else None,
        forced_past=deploy.forced_past,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _commit_count(workspace_root: Path, deploy: Deploy) -> int | None:
    """How many commits the deploy ships over what was live, from the mirror (if it has both)."""
    if deploy.sha is None:
        return None
    mirror = vcs.mirror_path(workspace_root, deploy.app.repository.url)
    try:
        return len(vcs.commits_between(mirror, deploy.prev_sha, deploy.sha, limit=1000))
    except FreightError:
        return None


def undelivered(session: Session, deploy_id: int) -> list[Notification]:
    return list(
        session.scalars(
            select(Notification)
            .where(Notification.deploy_id == deploy_id, Notification.date_delivered.is_(None))
            .order_by(Notification.id)
        )
    )


@dataclass(frozen=True)
class Outbox:
    """A deploy's undelivered events, ready to send without holding a transaction."""

    configs: list[PluginConfig]
    # (notification id, event), oldest first
    events: list[tuple[int, DeployEvent]]
    # What each notifier kept from earlier events of the deploy, by `state_key`.
    states: dict[str, dict[str, Any]]


def state_key(index: int, config: PluginConfig) -> str:
    return f"{index}:{config.type}"


def outbox(session: Session, deploy_id: int, *, workspace_root: Path, public_url: str) -> Outbox:
    """The deploy's undelivered events. With no notifier to tell, they count as delivered."""
    deploy = session.get_one(Deploy, deploy_id)
    configs = [notifiers.registry.parse(data) for data in deploy.config.get("notifiers", [])]
    pending = undelivered(session, deploy_id)
    if not configs:
        for notification in pending:
            notification.date_delivered = utcnow()
        return Outbox([], [], {})
    if not pending:
        return Outbox(configs, [], {})
    commits = _commit_count(workspace_root, deploy)
    tail = tuple(logs.tail_lines(session, deploy_id, LOG_TAIL_LINES))
    events = [
        (
            n.id,
            event_of(
                deploy,
                n.event,
                public_url=public_url,
                commits=commits,
                log_tail=tail if n.event == "failed" else (),
            ),
        )
        for n in pending
    ]
    states = {row.notifier: dict(row.data) for row in _states(session, deploy_id)}
    return Outbox(configs, events, states)


def mark_delivered(session: Session, notification_id: int) -> None:
    session.get_one(Notification, notification_id).date_delivered = utcnow()


def _states(session: Session, deploy_id: int) -> list[NotifierState]:
    return list(session.scalars(select(NotifierState).where(NotifierState.deploy_id == deploy_id)))


def save_state(session: Session, deploy_id: int, key: str, data: dict[str, Any]) -> None:
    row = session.scalar(
        select(NotifierState).where(
            NotifierState.deploy_id == deploy_id, NotifierState.notifier == key
        )
    )
    if row is None:
        session.add(NotifierState(deploy_id=deploy_id, notifier=key, data=data))
    else:
        row.data = data


def environment_notifiers(app: App, environment: str | None) -> list[PluginConfig]:
    """Who hears of a lock or of a machine: the environment's notifiers, or the app's for
    something app-wide."""
    spec = apps.spec_of(app)
    return list(spec.environment(environment).notifiers if environment else spec.notifiers)


def unattended(session: Session, *, settle: float) -> list[int]:
    """Deploys with events that no runner will deliver: queued ones that have no run yet, and
    ones that ended (cancelled while queued, reaped) more than `settle` seconds ago."""
    cutoff = utcnow() - timedelta(seconds=settle)
    return list(
        session.scalars(
            select(Deploy.id)
            .join(Notification, Notification.deploy_id == Deploy.id)
            .where(
                Notification.date_delivered.is_(None),
                or_(
                    and_(Deploy.status == DeployStatus.PENDING, Deploy.flow_run_id.is_(None)),
                    and_(
                        Deploy.status.in_(
                            [DeployStatus.FINISHED, DeployStatus.FAILED, DeployStatus.CANCELLED]
                        ),
                        Deploy.date_finished < cutoff,
                    ),
                ),
            )
            .distinct()
            .order_by(Deploy.id)
        )
    )
