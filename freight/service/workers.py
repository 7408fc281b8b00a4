"""Worker hosts as the Freight database knows them: each reports itself while it runs (its
version, limit and state), the control plane records the version it runs, and what a worker
runs now is read from the deploys it began."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from importlib.metadata import version

from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.db import App, ControlPlane, Deploy, DeployStatus, Worker, utcnow

# How many beats a worker may miss before it counts as lost: one late beat on a busy host is
# not a death.
BEATS_MISSED = 3


class WorkerState(StrEnum):
    RUNNING = "running"
    DRAINING = "draining"  # takes no more runs; exits once its deploys end
    STOPPED = "stopped"  # said goodbye
    LOST = "lost"  # went silent without a goodbye


def freight_version() -> str:
    return version("freight")


def report(
    session: Session,
    name: str,
    *,
    limit: int,
    queues: Sequence[str],
    pid: int,
    state: WorkerState,
    started: datetime,
) -> None:
    """A worker's beat: who it is, and that it is alive now."""
    worker = session.get(Worker, name)
    now = utcnow()
    if worker is None:
        worker = Worker(name=name, date_started=started)
        session.add(worker)
    worker.version = freight_version()
    worker.limit = limit
    worker.queues = list(queues)
    worker.pid = pid
    worker.state = state.value
    worker.date_started = started
    worker.heartbeat_at = now
    session.flush()


def record_control_plane(session: Session, host: str) -> None:
    plane = session.get(ControlPlane, host)
    if plane is None:
        plane = ControlPlane(host=host)
        session.add(plane)
    plane.version = freight_version()
    plane.date_started = utcnow()
    session.flush()


def version_conflict(session: Session) -> str | None:
    """Why this host's Freight may not run deploys for the control plane, if it may not: the
    control plane last started runs another version (a run begun by one version and judged by
    another could be misread)."""
    plane = session.scalars(
        select(ControlPlane).order_by(ControlPlane.date_started.desc()).limit(1)
    ).first()
    mine = freight_version()
    if plane is None or plane.version == mine:
        return None
    return (
        f"this host runs Freight {mine}, the control plane on {plane.host} runs "
        f"{plane.version}: upgrade this host (it takes no runs until then)"
    )


@dataclass(frozen=True)
class RunningDeploy:
    name: str  # APP/ENV#N
    app: str
    environment: str
    number: int


@dataclass(frozen=True)
class WorkerView:
    name: str
    version: str
    limit: int
    queues: list[str]
    state: WorkerState
    date_started: datetime
    heartbeat_at: datetime
    running: list[RunningDeploy]  # the deploys it runs now

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "limit": self.limit,
            "queues": self.queues,
            "state": self.state.value,
            "dateStarted": self.date_started.isoformat(),
            "lastHeartbeat": self.heartbeat_at.isoformat(),
            "running": [deploy.name for deploy in self.running],
        }


def state_of(worker: Worker, *, now: datetime, heartbeat_interval: float) -> WorkerState:
    state = WorkerState(worker.state)
    silent = now - worker.heartbeat_at > timedelta(seconds=heartbeat_interval * BEATS_MISSED)
    if state != WorkerState.STOPPED and silent:
        return WorkerState.LOST
    return state


def list_workers(
    session: Session, *, heartbeat_interval: float, apps: Collection[str] | None = None
) -> list[WorkerView]:
    """Every worker that ever reported, last heard of first, with the deploys each runs now
    (only those of `apps`, when the caller may see only some)."""
    now = utcnow()
    running: dict[str, list[RunningDeploy]] = {}
    query = (
        select(Deploy)
        .join(App)
        .where(Deploy.status == DeployStatus.IN_PROGRESS, Deploy.runner_host.is_not(None))
        .order_by(Deploy.id)
    )
    if apps is not None:
        query = query.where(App.name.in_(apps))
    for deploy in session.scalars(query):
        assert deploy.runner_host is not None
        running.setdefault(deploy.runner_host, []).append(
            RunningDeploy(deploy.name, deploy.app.name, deploy.environment, deploy.number)
        )
    return [
        WorkerView(
            name=worker.name,
            version=worker.version,
            limit=worker.limit,
            queues=list(worker.queues),
            state=state_of(worker, now=now, heartbeat_interval=heartbeat_interval),
            date_started=worker.date_started,
            heartbeat_at=worker.heartbeat_at,
            running=running.get(worker.name, []),
        )
        for worker in session.scalars(select(Worker).order_by(Worker.heartbeat_at.desc()))
    ]


def fleet_state(session: Session, *, heartbeat_interval: float) -> tuple[tuple[object, ...], ...]:
    """What the overview shows of the workers, as of now: it changes when one comes, goes,
    changes its queues or limit, or goes silent (no row changes then: only time passes)."""
    now = utcnow()
    return tuple(
        (w.name, state_of(w, now=now, heartbeat_interval=heartbeat_interval), w.limit, *w.queues)
        for w in session.scalars(select(Worker).order_by(Worker.name))
    )


def unserved(
    session: Session, queues: Collection[str], *, heartbeat_interval: float
) -> dict[str, str]:
    """Why each of these work queues has no worker to take its runs, for those that have none
    running (workers that serve it but are lost, draining or stopped are named)."""
    now = utcnow()
    found: dict[str, list[str]] = {queue: [] for queue in queues}
    served: set[str] = set()
    for worker in session.scalars(select(Worker).order_by(Worker.name)):
        state = state_of(worker, now=now, heartbeat_interval=heartbeat_interval)
        for queue in set(worker.queues) & found.keys():
            if state == WorkerState.RUNNING:
                served.add(queue)
            else:
                found[queue].append(f"{worker.name} is {state.value}")
    return {
        queue: f"no worker serves work queue '{queue}'" + (f" ({', '.join(gone)})" if gone else "")
        for queue, gone in found.items()
        if queue not in served
    }
