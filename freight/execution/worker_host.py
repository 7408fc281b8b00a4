"""What a worker host does beside running its runs: it reports itself to the Freight database
(a beat every heartbeat interval: version, limit, state), takes no runs for a control plane of
another version, removes its own leftover checkouts, and drains: it stops taking runs and
returns once those it runs have ended."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from freight.db import get_engine, session_scope, utcnow
from freight.execution import git_cache
from freight.execution.housekeeping import remove_stray_workspaces
from freight.service import workers
from freight.service.workers import WorkerState
from freight.settings import Settings

# Leftover checkouts are looked for this often (and at start).
SWEEP_EVERY = 60.0


def version_conflict(engine: Engine) -> str | None:
    with session_scope(engine, read_only=True) as session:
        return workers.version_conflict(session)


@dataclass
class WorkerHost:
    engine: Engine
    name: str
    limit: int
    queues: list[str]
    pid: int
    workspace_root: Path
    heartbeat_interval: float
    say: Callable[[str], None]
    # The git cache's cap (bytes) and seconds between two `git gc` of a mirror.
    cache_limit: int
    gc_every: float
    # Whether a control plane of another version makes this host drain (a worker host: yes;
    # the worker of `freight up`, which is its own control plane: no need).
    checks_version: bool = True
    state: WorkerState = WorkerState.RUNNING
    started: datetime = field(default_factory=utcnow)

    @classmethod
    def of(
        cls,
        settings: Settings,
        *,
        limit: int,
        say: Callable[[str], None],
        checks_version: bool = True,
    ) -> WorkerHost:
        """This host's worker, as its settings name it, reported by this process."""
        return cls(
            engine=get_engine(settings.database_url),
            name=settings.host_name,
            limit=limit,
            queues=settings.worker_queues,
            pid=os.getpid(),
            workspace_root=settings.workspaces,
            heartbeat_interval=settings.heartbeat_interval,
            say=say,
            cache_limit=settings.git_cache_bytes,
            gc_every=settings.git_gc_hours * 3600,
            checks_version=checks_version,
        )

    def beat(self) -> None:
        with session_scope(self.engine) as session:
            workers.report(
                session,
                self.name,
                limit=self.limit,
                queues=self.queues,
                pid=self.pid,
                state=self.state,
                started=self.started,
            )

    def sweep(self) -> None:
        for path in remove_stray_workspaces(self.engine, workspace_root=self.workspace_root):
            self.say(f"Removed leftover checkout {path}")

    def serve(
        self,
        prefect_worker: Callable[[], subprocess.Popen[bytes] | None],
        runs_here: Callable[[], bool],
        *,
        drain: threading.Event,
        stop: threading.Event,
        keep_down: set[str],
    ) -> None:
        """Beat until `stop` is set, or until a drain (asked for, or forced by a version
        conflict) has ended: Prefect's worker frozen, then no run left on this host
        (`runs_here`), then the worker ended. `keep_down` names the processes the
        supervisor must not start again."""
        cache_stop = threading.Event()
        cache = threading.Thread(
            target=git_cache.serve,
            args=(self.engine, self.workspace_root, self.name),
            kwargs={
                "limit_bytes": self.cache_limit,
                "gc_every": self.gc_every,
                "stop": cache_stop,
                "say": self.say,
            },
            name="git-cache",
            daemon=True,
        )
        cache.start()
        next_sweep = 0.0
        elapsed = 0.0
        while not stop.is_set():
            if self.state == WorkerState.RUNNING:
                conflict = version_conflict(self.engine) if self.checks_version else None
                if conflict is not None:
                    self.say(f"Draining: {conflict}")
                    drain.set()
                if drain.is_set():
                    self.state = WorkerState.DRAINING
                    self.say("Draining: no more runs are taken; waiting for those running")
                    keep_down.add("worker")
                    # Frozen, Prefect's worker takes no run (one it had just taken goes back to
                    # the pool: the reconciler gives back runs taken and never started). Asked
                    # to stop instead, it would end the runs it stands in for.
                    _signal(prefect_worker(), signal.SIGSTOP)
                elif elapsed >= next_sweep:
                    self.sweep()
                    next_sweep = elapsed + SWEEP_EVERY
            if self.state == WorkerState.DRAINING and not runs_here():
                _signal(prefect_worker(), signal.SIGKILL)  # it holds nothing any more
                break
            try:
                self.beat()
            except Exception as exc:  # the database is away a moment: the next beat is in time
                self.say(f"Could not report this worker: {exc}")
            stop.wait(self.heartbeat_interval)
            elapsed += self.heartbeat_interval
        cache_stop.set()
        self.state = WorkerState.STOPPED
        try:
            self.beat()
        except Exception as exc:
            self.say(f"Could not report this worker stopped: {exc}")


def _signal(process: subprocess.Popen[bytes] | None, signum: signal.Signals) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signum)
