"""Running one deploy, step by step, inside whatever process executes it (a Prefect flow run).

Each public method of `DeployRun` is one step of the deploy flow; the flow only sequences them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
from sqlalchemy import Engine

from freight import providers, secrets, vcs
from freight.catalogue import EnvironmentConfig
from freight.checks import CheckContext
from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.errors import (
    AppLocked,
    CommandFailed,
    DeployCancelled,
    DeployTimeout,
    FreightError,
    InvalidRequest,
)
from freight.providers import DeployContext, ProviderRuntime
from freight.runner import Masker
from freight.service import deploys, gating, locks, logs, notifications, queue, releases
from freight.service.orchestration import Orchestrator
from freight.settings import Settings

# Environment variables a deploy command inherits from the worker; the rest is not its business.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "SSH_AUTH_SOCK", "TMPDIR")


def register(
    engine: Engine,
    settings: Settings,
    *,
    app: str,
    environment: str,
    ref: str | None,
    user: str,
    params: Mapping[str, str] | None,
    force: bool,
    run_id: str,
    reason: str | None = None,
) -> int:
    """Record a deploy started from the orchestrator's side (a Prefect UI run, a schedule).
    Forcing past someone else's lock needs a `reason` here too; the run refuses it without."""
    with session_scope(engine) as session:
        deploy = deploys.create_deploy(
            session,
            app=app,
            environment=environment,
            ref=ref,
            user=user,
            params=params,
            force=force,
            force_reason=reason,
            workspace_root=settings.workspaces,
            flow_run_id=run_id,
        )
        return deploy.id


class DeployRun:
    """One deploy being executed: its log, heartbeat, cancel flag and the steps of the flow."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        deploy_id: int,
        *,
        run_id: str,
        echo: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.deploy_id = deploy_id
        self.run_id = run_id
        self._echo = echo
        self._mask = Masker(settings.secret_values())
        self._cancel = threading.Event()
        self.started = False  # it got its turn and began (some deploys end while queued)
        self._stop = threading.Event()
        self._writer: logs.LogWriter | None = None
        self._monitor: threading.Thread | None = None
        # For checks and notifiers; open while the run is.
        self.http = httpx.Client(timeout=settings.notify_timeout)
        with session_scope(engine) as session:
            deploy = deploys.get_deploy(session, deploy_id)
            if deploy.flow_run_id not in (None, run_id):
                raise InvalidRequest(f"Deploy {deploy.name} belongs to run {deploy.flow_run_id}")
            self.name = deploy.name
            self.app = deploy.app.name
            self.environment = deploy.environment
            self.config = EnvironmentConfig.model_validate(deploy.config)

    # -- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> DeployRun:
        with session_scope(self.engine) as session:
            deploy = session.get_one(Deploy, self.deploy_id)
            deploy.runner_host, deploy.runner_pid = socket.gethostname(), os.getpid()
        self._writer = logs.LogWriter(
            self.engine,
            self.deploy_id,
            flush_interval=self.settings.log_flush_interval,
            on_error=lambda exc: self._echo(f"Could not write log chunk: {exc}"),
            also=self._echo,
        )
        self._monitor = threading.Thread(
            target=self._watch, name=f"monitor-{self.deploy_id}", daemon=True
        )
        self._monitor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._monitor:
            self._monitor.join()
        if self._writer:
            self._writer.close()
        self.http.close()

    def output(self, line: str) -> None:
        line = self._mask(line)
        if self._writer:
            self._writer.write(line)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _watch(self) -> None:
        """Beat the heartbeat and notice cancel requests made from elsewhere (API, CLI)."""
        last_beat = 0.0
        wait = 0.0  # the first beat at once: the reaper counts silence from the claim until then
        while not self._stop.wait(wait):
            wait = self.settings.queue_poll_interval
            now = utcnow()
            try:
                with session_scope(self.engine, read_only=True) as session:
                    deploy = session.get_one(Deploy, self.deploy_id)
                    if (
                        deploy.cancel_requested_at is not None
                        or deploy.status == DeployStatus.CANCELLED
                    ):
                        self._cancel.set()
                if now.timestamp() - last_beat >= self.settings.heartbeat_interval:
                    with session_scope(self.engine) as session:
                        session.get_one(Deploy, self.deploy_id).heartbeat_at = now
                    last_beat = now.timestamp()
            except Exception as exc:  # a database hiccup must not kill the watcher
                self._echo(f"Heartbeat failed: {exc}")

    # -- steps ------------------------------------------------------------------------------

    def wait_for_turn(
        self, orchestrator: Orchestrator, on_wait: Callable[[], object] = lambda: None
    ) -> bool:
        """Wait until this deploy holds its app/env; False if it was cancelled while queued.

        `on_wait` runs once if another deploy is ahead (to announce the queued deploy).
        """
        announced: str | None = None
        while True:
            with session_scope(self.engine, read_only=True) as session:
                deploy = deploys.get_deploy(session, self.deploy_id)
                if deploy.status == DeployStatus.IN_PROGRESS:
                    return True
                if deploy.status != DeployStatus.PENDING:
                    return False
                app_id, environment = deploy.app_id, deploy.environment
                blocker = queue.running(session, app_id, environment)
                ahead = blocker.name if blocker else None
            if ahead is None:
                # The slot is free: take part in handing it over (to us, if we are the head).
                with session_scope(self.engine) as session:
                    claimed = queue.advance(session, orchestrator, app_id, environment)
                    if claimed is not None and claimed.id == self.deploy_id:
                        return True
            if ahead and ahead != announced:
                self.output(f">> Waiting for {ahead} to finish")
                if announced is None:
                    on_wait()
                announced = ahead
            time.sleep(self.settings.queue_poll_interval)

    def start(self) -> None:
        self.started = True
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, self.deploy_id)
            deploy.date_started = utcnow()
            # What is live now, not when the deploy was queued: that is what it replaces.
            deploy.prev_sha = releases.current_sha(session, deploy.app_id, deploy.environment)
            deploy.flow_run_id = self.run_id
            notifications.enqueue(session, deploy, "started")
            user = deploy.user.name if deploy.user else "unknown"
            line = f">> Deploying {deploy.name}: {deploy.ref} ({deploy.sha}) by {user}"
        self.output(line)

    def check_lock(self) -> None:
        self._raise_if_cancelled()
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, self.deploy_id)
            overridden = locks.assert_unlocked(session, deploy)
            why = deploy.force_reason
        if overridden:
            self.output(f">> Forced past the lock ({overridden}): {why}")

    def run_checks(self) -> None:
        self._raise_if_cancelled()
        deploy = self._snapshot()
        if deploy.force and self.config.checks:
            self.output(">> Checks skipped: deploy forced")
            return
        configs, found = secrets.resolve_all(self.config.checks, os.environ)
        self._mask = self._mask.adding(found)
        gating.wait_for_checks(
            configs,
            CheckContext(
                app=self.app,
                environment=self.environment,
                sha=deploy.sha or "",
                output=self.output,
                client=self.http,
                urls=self.settings.service_urls(),
                repository=deploy.app.repository.url,
            ),
            timeout=self.settings.check_timeout,
            wait=self._cancel.wait,
        )

    def prepare_workspace(self) -> Path:
        self._raise_if_cancelled()
        deploy = self._snapshot()
        dest = self.settings.workspaces / "checkouts" / f"{self.deploy_id}"
        with session_scope(self.engine) as session:
            session.get_one(Deploy, self.deploy_id).workspace = str(dest)
        mirror = vcs.mirror_with(
            self.settings.workspaces, deploy.app.repository.url, deploy.sha or ""
        )
        vcs.add_worktree(mirror, deploy.sha or "", dest)
        self.output(f">> Checked out {deploy.sha} into {dest}")
        return dest

    def run_provider(self) -> None:
        self._raise_if_cancelled()
        deploy = self._snapshot()
        config, secret_values = secrets.resolve_config(self.config.provider, os.environ)
        self._mask = self._mask.adding(secret_values)
        assert deploy.workspace and deploy.sha
        context = DeployContext(
            deploy_id=deploy.id,
            app=self.app,
            environment=self.environment,
            number=deploy.number,
            ref=deploy.ref,
            sha=deploy.sha,
            prev_sha=deploy.prev_sha,
            user=deploy.user.name if deploy.user else "",
            workspace=Path(deploy.workspace),
            params=deploy.params,
        )
        runtime = ProviderRuntime(
            output=self.output,
            should_cancel=self._cancel.is_set,
            timeout=self.settings.deploy_timeout,
            read_timeout=self.settings.read_timeout,
            grace=self.settings.cancel_grace,
            base_env={k: os.environ[k] for k in INHERITED_ENV if k in os.environ},
            on_start=self._record_process_group,
            client=self.http,
            urls=self.settings.service_urls(),
        )
        providers.registry.get(config.type).run(config, context, runtime)

    def _record_process_group(self, pgid: int) -> None:
        with session_scope(self.engine) as session:
            deploy = session.get_one(Deploy, self.deploy_id)
            deploy.runner_pgid = pgid

    def cleanup_workspace(self) -> None:
        with session_scope(self.engine) as session:
            deploy = session.get_one(Deploy, self.deploy_id)
            workspace, deploy.workspace = deploy.workspace, None
            url = deploy.app.repository.url
        if workspace:
            vcs.remove_worktree(vcs.mirror_path(self.settings.workspaces, url), Path(workspace))
            self.output(">> Workspace removed")

    def finish(self, error: BaseException | None) -> DeployStatus:
        """Record the outcome: finished, cancelled, or failed with the error as the reason."""
        self._flush()
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, self.deploy_id)
            if DeployStatus(deploy.status).is_final:
                return DeployStatus(deploy.status)
            if error is None:
                status, reason = DeployStatus.FINISHED, None
            elif self.cancelled or not isinstance(error, Exception):
                # A signal to the runner (KeyboardInterrupt, Prefect's TerminationSignal) is how
                # the orchestrator cancels; the command was already stopped on the way out.
                deploy.cancelled_by = by = deploy.cancelled_by or "Prefect"
                status, reason = DeployStatus.CANCELLED, f"Cancelled by {by}"
            elif isinstance(error, AppLocked):
                # A lock taken while it waited: it never ran, so it did not fail.
                deploy.cancelled_by = locks.REFUSED
                status, reason = DeployStatus.CANCELLED, f"Not run: {error.message}"
            elif isinstance(error, FreightError):
                status, reason = DeployStatus.FAILED, error.message
            else:
                status, reason = (
                    DeployStatus.FAILED,
                    f"Internal error: {type(error).__name__}: {error}",
                )
            # The runner has already logged why the command failed or was stopped.
            told = isinstance(error, CommandFailed | DeployTimeout)
            deploys.mark_ended(session, deploy, status, reason, announce=not told)
            duration = deploy.duration or 0.0
        self.output(f">> Deploy {status} after {duration:.1f}s")
        return status

    def notify(self) -> list[str]:
        return notifications.deliver(
            self.engine,
            self.deploy_id,
            client=self.http,
            urls=self.settings.service_urls(),
            workspace_root=self.settings.workspaces,
            public_url=self.settings.public_url,
            output=self.output,
            retry_delays=self.settings.notify_retry_delays,
            secrets_from=os.environ,
        )

    def release_notes(self) -> releases.ReleaseNotes:
        with session_scope(self.engine, read_only=True) as session:
            deploy = deploys.get_deploy(session, self.deploy_id)
            return releases.release_notes(session, deploy, workspace_root=self.settings.workspaces)

    def hand_over(self, orchestrator: Orchestrator) -> None:
        """Start the next deploy of this app/env, now that this one is over."""
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, self.deploy_id)
            queue.advance(session, orchestrator, deploy.app_id, deploy.environment)

    # -- helpers ----------------------------------------------------------------------------

    def _snapshot(self) -> Deploy:
        with session_scope(self.engine, read_only=True) as session:
            return deploys.get_deploy(session, self.deploy_id)

    def _flush(self) -> None:
        # The final status line must come after everything the command printed.
        if self._writer:
            self._writer.flush()

    def _raise_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise DeployCancelled("Deploy cancelled")


def _record_release(run: DeployRun, orchestrator: Orchestrator) -> None:
    try:
        orchestrator.record_release(run.release_notes())
    except Exception as exc:  # the record is for people; the deploy is done either way
        run.output(f">> Could not record the release: {type(exc).__name__}: {exc}")


Step = Callable[[DeployRun], object]


@dataclass(frozen=True)
class Steps:
    """The six steps of a deploy; the flow passes its Prefect tasks, tests the plain methods."""

    check_lock: Step = DeployRun.check_lock
    check_github_status: Step = DeployRun.run_checks
    prepare_workspace: Step = DeployRun.prepare_workspace
    run_provider: Step = DeployRun.run_provider
    cleanup_workspace: Step = DeployRun.cleanup_workspace
    notify: Step = DeployRun.notify


def execute(run: DeployRun, orchestrator: Orchestrator, steps: Steps | None = None) -> DeployStatus:
    """The deploy lifecycle: wait for the slot, run the steps, always clean up, record the
    outcome, hand the slot on, notify. A signal (the orchestrator cancelling) is re-raised
    once all of that is done."""
    steps = steps or Steps()
    error: BaseException | None = None
    with run:
        try:
            if run.wait_for_turn(orchestrator, on_wait=lambda: steps.notify(run)):
                run.start()
                steps.notify(run)
                try:
                    steps.check_lock(run)
                    steps.check_github_status(run)
                    steps.prepare_workspace(run)
                    steps.run_provider(run)
                finally:
                    steps.cleanup_workspace(run)
        except BaseException as exc:  # signals too: the record and the queue come first
            error = exc
        status = run.finish(error)
        try:
            run.hand_over(orchestrator)
        finally:
            steps.notify(run)
            if run.started:
                _record_release(run, orchestrator)
    if error is not None and not isinstance(error, Exception):
        raise error
    return status
