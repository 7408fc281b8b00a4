"""The reconciler: a loop of the control plane that looks, every few seconds, at every claimed,
submitted and running deploy and repairs what a dead process left behind, whether or not
Prefect's scheduler is healthy. Any environment blocked by a lost hand-over, a dead API, a dead
worker or a dead runner moves again within 30 s.

One reconciler acts at a time, under a lease in the Freight database that dies with its holder;
run one beside each API (`python -m freight.execution.reconciler`), the others stand by.

What it repairs:
- a claim with no run (its hand-over failed, or the API died after the claim): submitted again,
  idempotently (one run per claim);
- a run the engine lost, crashed, or cancelled before it started: handed over again under a new
  claim (a few times, then the deploy fails), or cancelled;
- a run taken by a worker (Pending) that never started: given back to the workers;
- a running deploy whose heartbeat went silent: failed as `Runner lost`, its command's group
  stopped (on this host), its checkout removed, its run marked Crashed, its queue moved on;
- a run cancelled in Prefect's UI: the deploy is asked to stop, as a cancel from Freight would;
- an idle queue head: handed over;
- a scheduled flow (maintenance, poll-vcs) whose holder died: its run marked Crashed, which
  frees its one-at-a-time slot.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import undefer

from freight import procs, vcs
from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.execution.handover import HandOver
from freight.execution.ports import Orchestrator, RunState, RunStatus
from freight.execution.side_by_side import side_by_side
from freight.runner import stop_orphaned_group
from freight.service import deploys, leases, workers

log = logging.getLogger(__name__)

LEASE = "reconciler"
# Leases of scheduled flows are named `flow:NAME`; the holder is the flow run's id.
FLOW_LEASES = "flow:"
# Runs lost before they start are replaced this many times, then the deploy fails.
MAX_HAND_OVERS = 3
REPAIRS_AT_ONCE = 8


@dataclass(frozen=True)
class Timing:
    """How long silence is tolerated before the reconciler steps in."""

    lost_after: float  # a running deploy's heartbeat
    submit_after: float  # a claim without a run (its hand-over may still be under way)
    pending_for: float  # a run taken by a worker that has not started
    worker_beat: float  # the interval of workers' beats (a worker silent for a few is lost)


@dataclass(frozen=True)
class Claimed:
    """An in-progress deploy, as the reconciler sees it."""

    deploy_id: int
    name: str
    app_id: int
    environment: str
    claim: str | None
    run_id: str | None
    date_claimed: datetime | None
    heartbeat_at: datetime | None
    date_started: datetime | None
    hand_overs: int
    cancel_requested: bool
    runner_host: str | None
    runner_pid: int | None
    work_queue: str
    waiting_for: str | None


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    pass


@dataclass(frozen=True)
class Submit:
    """Hand the claim over (again)."""


@dataclass(frozen=True)
class Replace:
    """Hand over again under a new claim: the run was lost before it started."""


@dataclass(frozen=True)
class End:
    status: DeployStatus
    reason: str


@dataclass(frozen=True)
class AskToStop:
    """The run was cancelled in the engine's UI: stop the deploy as a cancel would."""


Decision = Wait | Submit | Replace | End | AskToStop


def decide(
    deploy: Claimed,
    run: RunStatus | None,
    *,
    now: datetime,
    timing: Timing,
    watching_since: datetime,
    runner_working: bool,
) -> Decision:
    """What to do about one in-progress deploy. `run` is None when the engine could not be
    asked; `watching_since` is when the reconciler last began to see the database without a
    break (heartbeats are not judged before it has seen them long enough)."""
    if deploy.run_id is None:
        claimed = deploy.date_claimed or now
        return Submit() if now - claimed >= timedelta(seconds=timing.submit_after) else Wait()
    if run is not None and run.state == RunState.CANCELLING and not deploy.cancel_requested:
        return AskToStop()
    signs = [deploy.heartbeat_at, deploy.date_claimed]
    if run is not None and run.state == RunState.RUNNING:
        signs.append(run.since)
    last_sign = max((t for t in signs if t is not None), default=None)
    cutoff = now - timedelta(seconds=timing.lost_after)
    silent = (
        watching_since <= cutoff
        and (last_sign is None or last_sign < cutoff)
        and not runner_working
    )
    if deploy.date_started is None:
        if run is None or run.state in (RunState.SCHEDULED, RunState.PENDING):
            return Wait()  # a worker will take it; one that took it and died is given back
        if run.state == RunState.CANCELLED:
            return End(DeployStatus.CANCELLED, "Cancelled in Prefect before it started")
        if run.state in (RunState.RUNNING, RunState.CANCELLING) and not silent:
            return Wait()  # its runner is about to start it
        # Nothing of the deploy ran: hand it over again rather than fail it.
        if deploy.hand_overs < MAX_HAND_OVERS:
            return Replace()
        return End(
            DeployStatus.FAILED, f"Its run was lost {deploy.hand_overs} times before it started"
        )
    ended = run is not None and run.state in (RunState.ENDED, RunState.CANCELLED, RunState.MISSING)
    if (ended and not runner_working) or silent:
        since = deploy.heartbeat_at.isoformat() if deploy.heartbeat_at else "never"
        return End(DeployStatus.FAILED, f"Runner lost (last heartbeat {since})")
    return Wait()


# -- the loop -------------------------------------------------------------------------------


@dataclass
class Pass:
    """What one pass did, for the log and the tests."""

    submitted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    asked_to_stop: list[str] = field(default_factory=list)
    given_back: list[str] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    crashed_flows: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # "name: why" of deploys no worker takes


class Reconciler:
    def __init__(
        self,
        handover: HandOver,
        *,
        timing: Timing,
        workspace_root: Path,
        grace: float,
        host: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.handover = handover
        self.engine: Engine = handover.engine
        self.orchestrator: Orchestrator = handover.orchestrator
        self.timing = timing
        self.workspace_root = workspace_root
        self.grace = grace
        self.host = host or socket.gethostname()
        self.clock = clock
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Since when this reconciler has seen the database without a break; None after it lost
        # sight of it (runners could not beat either meanwhile).
        self._watching_since: datetime | None = datetime.min.replace(tzinfo=clock().tzinfo)
        self._next_stuck_look = 0.0

    def pass_once(self) -> Pass:
        """One look at everything, and the repairs it calls for."""
        done = Pass()
        if self._watching_since is None:
            self._watching_since = self.clock()
        claimed = self._claimed()
        try:
            runs: Mapping[str, RunStatus] | None = self.orchestrator.run_statuses(
                [c.run_id for c in claimed if c.run_id]
            )
        except Exception as exc:  # the engine is away: judge by heartbeats alone meanwhile
            log.warning("Could not read run states: %s", exc)
            runs = None
        now = self.clock()
        repairs = []
        for deploy in claimed:
            run = None if runs is None or deploy.run_id is None else runs.get(deploy.run_id)
            decision = decide(
                deploy,
                run,
                now=now,
                timing=self.timing,
                watching_since=self._watching_since,
                runner_working=self._working_here(deploy),
            )
            if not isinstance(decision, Wait):
                repairs.append((deploy, run, decision))
        # Side by side: after an outage many environments wait on a repair, and one repair can
        # take seconds (a busy engine, a command's grace period).
        side_by_side(lambda repair: self._apply(*repair, done), repairs, at_once=REPAIRS_AT_ONCE)
        if runs is not None:
            self._note_waiting(claimed, runs, done)
        self._give_back_stuck_runs(done)
        done.moved = self.handover.kick_all()
        self._crash_dead_flows(done)
        return done

    def _claimed(self) -> list[Claimed]:
        with session_scope(self.engine, read_only=True) as session:
            return [
                Claimed(
                    deploy_id=d.id,
                    name=d.name,
                    app_id=d.app_id,
                    environment=d.environment,
                    claim=d.claim,
                    run_id=d.flow_run_id,
                    date_claimed=d.date_claimed,
                    heartbeat_at=d.heartbeat_at,
                    date_started=d.date_started,
                    hand_overs=d.hand_overs,
                    cancel_requested=d.cancel_requested_at is not None,
                    runner_host=d.runner_host,
                    runner_pid=d.runner_pid,
                    work_queue=deploys.work_queue_of(d),
                    waiting_for=d.waiting_for,
                )
                for d in session.scalars(
                    select(Deploy)
                    .where(Deploy.status == DeployStatus.IN_PROGRESS)
                    .options(undefer(Deploy.config))
                )
            ]

    def _working_here(self, deploy: Claimed) -> bool:
        # A runner on this host that is alive and not stopped is not lost, however late its
        # heartbeat: a loaded machine can delay a beat by many seconds.
        return (
            deploy.runner_host == self.host
            and deploy.runner_pid is not None
            and procs.is_working(deploy.runner_pid)
        )

    def _apply(
        self, deploy: Claimed, run: RunStatus | None, decision: Decision, done: Pass
    ) -> None:
        if isinstance(decision, Submit):
            self.handover.resubmit(deploy.deploy_id)
            done.submitted.append(deploy.name)
        elif isinstance(decision, Replace):
            assert deploy.run_id is not None
            self._crash(deploy.run_id, f"Freight: {deploy.name} is handed to a new run")
            self.handover.replace(deploy.deploy_id, deploy.run_id)
            done.replaced.append(deploy.name)
        elif isinstance(decision, AskToStop):
            with session_scope(self.engine) as session:
                row = deploys.get_deploy(session, deploy.deploy_id)
                if row.status == DeployStatus.IN_PROGRESS and row.cancel_requested_at is None:
                    deploys.cancel_deploy(session, row, by="Prefect")
            done.asked_to_stop.append(deploy.name)
        elif isinstance(decision, End) and self._end(deploy, run, decision):
            done.ended.append(deploy.name)

    def _end(self, deploy: Claimed, run: RunStatus | None, decision: End) -> bool:
        """End the deploy in three steps, so that nothing of it overlaps the next deploy: take
        its claim (its runner, should it wake, can do nothing more; the slot stays held), stop
        what it left running here, then record the end, which frees the slot."""
        with session_scope(self.engine) as session:
            session.execute(
                select(Deploy.id).where(Deploy.id == deploy.deploy_id).with_for_update()
            )
            row = deploys.get_deploy(session, deploy.deploy_id)
            session.refresh(row)
            # Decided on an earlier look: the runner may have recorded its outcome since.
            if row.status != DeployStatus.IN_PROGRESS or row.claim != deploy.claim:
                return False
            row.claim = None
            local = row.runner_host == self.host
            pgid = row.runner_pgid if local else None
        if pgid:
            stop_orphaned_group(
                pgid, marker=f"FREIGHT_DEPLOY_ID={deploy.deploy_id}", grace=self.grace
            )
        with session_scope(self.engine) as session:
            row = deploys.get_deploy(session, deploy.deploy_id)
            if decision.status == DeployStatus.CANCELLED:
                row.cancelled_by = "Prefect"
            deploys.mark_ended(session, row, decision.status, decision.reason)
            workspace, row.workspace = row.workspace, None
            repository = row.app.repository.url
        if workspace and (local or deploy.runner_host is None):
            vcs.remove_worktree(vcs.mirror_path(self.workspace_root, repository), Path(workspace))
        if deploy.run_id and (run is None or run.state not in (RunState.ENDED, RunState.CANCELLED)):
            self._crash(deploy.run_id, f"Freight: {decision.reason}")
        self.handover.kick(deploy.app_id, deploy.environment)
        log.warning("%s: %s", deploy.name, decision.reason)
        return True

    def _note_waiting(
        self, claimed: list[Claimed], runs: Mapping[str, RunStatus], done: Pass
    ) -> None:
        """Say on each deploy whose run waits for a worker that none serves its work queue (the
        deploy of an app whose workers are all gone, or that no worker was ever told to serve)."""
        scheduled = {
            c.deploy_id
            for c in claimed
            if c.run_id
            and c.date_started is None
            and runs.get(c.run_id, RunStatus(RunState.MISSING)).state == RunState.SCHEDULED
        }
        queues = {c.work_queue for c in claimed if c.deploy_id in scheduled}
        with session_scope(self.engine, read_only=True) as session:
            unserved = workers.unserved(session, queues, heartbeat_interval=self.timing.worker_beat)
        wanted = [
            (c, unserved.get(c.work_queue) if c.deploy_id in scheduled else None) for c in claimed
        ]
        changed = [(c, why) for c, why in wanted if why != c.waiting_for]
        if not changed:
            return
        with session_scope(self.engine) as session:
            for deploy, why in changed:
                row = deploys.get_deploy(session, deploy.deploy_id)
                if row.status == DeployStatus.IN_PROGRESS:
                    deploys.note_waiting(session, row, why)
                    if why is not None:
                        done.waiting.append(f"{deploy.name}: {why}")

    def _give_back_stuck_runs(self, done: Pass) -> None:
        # A few looks within the time a run may stay taken are enough; each one costs the
        # engine a query.
        if time.monotonic() < self._next_stuck_look:
            return
        self._next_stuck_look = time.monotonic() + self.timing.pending_for / 3
        try:
            stuck = self.orchestrator.stuck_runs(pending_for=self.timing.pending_for)
        except Exception as exc:
            log.warning("Could not look for stuck runs: %s", exc)
            return
        for run_id in stuck:
            try:
                self.orchestrator.give_back(run_id)
            except Exception as exc:
                log.warning("Could not give run %s back to the workers: %s", run_id, exc)
                continue
            done.given_back.append(run_id)

    def _crash_dead_flows(self, done: Pass) -> None:
        with session_scope(self.engine) as session:
            dead = [(lease.name, lease.holder) for lease in leases.expired(session, FLOW_LEASES)]
        if not dead:
            return
        try:
            states = self.orchestrator.run_statuses([holder for _, holder in dead])
        except Exception as exc:
            log.warning("Could not read the states of scheduled flows: %s", exc)
            return
        for name, holder in dead:
            if states[holder].state in (RunState.RUNNING, RunState.PENDING):
                self._crash(holder, f"Freight: the process running {name} is gone")
                done.crashed_flows.append(name)
            with session_scope(self.engine) as session:
                for lease in leases.expired(session, name):
                    if lease.holder == holder:
                        leases.forget(session, lease)

    def _crash(self, run_id: str, message: str) -> None:
        try:
            self.orchestrator.mark_crashed(run_id, message)
        except Exception as exc:  # a run we cannot reach cannot act either: it is fenced
            log.warning("Could not mark run %s crashed: %s", run_id, exc)

    # -- as a process -----------------------------------------------------------------------

    def serve(self, *, interval: float, lease_ttl: float, stop: threading.Event) -> None:
        """Pass every `interval` seconds while holding the lease, until `stop` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                with session_scope(self.engine) as session:
                    leading = leases.take(session, LEASE, self.holder, ttl=lease_ttl)
                if leading:
                    done = self.pass_once()
                    _report(done)
            except Exception as exc:  # the database is away: wait for it, judge nobody
                log.warning("Reconciler pass failed: %s", exc)
                self._watching_since = None
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
        with session_scope(self.engine) as session:
            leases.give_up(session, LEASE, self.holder)


def _report(done: Pass) -> None:
    for name in done.submitted:
        log.info("Handed %s over again (its hand-over was lost)", name)
    for name in done.replaced:
        log.info("Handed %s to a new run (its run was lost before it started)", name)
    for name in done.asked_to_stop:
        log.info("Asked %s to stop (cancelled in Prefect)", name)
    for run_id in done.given_back:
        log.info("Gave run %s back to the workers (taken, never started)", run_id)
    for name in done.crashed_flows:
        log.info("Marked the run of %s crashed (its process is gone)", name)
    for waiting in done.waiting:
        log.warning("Waiting: %s", waiting)
