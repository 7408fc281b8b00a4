"""How Freight's processes put the execution path together from their settings: the hand-over
path with its engine and, where a fork server runs beside it, the launcher."""

from __future__ import annotations

from collections.abc import Mapping

from freight import vcs
from freight.db import get_engine
from freight.execution.handover import HandOver
from freight.execution.launcher import ForkLauncher
from freight.execution.ports import Orchestrator
from freight.settings import Settings, process_environment
from freight.stack import PROJECT_ROOT


def hand_over(
    settings: Settings,
    orchestrator: Orchestrator,
    *,
    env: Mapping[str, str] | None = None,
    git: vcs.Access | None = None,
) -> HandOver:
    """The hand-over path; runs it starts directly get `env` (default: this process's), and
    git may reach what `git` says (default: what a deploy's run may)."""
    launcher = None
    if settings.forkserver_socket is not None:
        launcher = ForkLauncher(
            orchestrator=orchestrator,
            socket=settings.forkserver_socket,
            env=process_environment() if env is None else env,
            cwd=PROJECT_ROOT,
            log_file=settings.home.resolve() / "logs" / "runs.log",
            limit=settings.concurrent_deploys,
            queues=frozenset(settings.worker_queues),
        )
    return HandOver(
        get_engine(settings.database_url),
        orchestrator,
        workspace_root=settings.workspaces,
        git=settings.git_access() if git is None else git,
        launcher=launcher,
    )
