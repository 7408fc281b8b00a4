"""Each step of a deploy's run as its runner recorded it: what the deploy page lists with
state and duration. The steps themselves are freight/execution/steps.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.db import Deploy, DeployStep, utcnow

# The deploy flow's tasks, in the order they run (flows/deploy.py names its tasks from this).
ORDER = (
    "check-lock",
    "check-github-status",
    "prepare-workspace",
    "run-provider",
    "verify",
    "cleanup-workspace",
    "notify",
)


NOTICES_WITHIN = timedelta(minutes=2)


class StepState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"  # not begun, the deploy still going
    SKIPPED = "skipped"  # not begun, the deploy over
    STOPPED = "stopped"  # its runner stopped before it ended (reaped, killed)


@dataclass(frozen=True)
class StepView:
    name: str
    state: StepState
    started: datetime | None
    finished: datetime | None

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or utcnow()) - self.started).total_seconds()


def _mine(session: Session, deploy_id: int, claim: str | None) -> bool:
    """A runner whose claim was taken (reaped) records nothing more."""
    held = session.scalar(select(Deploy.claim).where(Deploy.id == deploy_id))
    return claim is None or held == claim


def began(session: Session, deploy_id: int, name: str, *, claim: str | None) -> None:
    if not _mine(session, deploy_id, claim):
        return
    step = session.get(DeployStep, (deploy_id, name))
    if step is None:
        session.add(
            DeployStep(
                deploy_id=deploy_id, name=name, state=StepState.RUNNING, date_started=utcnow()
            )
        )
    else:  # the final notices, after the first ones at the start
        step.state, step.date_started, step.date_finished = StepState.RUNNING, utcnow(), None
    session.flush()


def ended(
    session: Session, deploy_id: int, name: str, state: StepState, *, claim: str | None
) -> None:
    step = session.get(DeployStep, (deploy_id, name))
    if step is None or not _mine(session, deploy_id, claim):
        return
    step.state, step.date_finished = state, utcnow()
    session.flush()


def of(
    session: Session, deploy: Deploy, *, shows_verify: bool, at: datetime | None = None
) -> list[StepView]:
    """Every step in order, as of `at` (default now); those not begun are waiting, or skipped
    once the deploy ended; one its runner never ended (killed, reaped) reads stopped."""
    found = {
        step.name: step
        for step in session.scalars(select(DeployStep).where(DeployStep.deploy_id == deploy.id))
    }
    over = deploy.date_finished is not None
    views = []
    for name in ORDER:
        step = found.get(name)
        if step is None:
            if name == "verify" and not shows_verify:
                continue
            views.append(
                StepView(name, StepState.SKIPPED if over else StepState.WAITING, None, None)
            )
        elif step.state == StepState.RUNNING and _long_over(deploy, at or utcnow()):
            views.append(StepView(name, StepState.STOPPED, step.date_started, deploy.date_finished))
        else:
            views.append(
                StepView(name, StepState(step.state), step.date_started, step.date_finished)
            )
    return views


def _long_over(deploy: Deploy, at: datetime) -> bool:
    """Ended long enough ago that a step still running has no runner left to end it (the
    last step, the notices, runs just after the outcome is recorded)."""
    return deploy.date_finished is not None and at - deploy.date_finished > NOTICES_WITHIN
