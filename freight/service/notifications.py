"""The notification outbox: deploy events kept in order, each delivered once to each notifier."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.orm import Session

from freight import notifiers, secrets, vcs
from freight.db import App, Deploy, DeployStatus, Notification, NotifierState, session_scope, utcnow
from freight.errors import FreightError
from freight.notifiers import DeployEvent, LockNotice, NotifyContext
from freight.plugins import PluginConfig, ServiceUrls
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
        force_reason=deploy.force_reason,
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


def deliver(
    engine: Engine,
    deploy_id: int,
    *,
    client: httpx.Client,
    urls: ServiceUrls,
    workspace_root: Path,
    public_url: str,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
    secrets_from: Mapping[str, str],
) -> list[str]:
    """Send every undelivered event of the deploy, oldest first; returns the events sent.

    No transaction is held while talking to notifiers (SQLite would stay write-locked meanwhile).
    A notifier that keeps failing is logged and skipped: notifications never fail a deploy.
    `${NAME}` references in notifier configs are resolved from `secrets_from`.
    """
    with session_scope(engine) as session:
        deploy = session.get_one(Deploy, deploy_id)
        configs = [notifiers.registry.parse(data) for data in deploy.config.get("notifiers", [])]
        pending = undelivered(session, deploy_id)
        if not configs or not pending:
            for notification in pending:
                notification.date_delivered = utcnow()
            return [n.event for n in pending]
        commits = _commit_count(workspace_root, deploy)
        tail = tuple(logs.tail_lines(session, deploy_id, LOG_TAIL_LINES))
        outbox = [
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
    resolved = [secrets.resolve_config(config, secrets_from)[0] for config in configs]
    for notification_id, event in outbox:
        for index, config in enumerate(resolved):
            key = f"{index}:{config.type}"
            context = NotifyContext(client=client, urls=urls, state=states.get(key, {}))
            kept = _send_with_retries(config, event, context, output, retry_delays)
            if kept is not None:
                states[key] = dict(kept)
                _save_state(engine, deploy_id, key, states[key])
        with session_scope(engine) as session:
            session.get_one(Notification, notification_id).date_delivered = utcnow()
    return [event.event for _, event in outbox]


def _states(session: Session, deploy_id: int) -> list[NotifierState]:
    return list(session.scalars(select(NotifierState).where(NotifierState.deploy_id == deploy_id)))


def _save_state(engine: Engine, deploy_id: int, key: str, data: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        row = session.scalar(
            select(NotifierState).where(
                NotifierState.deploy_id == deploy_id, NotifierState.notifier == key
            )
        )
        if row is None:
            session.add(NotifierState(deploy_id=deploy_id, notifier=key, data=data))
        else:
            row.data = data


def _send_with_retries(
    config: PluginConfig,
    event: DeployEvent,
    context: NotifyContext,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
) -> Mapping[str, Any] | None:
    notifier = notifiers.registry.get(config.type)
    return _with_retries(
        lambda: notifier.send(config, event, context),
        f"{config.type} failed on '{event.event}'",
        output,
        retry_delays,
    )


T = TypeVar("T")


def _with_retries(
    call: Callable[[], T],
    failed: str,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
) -> T | None:
    for attempt, delay in enumerate((0.0, *retry_delays)):
        time.sleep(delay)
        try:
            return call()
        except Exception as exc:  # a notifier's bug must not stop the deploy either
            last = attempt == len(retry_delays)
            message = (
                exc.message if isinstance(exc, FreightError) else f"{type(exc).__name__}: {exc}"
            )
            output(f">> Notifier {failed}: {message}" + (" (giving up)" if last else ", retrying"))
    return None


def lock_notifiers(app: App, environment: str | None) -> list[PluginConfig]:
    """Who hears of a lock: the environment's notifiers, or the app's for an app-wide one."""
    spec = apps.spec_of(app)
    return list(spec.environment(environment).notifiers if environment else spec.notifiers)


def announce_lock(
    configs: list[PluginConfig],
    notice: LockNotice,
    *,
    client: httpx.Client,
    urls: ServiceUrls,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
    secrets_from: Mapping[str, str],
) -> None:
    """Tell each notifier of a lock; one that keeps failing is logged and skipped."""
    resolved, _ = secrets.resolve_all(configs, secrets_from)
    context = NotifyContext(client=client, urls=urls)
    for config in resolved:
        notifier = notifiers.registry.get(config.type)
        _with_retries(
            functools.partial(notifier.announce, config, notice, context),
            f"{config.type} failed on '{notice.event}'",
            output,
            retry_delays,
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
