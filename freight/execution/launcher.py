"""Starting a handed-over run at once on this host, from the local fork server, instead of
waiting for the worker's next poll and its submission (about a second of a deploy's start).

The run is taken first (Prefect's Pending transition, which only one taker wins: this
launcher or a worker), then forked. A run that cannot be started here (no fork server, or
already as many runs as the limit) goes back to the workers, whose queue limit then applies.
Every run is still an ordinary Prefect flow run, visible and cancellable in Prefect's UI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from freight import forkclient
from freight.execution.ports import Orchestrator

log = logging.getLogger(__name__)

# The variable Prefect's engine reads the run to execute from.
RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"


def run_environment(base: Mapping[str, str], run_id: str) -> dict[str, str]:
    """A run's environment: the launching process's, without what belongs to the run that
    process may itself be (PREFECT__* are per-run values a worker or runner sets)."""
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT__")}
    env[RUN_ID_ENV] = run_id
    return env


@dataclass(frozen=True)
class ForkLauncher:
    orchestrator: Orchestrator
    socket: Path
    # The environment and working directory of a flow run, as the worker would give them.
    env: Mapping[str, str]
    cwd: Path
    log_file: Path
    limit: int
    # The work queues this host's worker serves: runs of others are for other hosts.
    queues: frozenset[str]

    def start(self, run_id: str, work_queue: str) -> bool:
        if work_queue not in self.queues or not self.socket.exists():
            return False
        if not self.orchestrator.take(run_id):
            return False  # a worker took it first
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                forkclient.spawn_detached(
                    str(self.socket),
                    env=run_environment(self.env, run_id),
                    cwd=str(self.cwd),
                    argv=[],
                    log_fd=fd,
                    limit=self.limit,
                )
            finally:
                os.close(fd)
        except (OSError, RuntimeError) as exc:
            log.info("Run %s goes to the workers: %s", run_id, exc)
            self.orchestrator.give_back(run_id)
            return False
        return True
