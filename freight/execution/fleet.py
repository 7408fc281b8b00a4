"""The fleet as a pull deploy's runner reaches it: orders published to, and reports read from,
the Freight database, where the agents' check-ins put them. Fenced by the deploy's claim like
everything else the runner writes."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.errors import ClaimLost
from freight.providers.base import FleetReport
from freight.service import pulls


class DatabaseFleet:
    def __init__(self, engine: Engine, deploy_id: int, *, claim: Callable[[], str | None]):
        self.engine = engine
        self.deploy_id = deploy_id
        self.claim = claim

    def publish(self, min_ready: int | None) -> tuple[list[str], int]:
        with session_scope(self.engine) as session:
            deploy = session.get_one(Deploy, self.deploy_id)
            if deploy.claim != self.claim() or deploy.status != DeployStatus.IN_PROGRESS:
                raise ClaimLost("The deploy's claim was taken from this run")
            order = pulls.publish(session, deploy, min_ready=min_ready, now=utcnow())
            return list(order.machines), order.need

    def report(self, after: int) -> FleetReport:
        with session_scope(self.engine, read_only=True) as session:
            found = pulls.progress(session, self.deploy_id, after=after, now=utcnow())
        return FleetReport(
            lines=found.lines,
            runs=found.runs,
            machines={name: status.value for name, status in found.machines.items()},
        )

    def cancel(self) -> None:
        with session_scope(self.engine) as session:
            pulls.cancel(session, self.deploy_id)
