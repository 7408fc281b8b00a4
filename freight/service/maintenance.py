"""Housekeeping: fail deploys whose runner is gone, remove stray checkouts, restart queues,
deliver notifications no runner is left to send."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, select

from freight import procs, vcs
from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.runner import stop_orphaned_group
from freight.service import deploys, locks, notifications, queue
from freight.service.orchestration import Orchestrator, RunState
from freight.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    reaped: list[str] = field(default_factory=list)
    removed_workspaces: list[str] = field(default_factory=list)
    handed_over: list[str] = field(default_factory=list)
    notified: list[int] = field(default_factory=list)
    expired_locks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    id: int
    run_id: str | None
    heartbeat_at: datetime | None
    # The runner's process, when it runs on this host: seen alive, it is not lost, however
    # late its heartbeat (a loaded machine can delay a beat by many seconds).
    local_runner: int | None


def _lost(candidate: _Candidate, orchestrator: Orchestrator, cutoff: datetime) -> RunState | None:
    """The run's state if the deploy's runner is gone, else None."""
    status = orchestrator.run_status(candidate.run_id) if candidate.run_id else None
    state = status.state if status else RunState.MISSING
    if state == RunState.WAITING:
        return None  # no worker has taken it yet: nothing is lost
    # Silence counts from the later of the last beat and the run's start, so a run that waited
    # long for a worker is not reaped in the second before its first beat.
    last_sign = max(
        (t for t in (candidate.heartbeat_at, status.since if status else None) if t is not None),
        default=None,
    )
    silent = last_sign is None or last_sign < cutoff
    alive = candidate.local_runner is not None and procs.is_alive(candidate.local_runner)
    if state in (RunState.RUNNING, RunState.MISSING) and (not silent or alive):
        return None
    return state


# Past this, a hand-over with no run id is taken for dead (its process died mid-call).
HAND_OVER_TIMEOUT = timedelta(minutes=10)
# Runs lost before they start are replaced this many times, then the deploy fails.
MAX_HAND_OVERS = 3


def _requeue_stuck_hand_over(engine: Engine, candidate: _Candidate, cutoff: datetime) -> None:
    if candidate.heartbeat_at is None or candidate.heartbeat_at >= cutoff:
        return
    with session_scope(engine) as session:
        queue.unclaim(session, candidate.id)  # advance_all hands it over again
    log.warning("Hand-over of deploy %s never finished; it is queued again", candidate.id)


def reap_lost_runs(
    engine: Engine,
    orchestrator: Orchestrator,
    *,
    workspace_root: Path,
    lost_after: float,
    grace: float,
) -> list[str]:
    """End in-progress deploys whose run ended or went silent: stop what their command left
    running (on this host), remove their checkout, free their app/env."""
    cutoff = utcnow() - timedelta(seconds=lost_after)
    with session_scope(engine) as session:
        candidates = [
            _Candidate(
                d.id,
                d.flow_run_id,
                d.heartbeat_at,
                d.runner_pid if d.runner_host == socket.gethostname() else None,
            )
            for d in session.scalars(
                select(Deploy).where(Deploy.status == DeployStatus.IN_PROGRESS)
            )
        ]
    reaped = []
    for candidate in candidates:
        if candidate.run_id is None:
            # Claimed, and its hand-over to the orchestrator is still under way (a busy Prefect
            # server can take minutes, retrying): nothing ran, so nothing is lost.
            _requeue_stuck_hand_over(engine, candidate, cutoff - HAND_OVER_TIMEOUT)
            continue
        state = _lost(candidate, orchestrator, cutoff)
        if state is None:
            continue
        with session_scope(engine) as session:
            deploy = deploys.get_deploy(session, candidate.id)
            if deploy.status != DeployStatus.IN_PROGRESS:
                continue
            if (
                state == RunState.ENDED
                and deploy.date_started is None
                and deploy.hand_overs < MAX_HAND_OVERS
            ):
                # The orchestrator lost the run before it started (Prefect's worker marks it
                # crashed when it cannot start it): nothing of the deploy ran, so it is handed
                # over again rather than failed.
                queue.unclaim(session, deploy.id, lost_run=candidate.run_id)
                log.warning("Run of %s ended before it started; handing it over again", deploy.name)
                continue
            if state == RunState.CANCELLED and deploy.date_started is None:
                outcome, reason = DeployStatus.CANCELLED, "Cancelled in Prefect before it started"
            else:
                since = deploy.heartbeat_at.isoformat() if deploy.heartbeat_at else "never"
                outcome, reason = DeployStatus.FAILED, f"Runner lost (last heartbeat {since})"
            deploys.mark_ended(session, deploy, outcome, reason)
            workspace, deploy.workspace = deploy.workspace, None
            orphan = deploy.runner_pgid if deploy.runner_host == socket.gethostname() else None
            url, app_id, environment, name = (
                deploy.app.repository.url,
                deploy.app_id,
                deploy.environment,
                deploy.name,
            )
        # Slow work happens outside the transaction (SQLite would stay write-locked meanwhile).
        if orphan:
            stop_orphaned_group(orphan, marker=f"FREIGHT_DEPLOY_ID={candidate.id}", grace=grace)
        if workspace:
            vcs.remove_worktree(vcs.mirror_path(workspace_root, url), Path(workspace))
        if candidate.run_id and state in (RunState.RUNNING, RunState.WAITING):
            try:
                orchestrator.mark_crashed(candidate.run_id, f"Freight: runner of {name} lost")
            except Exception:
                log.exception("Could not mark run %s of %s crashed", candidate.run_id, name)
        with session_scope(engine) as session:
            queue.advance(session, orchestrator, app_id, environment)
        reaped.append(name)
    return reaped


def remove_stray_workspaces(engine: Engine, *, workspace_root: Path) -> list[str]:
    """Remove checkouts that no running deploy owns (left by a crash of the whole machine)."""
    checkouts = workspace_root / "checkouts"
    if not checkouts.is_dir():
        return []
    with session_scope(engine) as session:
        owned = set(
            session.scalars(
                select(Deploy.workspace).where(
                    Deploy.status == DeployStatus.IN_PROGRESS, Deploy.workspace.is_not(None)
                )
            )
        )
    removed = []
    for path in checkouts.iterdir():
        if str(path) not in owned:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    if removed:
        for mirror in (workspace_root / "mirrors").glob("*.git"):
            vcs.prune_worktrees(mirror)
    return removed


def run_maintenance(
    engine: Engine,
    orchestrator: Orchestrator,
    settings: Settings,
    *,
    client: httpx.Client,
    output: Callable[[str], None],
) -> MaintenanceReport:
    report = MaintenanceReport()
    report.reaped = reap_lost_runs(
        engine,
        orchestrator,
        workspace_root=settings.workspaces,
        lost_after=settings.runner_lost_after,
        grace=settings.cancel_grace,
    )
    report.removed_workspaces = remove_stray_workspaces(engine, workspace_root=settings.workspaces)
    with session_scope(engine) as session:
        expired = [
            (
                notifications.lock_notifiers(lock.app, lock.environment),
                locks.notice(lock, "expired", by=locks.EXPIRED),
            )
            for lock in locks.expire_due(session)
        ]
    for configs, notice in expired:
        notifications.announce_lock(
            configs,
            notice,
            client=client,
            urls=settings.service_urls(),
            output=output,
            retry_delays=settings.notify_retry_delays,
            secrets_from=os.environ,
        )
        report.expired_locks.append(notice.scope)
    with session_scope(engine) as session:
        report.handed_over = [d.name for d in queue.advance_all(session, orchestrator)]
    # A runner delivers its deploy's events within seconds of ending; give it a minute.
    for deploy_id in notifications.unattended(engine, settle=60):
        notifications.deliver(
            engine,
            deploy_id,
            client=client,
            urls=settings.service_urls(),
            workspace_root=settings.workspaces,
            public_url=settings.public_url,
            output=output,
            retry_delays=settings.notify_retry_delays,
            secrets_from=os.environ,
        )
        report.notified.append(deploy_id)
    return report
