"""What the service layer needs from the execution engine, as a protocol (Prefect implements it)."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from freight.db import Deploy


class RunState(StrEnum):
    WAITING = "waiting"  # accepted but not yet started by a worker
    RUNNING = "running"
    ENDED = "ended"
    MISSING = "missing"


class Orchestrator(Protocol):
    def submit(self, deploy: Deploy) -> str:
        """Start a run for the deploy; return the run's id."""
        ...

    def run_state(self, run_id: str) -> RunState: ...

    def mark_crashed(self, run_id: str, message: str) -> None: ...
