"""Housekeeping: fail deploys whose runner is gone, remove stray checkouts, restart queues."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from freight import vcs
from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.runner import stop_orphaned_group
from freight.service import deploys, queue
from freight.service.orchestration import Orchestrator, RunState


@dataclass
class MaintenanceReport:
    reaped: list[str] = field(default_factory=list)
    removed_workspaces: list[str] = field(default_factory=list)
    handed_over: list[str] = field(default_factory=list)


def reap_lost_runs(
    engine: Engine,
    orchestrator: Orchestrator,
    *,
    workspace_root: Path,
    lost_after: float,
    grace: float,
) -> list[str]:
    """Fail in-progress deploys whose run ended or went silent; stop what their command left
    running (on this host), remove their checkout, free their app/env."""
    cutoff = utcnow() - timedelta(seconds=lost_after)
    with session_scope(engine) as session:
        candidates = [
            (d.id, d.flow_run_id, d.heartbeat_at is None or d.heartbeat_at < cutoff)
            for d in session.scalars(
                select(Deploy).where(Deploy.status == DeployStatus.IN_PROGRESS)
            )
        ]
    reaped = []
    for deploy_id, run_id, silent in candidates:
        state = orchestrator.run_state(run_id) if run_id else RunState.MISSING
        if state == RunState.WAITING or (state == RunState.RUNNING and not silent):
            continue
        if state == RunState.MISSING and not silent:
            continue  # just claimed; its run id is being recorded
        with session_scope(engine) as session:
            deploy = deploys.get_deploy(session, deploy_id)
            if deploy.status != DeployStatus.IN_PROGRESS:
                continue
            if deploy.runner_pgid and deploy.runner_host == socket.gethostname():
                stop_orphaned_group(
                    deploy.runner_pgid, marker=f"FREIGHT_DEPLOY_ID={deploy.id}", grace=grace
                )
            since = deploy.heartbeat_at.isoformat() if deploy.heartbeat_at else "never"
            deploys.mark_ended(
                session, deploy, DeployStatus.FAILED, f"Runner lost (last heartbeat {since})"
            )
            workspace, deploy.workspace = deploy.workspace, None
            if workspace:
                vcs.remove_worktree(
                    vcs.mirror_path(workspace_root, deploy.app.repository.url), Path(workspace)
                )
            app_id, environment, name = deploy.app_id, deploy.environment, deploy.name
        if run_id and state != RunState.ENDED:
            orchestrator.mark_crashed(run_id, f"Freight: runner of {name} lost")
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
    *,
    workspace_root: Path,
    lost_after: float,
    grace: float,
) -> MaintenanceReport:
    report = MaintenanceReport()
    report.reaped = reap_lost_runs(
        engine, orchestrator, workspace_root=workspace_root, lost_after=lost_after, grace=grace
    )
    report.removed_workspaces = remove_stray_workspaces(engine, workspace_root=workspace_root)
    with session_scope(engine) as session:
        report.handed_over = [d.name for d in queue.advance_all(session, orchestrator)]
    return report
