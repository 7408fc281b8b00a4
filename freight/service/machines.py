"""Machines as their agents report them: each check-in says what version of each app runs
there; the database keeps the current state, a row of history per change, and the fleet's
events (drift found or resolved, a machine lost) for the notifiers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from freight.db import (
    App,
    Deploy,
    DeployStatus,
    Machine,
    MachineApp,
    MachineEvent,
    MachineOutput,
    MachineVersion,
    utcnow,
)
from freight.errors import InvalidRequest, NotFound
from freight.service import apps, releases

# Why a check-in's app is refused: the same whether it does not exist or the key may not report
# it, and without echoing its name (a key learns nothing of the apps it may not see).
UNKNOWN_APP = "No such app (or not one this key may report)"

# Check-ins a machine may miss before it counts as stale, and as lost.
STALE_AFTER = 3
LOST_AFTER = 10

# How long a finished pull deploy's machine output outlives it: the log has its copy, and an
# agent's last report (after a cancel) may still come in.
OUTPUT_KEPT = timedelta(hours=1)


class MachineStatus(StrEnum):
    ONLINE = "online"
    STALE = "stale"
    LOST = "lost"


def status_of(machine: Machine, now: datetime, *, heard_since: datetime) -> MachineStatus:
    """What a machine's silence earns: only the silence since `heard_since` counts (before
    it, no API was there to hear its check-ins)."""
    silent = now - max(machine.last_seen, heard_since)
    missed = silent.total_seconds() / max(machine.interval, 1.0)
    if missed > LOST_AFTER:
        return MachineStatus.LOST
    if missed > STALE_AFTER:
        return MachineStatus.STALE
    return MachineStatus.ONLINE


def same_version(version: str | None, sha: str | None) -> bool:
    """A machine that reports an abbreviated sha (7 characters or more) runs that sha."""
    if version is None or sha is None:
        return False
    version = version.strip().lower()
    return len(version) >= 7 and sha.lower().startswith(version)


@dataclass(frozen=True)
class AppReport:
    """One app/environment in a check-in: the version the agent read (or why it could not),
    and whether its config can deploy it (pull)."""

    app: str
    environment: str
    version: str | None = None
    error: str | None = None
    can_deploy: bool = False


@dataclass(frozen=True)
class CheckIn:
    name: str
    labels: Mapping[str, str]
    agent_version: str
    interval: float
    apps: Sequence[AppReport]
    address: str | None = None


@dataclass
class Recorded:
    machine_id: int
    # (app, environment) pairs it reports, by app id, for the orders it may take
    places: list[tuple[int, str]] = field(default_factory=list)
    # Per report the agent sent that named no app/environment the key may see: why.
    refused: list[dict[str, str]] = field(default_factory=list)


def check_in(
    session: Session, report: CheckIn, *, allowed: frozenset[str] | None, now: datetime
) -> Recorded:
    """Record a check-in: the machine is alive now, each app's version is its current state,
    and a changed version is a row of history. Drift is judged here, so that it is announced
    once when it appears and once when it goes."""
    machine = session.scalar(select(Machine).where(Machine.name == report.name))
    if machine is None:
        machine = Machine(name=report.name, date_first_seen=now, status=MachineStatus.ONLINE)
        session.add(machine)
    machine.status = MachineStatus.ONLINE  # a lost one is back: its next loss is news again
    machine.labels = dict(report.labels)
    machine.agent_version = report.agent_version
    machine.interval = report.interval
    machine.address = report.address
    machine.last_seen = now
    session.flush()
    recorded = Recorded(machine.id)
    current = {
        (row.app_id, row.environment): row
        for row in session.scalars(select(MachineApp).where(MachineApp.machine_id == machine.id))
    }
    for index, item in enumerate(report.apps):
        app = apps.find_app(session, item.app)
        if app is None or (allowed is not None and item.app not in allowed):
            recorded.refused.append({"field": f"apps[{index}].app", "error": UNKNOWN_APP})
            continue
        if item.environment not in apps.environment_names(app):
            recorded.refused.append(
                {
                    "field": f"apps[{index}].env",
                    "error": f"App '{item.app}' has no environment '{item.environment}'",
                }
            )
            continue
        place = (app.id, item.environment)
        recorded.places.append(place)
        row = current.get(place)
        if row is None:
            row = MachineApp(
                machine_id=machine.id, app_id=app.id, environment=item.environment, drift=False
            )
            session.add(row)
        changed = row.id is None or (row.version, row.error) != (item.version, item.error)
        row.can_deploy = item.can_deploy
        if changed:
            row.version, row.error, row.date_changed = item.version, item.error, now
            session.add(
                MachineVersion(
                    machine_id=machine.id,
                    app_id=app.id,
                    environment=item.environment,
                    version=item.version,
                    error=item.error,
                    date_created=now,
                )
            )
        _judge_drift(session, machine, row, app, now)
    session.flush()
    return recorded


def _judge_drift(
    session: Session, machine: Machine, row: MachineApp, app: App, now: datetime
) -> None:
    """Drift is judged only when the environment is at rest: while a deploy runs, and for one
    check-in interval after one finished, a machine may not have the new version yet."""
    if row.version is None:
        return
    live = releases.live_sha_since(session, app.id, row.environment)
    if live is None or _in_progress(session, app.id, row.environment):
        return
    sha, finished = live
    if now - finished <= timedelta(seconds=machine.interval):
        return
    drift = not same_version(row.version, sha)
    if drift == row.drift:
        return
    row.drift = drift
    detail = (
        f"{machine.name} runs {row.version}, {app.name}/{row.environment} is at {sha}"
        if drift
        else f"{machine.name} runs {sha}, as {app.name}/{row.environment} does"
    )
    add_event(
        session,
        machine,
        "drift_found" if drift else "drift_resolved",
        detail,
        app_id=app.id,
        environment=row.environment,
        when=now,
    )


def _in_progress(session: Session, app_id: int, environment: str) -> bool:
    return (
        session.scalar(
            select(Deploy.id).where(
                Deploy.app_id == app_id,
                Deploy.environment == environment,
                Deploy.status == DeployStatus.IN_PROGRESS,
            )
        )
        is not None
    )


def add_event(
    session: Session,
    machine: Machine,
    event: str,
    detail: str,
    *,
    app_id: int | None = None,
    environment: str | None = None,
    when: datetime | None = None,
) -> None:
    session.add(
        MachineEvent(
            machine_id=machine.id,
            app_id=app_id,
            environment=environment,
            event=event,
            detail=detail,
            date_created=when or utcnow(),
        )
    )


def machine_id(session: Session, name: str) -> int:
    found = session.scalar(select(Machine.id).where(Machine.name == name))
    if found is None:
        raise NotFound(f"Machine '{name}' not found")
    return found


def judge_statuses(session: Session, now: datetime, *, heard_since: datetime) -> list[Machine]:
    """Move each machine to the status its silence earns (the one place that judges it); a
    machine newly lost is an event (for each app/environment it reported). The machines newly
    lost."""
    lost = []
    for machine in session.scalars(select(Machine)):
        status = status_of(machine, now, heard_since=heard_since)
        if status == machine.status:
            continue
        machine.status = status
        if status == MachineStatus.LOST:
            lost.append(machine)
            seen = _duration(now - machine.last_seen)
            places = session.scalars(select(MachineApp).where(MachineApp.machine_id == machine.id))
            for row in places:
                add_event(
                    session,
                    machine,
                    "machine_lost",
                    f"{machine.name} is lost: no check-in for {seen}",
                    app_id=row.app_id,
                    environment=row.environment,
                    when=now,
                )
    session.flush()
    return lost


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def undelivered_events(session: Session, *, limit: int = 100) -> list[MachineEvent]:
    return list(
        session.scalars(
            select(MachineEvent)
            .where(MachineEvent.date_delivered.is_(None))
            .order_by(MachineEvent.id)
            .limit(limit)
        )
    )


def mark_delivered(session: Session, event_id: int) -> None:
    session.get_one(MachineEvent, event_id).date_delivered = utcnow()


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppState:
    app: str
    environment: str
    version: str | None
    error: str | None
    can_deploy: bool
    live_sha: str | None
    drift: bool
    date_changed: datetime
    # How far the version is from the live sha, when the mirror knows both (None: unknown).
    behind: int | None = None
    ahead: int | None = None


@dataclass(frozen=True)
class MachineView:
    name: str
    labels: dict[str, str]
    agent_version: str
    interval: float
    address: str | None
    status: MachineStatus
    date_first_seen: datetime
    last_seen: datetime
    apps: list[AppState]

    @property
    def drifted(self) -> bool:
        return any(state.drift for state in self.apps)


# How many commits a version is behind and ahead of an environment's live sha, in an app's
# repository (None: not known); the execution layer reads it from the mirrors.
Distance = Callable[[App, str, str], tuple[int | None, int | None]]


@dataclass(frozen=True)
class Filters:
    app: str | None = None
    environment: str | None = None
    # Any of these (None: any status)
    statuses: frozenset[MachineStatus] | None = None
    # key=value pairs that must all be among a machine's labels
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidRequest(f"label: '{text}' is not KEY=VALUE")
    return key, value


def list_machines(
    session: Session,
    filters: Filters,
    *,
    allowed: frozenset[str] | None,
    now: datetime,
    distance: Distance | None = None,
) -> list[MachineView]:
    """The machines that match, each with the apps the key may see (and only those: a machine
    that runs none of them is not shown to a key limited to other apps). `distance(app,
    version, live_sha)` tells how many commits apart two versions are, when known."""
    query = select(MachineApp).join(App).join(Machine)
    if allowed is not None:
        query = query.where(App.name.in_(sorted(allowed)))
    if filters.name is not None:
        query = query.where(Machine.name == filters.name)
    rows = list(session.scalars(query.order_by(Machine.name, App.name, MachineApp.environment)))
    live = {
        (deploy.app_id, deploy.environment): deploy.sha
        for deploy in _live_deploys(session, {(r.app_id, r.environment) for r in rows})
    }
    by_machine: dict[int, tuple[Machine, list[AppState]]] = {}
    for row in rows:
        sha = live.get((row.app_id, row.environment))
        drift = row.version is not None and sha is not None and not same_version(row.version, sha)
        behind = ahead = None
        if drift and distance is not None:
            behind, ahead = distance(row.app, row.version, sha)
        state = AppState(
            app=row.app.name,
            environment=row.environment,
            version=row.version,
            error=row.error,
            can_deploy=row.can_deploy,
            live_sha=sha,
            drift=drift,
            date_changed=row.date_changed,
            behind=behind,
            ahead=ahead,
        )
        by_machine.setdefault(row.machine_id, (row.machine, []))[1].append(state)
    views = []
    for machine, states in by_machine.values():
        view = MachineView(
            name=machine.name,
            labels=dict(machine.labels),
            agent_version=machine.agent_version,
            interval=machine.interval,
            address=machine.address,
            status=MachineStatus(machine.status),
            date_first_seen=machine.date_first_seen,
            last_seen=machine.last_seen,
            apps=states,
        )
        if filters.statuses is not None and view.status not in filters.statuses:
            continue
        if any(view.labels.get(key) != value for key, value in filters.labels.items()):
            continue
        # Asked about an app (or environment): a machine shows what it runs of that only.
        states = [
            state
            for state in states
            if (filters.app is None or state.app == filters.app)
            and (filters.environment is None or state.environment == filters.environment)
        ]
        if states:
            views.append(dataclasses.replace(view, apps=states))
    return views


def _live_deploys(session: Session, places: Collection[tuple[int, str]]) -> list[Deploy]:
    found = []
    for app_id, environment in places:
        deploy = releases.live_deploy(session, app_id, environment)
        if deploy is not None:
            found.append(deploy)
    return found


def get_machine(
    session: Session,
    name: str,
    *,
    allowed: frozenset[str] | None,
    now: datetime,
    distance: Distance | None,
) -> MachineView:
    found = list_machines(session, Filters(name=name), allowed=allowed, now=now, distance=distance)
    if not found:
        raise NotFound(f"Machine '{name}' not found")
    return found[0]


@dataclass(frozen=True)
class VersionSeen:
    app: str
    environment: str
    version: str | None
    error: str | None
    date: datetime


def history(
    session: Session, name: str, *, allowed: frozenset[str] | None, limit: int = 100
) -> list[VersionSeen]:
    """What ran on the machine, newest first: each version from when it was first reported."""
    query = (
        select(MachineVersion, App.name)
        .join(App, App.id == MachineVersion.app_id)
        .join(Machine, Machine.id == MachineVersion.machine_id)
        .where(Machine.name == name)
    )
    if allowed is not None:
        query = query.where(App.name.in_(sorted(allowed)))
    rows = session.execute(query.order_by(MachineVersion.id.desc()).limit(limit))
    return [
        VersionSeen(app, row.environment, row.version, row.error, row.date_created)
        for row, app in rows
    ]


def forget_history(session: Session, *, older_than: datetime) -> int:
    """Drop history rows older than the cutoff, except each place's latest (what runs now is
    always known from when), and the machines' output of deploys that finished more than an
    hour ago (their runner copied it into the deploy's log). The rows dropped."""
    latest = (
        select(func.max(MachineVersion.id))
        .group_by(MachineVersion.machine_id, MachineVersion.app_id, MachineVersion.environment)
        .scalar_subquery()
    )
    dropped = session.execute(
        delete(MachineVersion).where(
            MachineVersion.date_created < older_than, MachineVersion.id.not_in(latest)
        )
    ).rowcount
    dropped += session.execute(
        delete(MachineEvent).where(
            MachineEvent.date_created < older_than, MachineEvent.date_delivered.is_not(None)
        )
    ).rowcount
    copied = select(Deploy.id).where(Deploy.date_finished < utcnow() - OUTPUT_KEPT)
    dropped += session.execute(
        delete(MachineOutput).where(MachineOutput.deploy_id.in_(copied))
    ).rowcount
    return int(dropped or 0)
