"""Housekeeping, run by the maintenance flow: stray checkouts removed, locks that ran out
marked and announced, notifications that no runner is left to send delivered, logged-out
sessions whose cookies expired forgotten, machine history past its retention dropped.
(Repairing deploys is the reconciler's.)"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from freight import vcs
from freight.db import Deploy, DeployStatus, changes, session_scope, utcnow
from freight.execution import delivery
from freight.execution.delivery import Courier
from freight.service import locks, logins, machines, mirrors, notifications

# A runner delivers its deploy's events within seconds of ending; give it a minute.
NOTIFY_SETTLE = 60


@dataclass
class MaintenanceReport:
    removed_workspaces: list[str] = field(default_factory=list)
    expired_locks: list[str] = field(default_factory=list)
    begun_freezes: list[str] = field(default_factory=list)
    notified: list[int] = field(default_factory=list)
    forgotten_sessions: int = 0
    forgotten_history: int = 0
    # Each host's git cache as its last sweep left it: (mirror, bytes), largest first.
    git_caches: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def remove_stray_workspaces(engine: Engine, *, workspace_root: Path) -> list[str]:
    """Remove checkouts that no running deploy owns (left by a crash of the whole machine)."""
    checkouts = workspace_root / "checkouts"
    if not checkouts.is_dir():
        return []
    with session_scope(engine, read_only=True) as session:
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
    # A command's temporary directory is named for its deploy, as its checkout is.
    running = {Path(path).name for path in owned}
    temporary = workspace_root / "tmp"
    for path in temporary.iterdir() if temporary.is_dir() else ():
        if path.name not in running:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    if removed:
        for mirror in (workspace_root / "mirrors").glob("*.git"):
            vcs.prune_worktrees(mirror)
    return removed


def run_maintenance(
    engine: Engine,
    courier: Courier,
    output: Callable[[str], None],
    *,
    history_days: float = 90,
) -> MaintenanceReport:
    report = MaintenanceReport()
    report.removed_workspaces = remove_stray_workspaces(
        engine, workspace_root=courier.workspace_root
    )
    with session_scope(engine) as session:
        expired = [(lock, "expired") for lock in locks.expire_due(session)]
        begun = [(lock, "frozen") for lock in locks.begin_due(session)]
        due = [
            (
                notifications.environment_notifiers(lock.app, lock.environment),
                locks.notice(lock, event, by=locks.EXPIRED if event == "expired" else lock.owner),
            )
            for lock, event in expired + begun
        ]
    for configs, notice in due:
        delivery.announce(configs, notice, courier, output)
        if notice.event == "expired":
            report.expired_locks.append(notice.scope)
        else:
            report.begun_freezes.append(notice.scope)
    with session_scope(engine, read_only=True) as session:
        unattended = notifications.unattended(session, settle=NOTIFY_SETTLE)
    for deploy_id in unattended:
        delivery.deliver(engine, deploy_id, courier, output)
        report.notified.append(deploy_id)
    with session_scope(engine) as session:
        report.forgotten_sessions = logins.forget_expired(session)
        changes.forget_older(session)
    with session_scope(engine, read_only=True) as session:
        report.git_caches = {
            host: [(m.name, m.bytes) for m in held]
            for host, held in mirrors.by_host(session).items()
        }
    with session_scope(engine) as session:
        report.forgotten_history = machines.forget_history(
            session, older_than=utcnow() - timedelta(days=history_days)
        )
    return report
