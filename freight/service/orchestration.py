"""What the service layer needs from the execution engine, as a protocol (Prefect implements it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from freight.db import Deploy

if TYPE_CHECKING:
    from freight.service.releases import ReleaseNotes


class RunState(StrEnum):
    WAITING = "waiting"  # accepted, not yet started by a worker
    RUNNING = "running"
    CANCELLED = "cancelled"
    ENDED = "ended"  # completed, failed or crashed
    MISSING = "missing"


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    since: datetime | None = None  # when the run entered that state


class Orchestrator(Protocol):
    def submit(self, deploy: Deploy) -> str:
        """Start a run for the deploy; return the run's id."""
        ...

    def run_status(self, run_id: str) -> RunStatus: ...

    def cancel_run(self, run_id: str) -> None:
        """Cancel a run that has not started yet."""
        ...

    def mark_crashed(self, run_id: str, message: str) -> None: ...

    def record_release(self, notes: ReleaseNotes) -> None:
        """Keep a deploy's outcome where the engine's users look (Prefect: an artifact)."""
        ...

    def problem(self) -> str | None:
        """Why the engine cannot take runs now, or None when it can (for health checks)."""
        ...
