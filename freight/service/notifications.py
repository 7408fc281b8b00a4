"""The notification outbox: deploy events kept in order, each delivered once to each notifier."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.orm import Session

from freight import notifiers
from freight.db import Deploy, DeployStatus, Notification, session_scope, utcnow
from freight.errors import FreightError
from freight.notifiers import DeployEvent
from freight.plugins import PluginConfig

EVENTS = ("queued", "started", "finished", "failed", "cancelled")
# The deploy's status as of the event, whatever it is by the time the event is delivered.
STATUS_AT = {"queued": "pending", "started": "in_progress"} | {e: e for e in EVENTS[2:]}


def enqueue(session: Session, deploy: Deploy, event: str) -> None:
    assert event in EVENTS, event
    session.flush()
    session.add(Notification(deploy_id=deploy.id, event=event))
    session.flush()


def event_of(deploy: Deploy, event: str, *, public_url: str) -> DeployEvent:
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
    )


def undelivered(session: Session, deploy_id: int) -> list[Notification]:
    return list(
        session.scalars(
            select(Notification)
            .where(Notification.deploy_id == deploy_id, Notification.date_delivered.is_(None))
            .order_by(Notification.id)
        )
    )


def deliver(
    engine: Engine,
    deploy_id: int,
    *,
    client: httpx.Client,
    public_url: str,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
) -> list[str]:
    """Send every undelivered event of the deploy, oldest first; returns the events sent.

    No transaction is held while talking to notifiers (SQLite would stay write-locked meanwhile).
    A notifier that keeps failing is logged and skipped: notifications never fail a deploy.
    """
    with session_scope(engine) as session:
        deploy = session.get_one(Deploy, deploy_id)
        configs = [notifiers.registry.parse(data) for data in deploy.config.get("notifiers", [])]
        outbox = [
            (n.id, event_of(deploy, n.event, public_url=public_url))
            for n in undelivered(session, deploy_id)
        ]
    for notification_id, event in outbox:
        for config in configs:
            _send_with_retries(config, event, client, output, retry_delays)
        with session_scope(engine) as session:
            session.get_one(Notification, notification_id).date_delivered = utcnow()
    return [event.event for _, event in outbox]


def _send_with_retries(
    config: PluginConfig,
    event: DeployEvent,
    client: httpx.Client,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
) -> None:
    notifier = notifiers.registry.get(config.type)
    for attempt, delay in enumerate((0.0, *retry_delays)):
        time.sleep(delay)
        try:
            notifier.send(config, event, client)
            return
        except Exception as exc:  # a notifier's bug must not stop the deploy either
            last = attempt == len(retry_delays)
            message = (
                exc.message if isinstance(exc, FreightError) else f"{type(exc).__name__}: {exc}"
            )
            output(
                f">> Notifier {config.type} failed on '{event.event}': {message}"
                + (" (giving up)" if last else ", retrying")
            )


def unattended(engine: Engine, *, settle: float) -> list[int]:
    """Deploys with events that no runner will deliver: queued ones that have no run yet, and
    ones that ended (cancelled while queued, reaped) more than `settle` seconds ago."""
    cutoff = utcnow() - timedelta(seconds=settle)
    with session_scope(engine) as session:
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
