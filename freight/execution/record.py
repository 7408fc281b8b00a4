"""The deploy's row as its runner changes it: every write is made only while the runner holds
the deploy's claim, so a runner that was reaped (and may wake up later) changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, Update, select, update

from freight.db import Deploy, DeployStatus, changes, session_scope, utcnow
from freight.errors import ClaimLost
from freight.execution import delivery
from freight.execution.delivery import Courier
from freight.execution.fleet import DatabaseFleet
from freight.execution.monitor import Claim
from freight.service import barriers, deploys, locks, notifications, rollbacks


class RunRecord:
    def __init__(self, engine: Engine, deploy_id: int, *, claim: str | None, courier: Courier):
        self.engine = engine
        self.deploy_id = deploy_id
        # None until the deploy is claimed for this run (a run that registered itself waits).
        self.claim = claim
        self.courier = courier
        # The group of the command running now, to stop it at once should the claim be lost.
        self.pgid: int | None = None

    def look(self, beat: bool) -> Claim:
        """The monitor's look: is the claim still ours, and did someone ask to stop?"""
        with session_scope(self.engine, read_only=not beat) as session:
            if beat:
                beat = self._mine(update(Deploy)).values(heartbeat_at=utcnow())
                beaten = session.execute(beat.execution_options(**changes.UNSEEN)).rowcount  # type: ignore[attr-defined]
                if not beaten:
                    return Claim.LOST
            row = session.execute(
                select(Deploy.claim, Deploy.status, Deploy.cancel_requested_at).where(
                    Deploy.id == self.deploy_id
                )
            ).one()
        if row.claim != self.claim or row.status != DeployStatus.IN_PROGRESS:
            return Claim.LOST
        return Claim.CANCEL if row.cancel_requested_at is not None else Claim.HELD

    def check_lock(self) -> str | None:
        with session_scope(self.engine, read_only=True) as session:
            passed = barriers.assert_clear(session, deploys.get_deploy(session, self.deploy_id))
        if passed:
            self._set(forced_past=passed)
        return passed

    def roll_back(self, reason: str, output: Callable[[str], None]) -> str | None:
        with session_scope(self.engine) as session:
            made = rollbacks.roll_back(
                session, deploys.get_deploy(session, self.deploy_id), reason=reason
            )
            if made is None:
                return None
            back, lock = made
            name = back.name
            configs = notifications.environment_notifiers(lock.app, lock.environment)
            notice = locks.notice(lock, "locked", by=rollbacks.ROLLBACK_USER)
        delivery.announce(configs, notice, self.courier, output)
        return name

    def set_workspace(self, path: Path | None) -> None:
        self._set(workspace=None if path is None else str(path))

    def set_process_group(self, pgid: int) -> None:
        self.pgid = pgid
        self._set(runner_pgid=pgid)

    def fleet(self) -> DatabaseFleet:
        return DatabaseFleet(self.engine, self.deploy_id, claim=lambda: self.claim)

    def send_notices(self, output: Callable[[str], None]) -> list[str]:
        return delivery.deliver(self.engine, self.deploy_id, self.courier, output)

    def _set(self, **values: object) -> None:
        with session_scope(self.engine) as session:
            done = session.execute(self._mine(update(Deploy)).values(**values))
            if not done.rowcount:  # type: ignore[attr-defined]
                raise ClaimLost("The deploy's claim was taken from this run")

    def _mine(self, statement: Update) -> Update:
        assert self.claim is not None
        return statement.where(
            Deploy.id == self.deploy_id,
            Deploy.claim == self.claim,
            Deploy.status == DeployStatus.IN_PROGRESS,
        )
