"""One deploy's run inside the process that executes it (a Prefect flow run): waiting for its
turn, starting, recording how it ended and handing the queue on. The steps in between are
freight/execution/steps.py; their order is the deploy flow's (flows/deploy.py).

The run holds the deploy's claim (given with the run, or taken over when a deploy that
registered itself gets its turn). Everything it writes is fenced by that claim; when the claim
is lost, or when it finds it was stopped longer than the reap time, it kills its command's
process group at once and writes nothing more.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType

from sqlalchemy import select

from freight import system_users, tls
from freight.catalogue import EnvironmentConfig
from freight.commands import inherited_env
from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.errors import ClaimLost, InvalidRequest
from freight.execution import delivery, outcomes
from freight.execution.context import Limits, RunContext
from freight.execution.handover import HandOver
from freight.execution.logwriter import DeployOutput, LogWriter
from freight.execution.monitor import Monitor, Watch
from freight.execution.ports import Orchestrator
from freight.execution.record import RunRecord
from freight.service import deploys, logs, notifications, queue, releases, steps
from freight.service.steps import StepState
from freight.settings import Settings, secret_source


class DeployRun:
    """Use as a context manager around the steps; see flows/deploy.py."""

    def __init__(
        self,
        settings: Settings,
        handover: HandOver,
        deploy_id: int,
        *,
        run_id: str,
        claim: str | None,
        echo: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.settings = settings
        self.handover = handover
        self.orchestrator: Orchestrator = handover.orchestrator
        self.engine = handover.engine
        self.deploy_id = deploy_id
        self.run_id = run_id
        self._echo = echo
        self.http = tls.client(timeout=settings.notify_timeout)
        self.record = RunRecord(
            self.engine,
            deploy_id,
            claim=claim,
            courier=delivery.courier(settings, self.http),
        )
        self._writer = LogWriter(
            self.engine,
            deploy_id,
            flush_interval=settings.log_flush_interval,
            claim=lambda: self.record.claim,
            on_error=lambda exc: echo(f"Could not write log chunk: {exc}"),
            on_fenced=lambda: self._lost("its claim was taken (the deploy was reaped)"),
            also=echo,
        )
        self.output = DeployOutput(self._writer, settings.secret_values())
        self._monitor: Monitor | None = None
        self.started = False  # it got its turn and began (some deploys end while queued)
        self.error: BaseException | None = None
        self.status: DeployStatus | None = None
        # Why it ended as it did (a failure's or a refusal's reason), for the engine's state.
        self.reason: str | None = None
        self.lost: str | None = None  # why the run stopped acting for the deploy
        self._lost_lock = threading.Lock()
        with session_scope(self.engine, read_only=True) as session:
            deploy = deploys.get_deploy(session, deploy_id)
            if deploy.flow_run_id not in (None, run_id) and claim is None:
                raise InvalidRequest(f"Deploy {deploy.name} belongs to run {deploy.flow_run_id}")
            self.context = self._context(deploy)
            self._queue = (deploy.app_id, deploy.environment)
        self.name = self.context.name

    def _context(self, deploy: Deploy) -> RunContext:
        settings = self.settings
        return RunContext(
            deploy_id=deploy.id,
            name=deploy.name,
            app=deploy.app.name,
            environment=deploy.environment,
            number=deploy.number,
            ref=deploy.ref,
            sha=deploy.sha or "",
            prev_sha=deploy.prev_sha,
            user=deploy.user.name if deploy.user else "",
            params=dict(deploy.params or {}),
            force=deploy.force,
            force_reason=deploy.force_reason,
            repository=deploy.app.repository.url,
            config=EnvironmentConfig.model_validate(deploy.config),
            workspace_root=settings.workspaces,
            workspace=settings.workspaces / "checkouts" / str(deploy.id),
            run_as=system_users.run_as(settings.run_as),
            exposed=system_users.exposed(settings.run_as),
            git=settings.git_access(),
            limits=Limits(
                deploy_timeout=settings.deploy_timeout,
                read_timeout=settings.read_timeout,
                cancel_grace=settings.cancel_grace,
                check_timeout=settings.check_timeout,
            ),
            urls=settings.service_urls(),
            secrets=secret_source(),
            base_env=inherited_env(),
            output=self.output,
            record=self.record,
            http=self.http,
            courier=self.record.courier,
        )

    # -- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> DeployRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        self._writer.close()
        self.http.close()

    # -- before the steps -------------------------------------------------------------------

    def wait_for_turn(self, announce: Callable[[], object] = lambda: None) -> bool:
        """Wait until this run holds the deploy's claim; False if the deploy ended meanwhile
        (cancelled while queued) or its claim went to another run. `announce` runs once if
        another deploy is ahead (to tell the notifiers it is queued)."""
        announced: str | None = None
        while True:
            with session_scope(self.engine, read_only=True) as session:
                deploy = deploys.get_deploy(session, self.deploy_id)
                if deploy.status == DeployStatus.IN_PROGRESS:
                    return self._adopt(deploy)
                if deploy.status != DeployStatus.PENDING:
                    return False
                app_id, environment = deploy.app_id, deploy.environment
                blocker = queue.running(session, app_id, environment)
                ahead = blocker.name if blocker else None
            if ahead is None:
                # The slot is free: move the queue (to us, if we are its head).
                self.handover.kick(app_id, environment)
                continue
            if ahead != announced:
                self.output(f">> Waiting for {ahead} to finish")
                if announced is None:
                    announce()
                announced = ahead
            time.sleep(self.settings.queue_poll_interval)

    def _adopt(self, deploy: Deploy) -> bool:
        if self.record.claim is None and deploy.flow_run_id == self.run_id:
            self.record.claim = deploy.claim  # a run that registered itself got its turn
        return deploy.claim is not None and deploy.claim == self.record.claim

    def start(self) -> bool:
        """Begin, holding the claim; False if the deploy was cancelled or taken meanwhile."""
        with session_scope(self.engine) as session:
            session.execute(select(Deploy.id).where(Deploy.id == self.deploy_id).with_for_update())
            deploy = deploys.get_deploy(session, self.deploy_id)
            session.refresh(deploy)
            if (
                deploy.status != DeployStatus.IN_PROGRESS
                or deploy.claim != self.record.claim
                # Another process of the same run began it (a run started twice by the engine).
                or deploy.date_started is not None
            ):
                return False
            deploy.date_started = deploy.heartbeat_at = utcnow()
            deploy.runner_host, deploy.runner_pid = self.settings.host_name, os.getpid()
            deploy.waiting_for = None  # a worker took it
            # What is live now, not when the deploy was queued: that is what it replaces.
            deploy.prev_sha = releases.current_sha(session, deploy.app_id, deploy.environment)
            deploy.flow_run_id = self.run_id
            notifications.enqueue(session, deploy, "started")
            user = deploy.user.name if deploy.user else "unknown"
            line = f">> Deploying {deploy.name}: {deploy.ref} ({deploy.sha}) by {user}"
            self.context = dataclasses.replace(self.context, prev_sha=deploy.prev_sha)
        self.started = True
        self._monitor = Monitor(
            Watch(
                look=self.record.look,
                on_cancel=self.context.cancel.set,
                on_lost=self._lost,
                on_error=lambda exc: self._echo(f"Heartbeat failed: {exc}"),
            ),
            poll_interval=self.settings.queue_poll_interval,
            heartbeat_interval=self.settings.heartbeat_interval,
            lost_after=self.settings.runner_lost_after,
        ).start()
        self.output(line)
        return True

    # -- the steps --------------------------------------------------------------------------

    def steps(self) -> _Steps:
        """`with run.steps():` around the steps keeps what stopped them for the outcome."""
        return _Steps(self)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record one step's state and times around it, for the deploy page."""
        self._record_step(steps.began, name)
        try:
            yield
        except BaseException:
            cancelled = self.context.cancel.is_set()
            self._record_step(
                steps.ended, name, StepState.CANCELLED if cancelled else StepState.FAILED
            )
            raise
        self._record_step(steps.ended, name, StepState.COMPLETED)

    def _record_step(self, write: Callable[..., None], name: str, *state: StepState) -> None:
        try:
            with session_scope(self.engine) as session:
                write(session, self.deploy_id, name, *state, claim=self.record.claim)
        except Exception as exc:  # the record is for people: the deploy goes on without it
            self._echo(f"Could not record step {name}: {type(exc).__name__}: {exc}")

    def _lost(self, why: str) -> None:
        """Stop acting for the deploy: kill the command's group, cancel the steps."""
        with self._lost_lock:
            if self.lost is not None:
                return
            self.lost = why
        if self.record.pgid is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.record.pgid, signal.SIGKILL)
        self.context.cancel.set()
        self._echo(f"Stopped: {why}")

    # -- after the steps --------------------------------------------------------------------

    def finish(self) -> DeployStatus | None:
        """Record how the deploy ended and hand the queue on. None if the deploy is not this
        run's to record (its claim went to another run)."""
        if self._monitor is not None:
            self._monitor.stop()
        with suppress(Exception):  # the final line must come after all the command printed
            self._writer.flush()
        self.status = self._record_outcome()
        if self.status is not None:
            self.handover.kick(*self._queue)
        return self.status

    def _record_outcome(self) -> DeployStatus | None:
        with session_scope(self.engine) as session:
            session.execute(select(Deploy.id).where(Deploy.id == self.deploy_id).with_for_update())
            deploy = deploys.get_deploy(session, self.deploy_id)
            session.refresh(deploy)
            mine = deploy.claim == self.record.claim and (
                # Queued, it is the run's that registered it (started in the engine).
                self.record.claim is not None or deploy.flow_run_id == self.run_id
            )
            if not mine:
                return None
            if DeployStatus(deploy.status).is_final:  # ended while queued, or before it started
                self.reason = deploy.reason
                return DeployStatus(deploy.status)
            if deploy.status == DeployStatus.IN_PROGRESS and not self.started:
                return None  # another process of this run began it
            if self.lost is not None:  # stopped after a pause, its claim still held
                outcome = outcomes.Outcome(DeployStatus.FAILED, f"Runner lost: {self.lost}")
            else:
                by = (deploy.cancelled_by or "Prefect") if self.context.cancel.is_set() else None
                outcome = outcomes.outcome_of(self.error, cancelled_by=by)
            if outcome.cancelled_by is not None:
                deploy.cancelled_by = outcome.cancelled_by
            deploys.mark_ended(
                session, deploy, outcome.status, outcome.reason, announce=not outcome.told
            )
            self.reason = outcome.reason
            line = f">> Deploy {outcome.status} after {deploy.duration or 0.0:.1f}s"
            logs.append(session, deploy, line)
        self._echo(line)
        return outcome.status

    def keep_release_notes(self) -> None:
        """Leave the deploy's release notes with the engine (a deploy that ran has some)."""
        if not self.started:
            return
        try:
            with session_scope(self.engine, read_only=True) as session:
                deploy = deploys.get_deploy(session, self.deploy_id)
                notes = releases.release_notes(
                    session, deploy, workspace_root=self.settings.workspaces
                )
            self.orchestrator.record_release(notes)
        except Exception as exc:  # the record is for people; the deploy is done either way
            self._echo(f"Could not record the release: {type(exc).__name__}: {exc}")

    def reraise_signal(self) -> None:
        """A signal that stopped the steps (the engine cancelling) goes on once all is done."""
        if self.error is not None and not isinstance(self.error, Exception):
            raise self.error


class _Steps:
    def __init__(self, run: DeployRun) -> None:
        self.run = run

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is not None:
            self.run.error = exc
        if isinstance(exc, ClaimLost) and self.run.lost is None:
            self.run._lost(exc.message)
        return True  # kept for the outcome; signals are raised again by reraise_signal
