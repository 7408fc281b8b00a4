"""Creating, finding and cancelling deploys."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from freight import secrets, vcs
from freight.checks import CheckContext
from freight.db import App, Deploy, DeployStatus, User, utcnow
from freight.db.functions import seconds_between
from freight.errors import (
    AppLocked,
    DeployFinished,
    InvalidRef,
    InvalidRequest,
    MissingArgument,
    NotFound,
)
from freight.plugins import ServiceUrls
from freight.service import apps, gating, locks, logs, notifications, queue, releases
from freight.service.orchestration import Orchestrator, RunState

log = logging.getLogger(__name__)

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Concurrent creators of one app/env race for the same number; the loser retries.
NUMBER_ATTEMPTS = 100


def get_or_create_user(session: Session, name: str) -> User:
    for _ in range(3):
        user = session.scalar(select(User).where(User.name == name))
        if user is not None:
            return user
        try:
            with session.begin_nested():
                user = User(name=name)
                session.add(user)
            return user
        except IntegrityError:
            continue
    raise InvalidRequest(f"Could not create user '{name}'")


def resolve_sha(
    session: Session,
    *,
    app: App,
    environment: str,
    ref: str,
    workspace_root: Path,
    fresh_within: float = 0,
) -> str:
    """Resolve a ref to a commit sha: `:current`, `:previous`, or a git branch, tag or sha,
    fetched now (or within `fresh_within` seconds)."""
    if ref in (":current", ":previous"):
        finder = releases.current_sha if ref == ":current" else releases.previous_sha
        sha = finder(session, app.id, environment)
        if sha is None:
            raise InvalidRef(
                f"Ref '{ref}' has no commit: no earlier deploy of {app.name}/{environment}"
            )
        return sha
    url = app.repository.url
    # A fetch can take long; end the read transaction first so it holds no database lock meanwhile.
    session.commit()
    mirror = vcs.update_mirror(workspace_root, url, max_age=fresh_within)
    try:
        return vcs.resolve_ref(mirror, ref)
    except InvalidRef:
        raise InvalidRef(f"Unknown ref '{ref}' for app {app.name}") from None


@dataclass(frozen=True)
class Screen:
    """What a deploy request is screened with: the checks' HTTP client, where the services are,
    and where `${NAME}` secrets of check configs come from."""

    client: httpx.Client | None = None
    urls: ServiceUrls = field(default_factory=ServiceUrls)
    secrets_from: Mapping[str, str] = field(default_factory=dict)


def create_deploy(
    session: Session,
    *,
    app: str,
    environment: str,
    ref: str | None = None,
    user: str,
    workspace_root: Path,
    params: Mapping[str, str] | None = None,
    force: bool = False,
    flow_run_id: str | None = None,
    screen: Screen | None = None,
    force_reason: str | None = None,
    sha: str | None = None,
) -> Deploy:
    """Create a pending deploy with its number, resolved sha and config snapshot. With `sha`,
    the deploy is of that commit (fetched if the mirror lacks it), `ref` only names it.

    With `screen`, a request is refused here, before anything is written, if someone else's
    lock covers the environment or a check already reports the sha as failed (`force` skips
    both); pending checks are waited for when the deploy runs.
    """
    if not user:
        raise MissingArgument("A deploy needs a user")
    params = dict(params or {})
    for key, value in params.items():
        if not PARAM_NAME.match(key) or not isinstance(value, str):
            raise InvalidRequest(f"Invalid param '{key}': names are identifiers, values strings")
    app_row = apps.get_app(session, app)
    config = apps.environment_of(app_row, environment)
    ref = ref or config.default_ref
    lock = locks.blocking_lock(session, app_row.id, environment, user) if screen else None
    if lock is not None and not force:
        raise AppLocked(locks.describe(lock))
    if lock is not None and not (force_reason and force_reason.strip()):
        raise MissingArgument(f"{locks.describe(lock)}: forcing past it needs a reason")
    overridden = locks.describe(lock) if lock is not None else None
    if sha is None:
        sha = resolve_sha(
            session, app=app_row, environment=environment, ref=ref, workspace_root=workspace_root
        )
    else:
        session.commit()  # as resolve_sha: no database lock held across a fetch
        vcs.mirror_with(workspace_root, app_row.repository.url, sha)
    if screen is not None and not force and config.checks:
        configs, _ = secrets.resolve_all(config.checks, screen.secrets_from)
        gating.check_once(
            configs,
            CheckContext(
                app=app_row.name,
                environment=environment,
                sha=sha,
                output=log.info,
                client=screen.client,
                urls=screen.urls,
                repository=app_row.repository.url,
            ),
        )
    user_row = get_or_create_user(session, user)
    for _ in range(NUMBER_ATTEMPTS):
        number = 1 + (
            session.scalar(
                select(func.max(Deploy.number)).where(
                    Deploy.app_id == app_row.id, Deploy.environment == environment
                )
            )
            or 0
        )
        deploy = Deploy(
            app_id=app_row.id,
            app=app_row,
            environment=environment,
            number=number,
            ref=ref,
            sha=sha,
            prev_sha=releases.current_sha(session, app_row.id, environment),
            status=DeployStatus.PENDING,
            user_id=user_row.id,
            user=user_row,
            params=params,
            force=force,
            config=config.model_dump(mode="json"),
            flow_run_id=flow_run_id,
        )
        if ref == ":previous":  # a rollback jumps the queue: whatever is queued may be why
            deploy.priority = queue.front_priority(session, app_row.id, environment)
        try:
            with session.begin_nested():
                session.add(deploy)
        except IntegrityError:
            continue
        if force and force_reason and force_reason.strip():
            # Kept for a lock that comes later too: at run time, forcing past it needs it.
            deploy.force_reason = force_reason.strip()
        if overridden:
            logs.append(
                session, deploy, f">> Forced by {user} past the lock ({overridden}): {force_reason}"
            )
        notifications.enqueue(session, deploy, "queued")
        return deploy
    raise InvalidRequest(f"Could not number a deploy of {app}/{environment}: too much contention")


def queue_deploy(session: Session, orchestrator: Orchestrator, **create: Any) -> Deploy:
    """Create a deploy (see `create_deploy` for the arguments) and hand it over if its app/env is
    free: what every client that asks for a deploy wants. Commits the session."""
    deploy = create_deploy(session, **create)
    queue.advance(session, orchestrator, deploy.app_id, deploy.environment)
    return deploy


@dataclass(frozen=True)
class DeployFilter:
    app: str | None = None
    environment: str | None = None
    user: str | None = None
    ref: str | None = None
    statuses: Sequence[DeployStatus] = ()
    apps: frozenset[str] | None = None  # None: every app


def list_deploys(
    session: Session, where: DeployFilter, *, offset: int = 0, limit: int = 25
) -> list[Deploy]:
    """Deploys matching the filter, newest first; a queue (only pending ones) is head first."""
    query = select(Deploy)
    if where.app is not None or where.apps is not None:
        query = query.join(App)
    if where.app is not None:
        query = query.where(App.name == where.app)
    if where.apps is not None:
        query = query.where(App.name.in_(where.apps))
    if where.environment is not None:
        query = query.where(Deploy.environment == where.environment)
    if where.user is not None:
        query = query.join(User).where(User.name == where.user)
    if where.ref is not None:
        query = query.where(Deploy.ref == where.ref)
    if where.statuses:
        query = query.where(Deploy.status.in_([str(s) for s in where.statuses]))
    queue_order = bool(where.statuses) and set(where.statuses) == {DeployStatus.PENDING}
    query = query.order_by(*queue.QUEUE_ORDER) if queue_order else query.order_by(Deploy.id.desc())
    return list(session.scalars(query.offset(offset).limit(limit)))


ESTIMATE_WINDOW = timedelta(days=30)


def estimated_durations(
    session: Session, keys: set[tuple[int, str]]
) -> dict[tuple[int, str], float]:
    """Mean duration of the recent finished deploys of each (app id, environment)."""
    if not keys:
        return {}
    since = utcnow() - ESTIMATE_WINDOW
    rows = session.execute(
        select(
            Deploy.app_id,
            Deploy.environment,
            func.avg(seconds_between(Deploy.date_started, Deploy.date_finished)),
        )
        .where(
            tuple_(Deploy.app_id, Deploy.environment).in_(sorted(keys)),
            Deploy.status == DeployStatus.FINISHED,
            Deploy.date_finished >= since,
            Deploy.date_started.is_not(None),
        )
        .group_by(Deploy.app_id, Deploy.environment)
    )
    return {(app_id, env): float(mean) for app_id, env, mean in rows if mean is not None}


def daily_outcomes(
    session: Session, *, days: int, today: datetime, app: str | None = None
) -> list[tuple[datetime, dict[str, int]]]:
    """Deploys started per UTC day by how they ended (or "other" while not ended), for the
    `days` days ending with today's."""
    midnight = today.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight - timedelta(days=days - 1)
    query = select(Deploy.date_started, Deploy.status).where(Deploy.date_started >= first)
    if app is not None:
        query = query.join(App).where(App.name == app)
    counts: list[dict[str, int]] = [{} for _ in range(days)]
    for started, status in session.execute(query):
        index = (started - first).days
        if 0 <= index < days:
            outcome = status if DeployStatus(status).is_final else "other"
            counts[index][outcome] = counts[index].get(outcome, 0) + 1
    return [(first + timedelta(days=i), counts[i]) for i in range(days)]


def daily_counts(
    session: Session, *, days: int, today: datetime, app: str | None = None
) -> list[tuple[datetime, int]]:
    """Deploys started per UTC day, for the `days` days ending with today's."""
    return [
        (day, sum(by_outcome.values()))
        for day, by_outcome in daily_outcomes(session, days=days, today=today, app=app)
    ]


def recent_durations(
    session: Session, *, app: str, limit: int = 50
) -> list[tuple[datetime, float, str]]:
    """(finished at, seconds, name) of the app's last finished deploys, oldest first."""
    rows = session.scalars(
        select(Deploy)
        .join(App)
        .where(App.name == app, Deploy.status == DeployStatus.FINISHED)
        .order_by(Deploy.id.desc())
        .limit(limit)
    )
    points = [(d.date_finished, d.duration or 0.0, d.name) for d in rows if d.date_finished]
    return list(reversed(points))


def get_deploy(session: Session, deploy_id: int) -> Deploy:
    deploy = session.get(Deploy, deploy_id)
    if deploy is None:
        raise NotFound(f"Deploy {deploy_id} not found")
    return deploy


def get_deploy_by_number(session: Session, *, app: str, environment: str, number: int) -> Deploy:
    deploy = session.scalar(
        select(Deploy)
        .join(App)
        .where(App.name == app, Deploy.environment == environment, Deploy.number == number)
    )
    if deploy is None:
        raise NotFound(f"Deploy {app}/{environment}#{number} not found")
    return deploy


def cancel_deploy(
    session: Session, deploy: Deploy, *, by: str, orchestrator: Orchestrator | None = None
) -> Deploy:
    """A pending deploy leaves the queue now; a running one is asked to stop (its runner obeys).

    With the orchestrator, a deploy handed over but not yet started by any worker (one may be
    down) is cancelled at once, and the next deploy is handed over.
    """
    # Locked and re-read, so a claim of this deploy happening now is seen, not overwritten.
    session.execute(select(Deploy.id).where(Deploy.id == deploy.id).with_for_update())
    session.refresh(deploy)
    if DeployStatus(deploy.status).is_final:
        raise DeployFinished(f"Deploy {deploy.name} already ended ({deploy.status})")
    deploy.cancelled_by = by
    if deploy.status == DeployStatus.PENDING:
        mark_ended(session, deploy, DeployStatus.CANCELLED, f"Cancelled by {by} while queued")
    elif (
        orchestrator is not None
        and deploy.date_started is None
        and deploy.flow_run_id is not None
        and orchestrator.run_status(deploy.flow_run_id).state == RunState.WAITING
    ):
        orchestrator.cancel_run(deploy.flow_run_id)
        mark_ended(session, deploy, DeployStatus.CANCELLED, f"Cancelled by {by} before it started")
        queue.advance(session, orchestrator, deploy.app_id, deploy.environment)
    elif deploy.cancel_requested_at is None:
        deploy.cancel_requested_at = utcnow()
        logs.append(session, deploy, f">> Cancel requested by {by}")
    session.flush()
    return deploy


def mark_ended(
    session: Session,
    deploy: Deploy,
    status: DeployStatus,
    reason: str | None,
    *,
    announce: bool = True,
) -> None:
    """Record a final status, with its reason in the log (unless already told) and the outbox."""
    deploy.status = status
    deploy.reason = reason
    deploy.date_finished = utcnow()
    if status == DeployStatus.FINISHED:
        releases.record_finished(session, deploy)
    if reason and announce:
        logs.append(session, deploy, f">> {reason}")
    notifications.enqueue(session, deploy, str(status))
    session.flush()
