"""Creating, finding and cancelling deploys."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from freight.catalogue import EnvironmentConfig
from freight.db import App, Deploy, DeployStatus, User, utcnow
from freight.db.functions import seconds_between, whole_days_between
from freight.db.models import UTCDateTime
from freight.errors import (
    DeployFinished,
    InvalidRef,
    InvalidRequest,
    MissingArgument,
    NotFound,
)
from freight.names import DEFAULT_WORK_QUEUE
from freight.service import apps, barriers, logs, notifications, queue, releases

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


def symbolic_sha(session: Session, *, app: App, environment: str, ref: str) -> str | None:
    """The sha of `:current` (what is live) or `:previous` (what was live before it: a
    rollback); None for any other ref, which git resolves."""
    if ref not in SYMBOLIC_REFS:
        return None
    finder = releases.current_sha if ref == ":current" else releases.previous_sha
    sha = finder(session, app.id, environment)
    if sha is None:
        raise InvalidRef(
            f"Ref '{ref}' has no commit: no earlier deploy of {app.name}/{environment}"
        )
    return sha


SYMBOLIC_REFS = (":current", ":previous")


@dataclass(frozen=True)
class DeployPlan:
    """A deploy request checked against the database, before its sha is resolved (a fetch) and
    its checks are asked (HTTP): what `create_deploy` then writes."""

    app_id: int
    app: str
    environment: str
    ref: str
    repository: str
    config: EnvironmentConfig
    user: str
    params: dict[str, str]
    force: bool
    force_reason: str | None
    # What `force` goes past (a lock, a freeze, a closed window), described.
    overridden: str | None
    # The sha when the database alone resolves the ref (`:current`, `:previous`).
    sha: str | None


def plan_deploy(
    session: Session,
    *,
    app: str,
    environment: str,
    ref: str | None = None,
    user: str,
    params: Mapping[str, str] | None = None,
    force: bool = False,
    force_reason: str | None = None,
    screen_locks: bool = False,
) -> DeployPlan:
    """Check a deploy request: its arguments, and with `screen_locks` what stands in the way of
    the environment now (freight/service/barriers.py: refused unless forced, and forcing past
    it needs a reason)."""
    if not user:
        raise MissingArgument("A deploy needs a user")
    params = dict(params or {})
    for key, value in params.items():
        if not PARAM_NAME.match(key) or not isinstance(value, str):
            raise InvalidRequest(f"Invalid param '{key}': names are identifiers, values strings")
    app_row = apps.get_app(session, app)
    config = apps.environment_of(app_row, environment)
    ref = ref or config.default_ref
    found = barriers.barriers(session, app_row, environment, user) if screen_locks else []
    reason = force_reason.strip() if force and force_reason and force_reason.strip() else None
    overridden = barriers.screen(found, force=force, reason=reason)
    return DeployPlan(
        app_id=app_row.id,
        app=app_row.name,
        environment=environment,
        ref=ref,
        repository=app_row.repository.url,
        config=config,
        user=user,
        params=params,
        force=force,
        force_reason=reason,
        overridden=overridden,
        sha=symbolic_sha(session, app=app_row, environment=environment, ref=ref),
    )


def create_deploy(
    session: Session, plan: DeployPlan, *, sha: str, flow_run_id: str | None = None
) -> Deploy:
    """Write a pending deploy of `sha` with the next number of its app/env and a snapshot of
    the config, and queue its `queued` notification."""
    app_row = apps.get_app(session, plan.app)
    user_row = get_or_create_user(session, plan.user)
    for _ in range(NUMBER_ATTEMPTS):
        number = 1 + (
            session.scalar(
                select(func.max(Deploy.number)).where(
                    Deploy.app_id == app_row.id, Deploy.environment == plan.environment
                )
            )
            or 0
        )
        deploy = Deploy(
            app_id=app_row.id,
            app=app_row,
            environment=plan.environment,
            number=number,
            ref=plan.ref,
            sha=sha,
            prev_sha=releases.current_sha(session, app_row.id, plan.environment),
            status=DeployStatus.PENDING,
            user_id=user_row.id,
            user=user_row,
            params=plan.params,
            force=plan.force,
            # Kept for a lock that comes later too: at run time, forcing past it needs it.
            force_reason=plan.force_reason,
            forced_past=plan.overridden,
            config=plan.config.model_dump(mode="json"),
            flow_run_id=flow_run_id,
        )
        if plan.ref == ":previous":  # a rollback jumps the queue: whatever is queued may be why
            deploy.priority = queue.front_priority(session, app_row.id, plan.environment)
        try:
            with session.begin_nested():
                session.add(deploy)
        except IntegrityError:
            continue
        if plan.overridden:
            logs.append(
                session,
                deploy,
                f">> Forced by {plan.user} past: {plan.overridden}. Reason: {plan.force_reason}",
            )
        notifications.enqueue(session, deploy, "queued")
        return deploy
    raise InvalidRequest(
        f"Could not number a deploy of {plan.app}/{plan.environment}: too much contention"
    )


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
    session: Session,
    *,
    days: int,
    today: datetime,
    app: str | None = None,
    apps: frozenset[str] | None = None,
) -> list[tuple[datetime, dict[str, int]]]:
    """Deploys started per UTC day by how they ended (or "other" while not ended), for the
    `days` days ending with today's; of `app`, or of the `apps` a key may see."""
    midnight = today.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight - timedelta(days=days - 1)
    day = whole_days_between(literal(first, UTCDateTime()), Deploy.date_started)
    query = select(day, Deploy.status, func.count()).where(Deploy.date_started >= first)
    if app is not None or apps is not None:
        query = query.join(App)
    if app is not None:
        query = query.where(App.name == app)
    if apps is not None:
        query = query.where(App.name.in_(apps))
    counts: list[dict[str, int]] = [{} for _ in range(days)]
    for index, status, count in session.execute(query.group_by(day, Deploy.status)):
        if 0 <= index < days:
            outcome = status if DeployStatus(status).is_final else "other"
            counts[index][outcome] = counts[index].get(outcome, 0) + count
    return [(first + timedelta(days=i), counts[i]) for i in range(days)]


def daily_counts(
    session: Session,
    *,
    days: int,
    today: datetime,
    app: str | None = None,
    apps: frozenset[str] | None = None,
) -> list[tuple[datetime, int]]:
    """Deploys started per UTC day, for the `days` days ending with today's."""
    return [
        (day, sum(by_outcome.values()))
        for day, by_outcome in daily_outcomes(session, days=days, today=today, app=app, apps=apps)
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


def get_deploy(session: Session, deploy_id: int, *, apps: frozenset[str] | None = None) -> Deploy:
    """The deploy with this id; with `apps`, one of another app answers as an unknown id."""
    deploy = session.get(Deploy, deploy_id)
    if deploy is None or (apps is not None and deploy.app.name not in apps):
        raise NotFound(f"Deploy {deploy_id} not found")
    return deploy


def get_deploy_by_number(
    session: Session,
    *,
    app: str,
    environment: str,
    number: int,
    apps: frozenset[str] | None = None,
) -> Deploy:
    deploy = None
    if apps is None or app in apps:
        deploy = session.scalar(
            select(Deploy)
            .join(App)
            .where(App.name == app, Deploy.environment == environment, Deploy.number == number)
        )
    if deploy is None:
        raise NotFound(f"Deploy {app}/{environment}#{number} not found")
    return deploy


@dataclass(frozen=True)
class Cancelled:
    """What a cancel leaves the caller to do once committed."""

    # The run the deploy was handed to, to be cancelled in the orchestrator: it never started.
    run_id: str | None = None
    # The deploy left its app/env's slot (or the head of its queue): hand the queue on.
    freed: bool = False


def cancel_deploy(session: Session, deploy: Deploy, *, by: str) -> Cancelled:
    """A deploy that has not started leaves the queue now (also one handed over to a run that
    has not begun: the run, when it starts, finds it cancelled and stops). A running one is
    asked to stop; its runner obeys."""
    # Locked and re-read, so a claim or a start of this deploy happening now is seen, not
    # overwritten: whichever commits first, the other sees it.
    session.execute(select(Deploy.id).where(Deploy.id == deploy.id).with_for_update())
    session.refresh(deploy)
    if DeployStatus(deploy.status).is_final:
        raise DeployFinished(f"Deploy {deploy.name} already ended ({deploy.status})")
    deploy.cancelled_by = by
    if deploy.status == DeployStatus.PENDING:
        mark_ended(session, deploy, DeployStatus.CANCELLED, f"Cancelled by {by} while queued")
        return Cancelled(freed=True)
    if deploy.date_started is None:
        run_id, deploy.claim = deploy.flow_run_id, None  # a run starting late finds no claim
        mark_ended(session, deploy, DeployStatus.CANCELLED, f"Cancelled by {by} before it started")
        return Cancelled(run_id=run_id, freed=True)
    if deploy.cancel_requested_at is None:
        deploy.cancel_requested_at = utcnow()
        logs.append(session, deploy, f">> Cancel requested by {by}")
    session.flush()
    return Cancelled()


def work_queue_of(deploy: Deploy) -> str:
    """The engine's work queue for the deploy's runs, as its environment named it when the
    deploy was made (snapshots older than work queues went to the default one)."""
    return str(deploy.config.get("work_queue", DEFAULT_WORK_QUEUE))


def note_waiting(session: Session, deploy: Deploy, why: str | None) -> None:
    """Record why the deploy's run has not started (None: nothing keeps it from starting); a
    new reason is said in its log once."""
    if why == deploy.waiting_for:
        return
    deploy.waiting_for = why
    if why is not None:
        logs.append(session, deploy, f">> Waiting: {why}")
    session.flush()


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
    deploy.waiting_for = None
    deploy.date_finished = utcnow()
    if status == DeployStatus.FINISHED:
        releases.record_finished(session, deploy)
    if reason and announce:
        logs.append(session, deploy, f">> {reason}")
    notifications.enqueue(session, deploy, str(status))
    session.flush()
