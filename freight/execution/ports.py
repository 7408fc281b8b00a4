"""What the execution layer needs from the engine that runs deploys, as a protocol: Prefect
implements it (freight/orchestrator.py), tests put a recording stand-in in its place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from freight.service.releases import ReleaseNotes


class RunState(StrEnum):
    SCHEDULED = "scheduled"  # accepted, waiting for a worker (or for room in its queue)
    PENDING = "pending"  # taken by a worker (or by Freight's launcher), not yet running
    RUNNING = "running"
    CANCELLING = "cancelling"  # someone cancelled it in the engine's UI; it is still running
    CANCELLED = "cancelled"
    ENDED = "ended"  # completed, failed or crashed
    MISSING = "missing"


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    since: datetime | None = None  # when the run entered that state


@dataclass(frozen=True)
class Submission:
    """One claim of a deploy, handed to the engine as a run."""

    deploy_id: int
    name: str  # APP/ENV#N
    app: str
    environment: str
    claim: str
    # The engine's queue its run goes to: only the workers serving it may run it.
    work_queue: str
    # Makes a retried submission of the same claim find the run already made.
    idempotency_key: str


class Orchestrator(Protocol):
    def submit(self, submission: Submission) -> str:
        """Create the run of a claim (at most one per claim, however often asked); its id."""
        ...

    def take(self, run_id: str) -> bool:
        """Take a scheduled run to start it here (Prefect: win its Pending transition); False
        if a worker took it first."""
        ...

    def give_back(self, run_id: str) -> None:
        """Return a taken run that could not be started here to the workers (Scheduled)."""
        ...

    def run_statuses(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        """The state of each run, in one look; a run the engine does not know is MISSING."""
        ...

    def stuck_runs(self, *, pending_for: float) -> list[str]:
        """Freight's runs (deploys and its scheduled flows) taken (Pending) longer than
        `pending_for` seconds ago and never started: whoever took them died before starting
        them."""
        ...

    def cancel_run(self, run_id: str) -> None:
        """Cancel a run that has not started yet."""
        ...

    def mark_crashed(self, run_id: str, message: str) -> None: ...

    def record_release(self, notes: ReleaseNotes) -> None:
        """Keep a deploy's outcome where the engine's users look (Prefect: an artifact)."""
        ...

    def label_run(self, run_id: str, *, name: str, app: str, environment: str) -> None:
        """Name and tag a run that started before Freight knew its deploy."""
        ...

    def problem(self) -> str | None:
        """Why the engine cannot take runs now, or None when it can (for health checks)."""
        ...
