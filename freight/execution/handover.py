"""The one path from Freight's queue to the engine, and the only caller of its `submit`.

A deploy moves pending → claimed (in progress under a claim token, committed) → submitted (a
run of the engine holds the claim) → running (its runner started it) → ended. Every caller that
wants a deploy to move (the API, webhooks, the dashboard, automatic deploys, a runner that
ended, the reconciler, tests and benchmarks) comes through `HandOver`.

The claim is committed before the engine is called, so no database lock is held during that
network call. A submission that fails leaves the claim in place: the reconciler submits it
again, and the engine's idempotency key (one per claim) makes sure that no claim ever gets two
runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from freight import vcs
from freight.db import Deploy, DeployStatus, session_scope
from freight.execution import intake
from freight.execution.intake import Created, DeployRequest, Screen
from freight.execution.ports import Orchestrator, Submission
from freight.execution.side_by_side import side_by_side
from freight.service import deploys, queue

log = logging.getLogger(__name__)

KICKS_AT_ONCE = 8
# Something that runs a callable later (the API: after its response is sent).
Later = Callable[[Callable[[], object]], None]


class Launcher(Protocol):
    """Starts a run at once on this host instead of waiting for a worker to poll for it."""

    def start(self, run_id: str, work_queue: str) -> bool:
        """True if the run was started here; False leaves it to the workers (among them those
        of other hosts: this host may not serve `work_queue`)."""
        ...


class HandOver:
    def __init__(
        self,
        engine: Engine,
        orchestrator: Orchestrator,
        *,
        workspace_root: Path,
        git: vcs.Access,
        launcher: Launcher | None = None,
    ) -> None:
        self.engine = engine
        self.orchestrator = orchestrator
        self.workspace_root = workspace_root
        # What git may reach while a request waits: the API's is bounded to seconds.
        self.git = git
        self.launcher = launcher

    # -- what clients ask for --------------------------------------------------------------

    def request(
        self,
        request: DeployRequest,
        *,
        screen: Screen | None = None,
        later: Later | None = None,
        also: Callable[[Session, Deploy], None] | None = None,
    ) -> Created:
        """Accept a deploy and move its queue: now, or with `later` (after a response). See
        `intake.create` for `screen` and `also`."""
        created = intake.create(
            self.engine,
            request,
            workspace_root=self.workspace_root,
            git=self.git,
            screen=screen,
            also=also,
        )
        move = functools.partial(self.kick, created.app_id, created.environment)
        if later is None:
            move()
        else:
            later(move)
        return created

    def cancel(self, deploy_id: int, *, by: str) -> None:
        """Cancel a deploy: one that has not started leaves at once (and its queue moves on);
        a running one is asked to stop, and its runner hands the queue on when it has."""
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, deploy_id)
            done = deploys.cancel_deploy(session, deploy, by=by)
            app_id, environment = deploy.app_id, deploy.environment
        if done.run_id is not None:
            self._cancel_run(done.run_id)
        if done.freed:
            self.kick(app_id, environment)

    # -- moving queues ---------------------------------------------------------------------

    def kick(self, app_id: int, environment: str) -> int | None:
        """Claim the head of the app/env's queue if nothing runs there, and hand it over.
        Returns the id of the deploy claimed, if one was."""
        with session_scope(self.engine) as session:
            head = queue.claim_next(session, app_id, environment)
            if head is None:
                return None
            submission = _submission(head)
            registered = head.flow_run_id is not None
        if not registered:  # runs started in the engine hold their deploy already
            self._submit(submission)
        return submission.deploy_id

    def kick_all(self) -> list[int]:
        """Move every queue that waits with nothing running (after an outage, a lost runner)."""
        with session_scope(self.engine, read_only=True) as session:
            idle = queue.idle_queues(session)
        # Side by side: each hand-over waits on the engine for a moment.
        moved = side_by_side(lambda key: self.kick(*key), idle, at_once=KICKS_AT_ONCE)
        return [found for found in moved if found is not None]

    def resubmit(self, deploy_id: int) -> None:
        """Hand a claimed deploy without a run over (again): its hand-over was lost or failed.
        Harmless if the first hand-over is still under way: the claim gets one run."""
        with session_scope(self.engine, read_only=True) as session:
            deploy = deploys.get_deploy(session, deploy_id)
            if deploy.status != DeployStatus.IN_PROGRESS or deploy.flow_run_id is not None:
                return
            submission = _submission(deploy)
        self._submit(submission)

    def replace(self, deploy_id: int, lost_run: str) -> None:
        """Hand over again, under a new claim, a deploy whose run was lost before it started;
        whatever holds the old claim can no longer act for it."""
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, deploy_id)
            if (
                deploy.status != DeployStatus.IN_PROGRESS
                or deploy.date_started is not None
                or deploy.flow_run_id != lost_run
            ):
                return
            queue.reclaim(session, deploy)
            submission = _submission(deploy)
        self._submit(submission)

    # -- the engine ------------------------------------------------------------------------

    def _submit(self, submission: Submission) -> None:
        try:
            run_id = self.orchestrator.submit(submission)
        except Exception as exc:  # the reconciler hands it over again
            log.warning("Could not hand %s to the engine: %s", submission.name, exc)
            return
        with session_scope(self.engine) as session:
            kept = queue.record_run(
                session, submission.deploy_id, claim=submission.claim, run_id=run_id
            )
        if not kept:  # cancelled (or handed over anew) while the run was being made
            self._cancel_run(run_id)
            return
        if self.launcher is not None:
            try:
                self.launcher.start(run_id, submission.work_queue)
            except Exception as exc:  # a worker will start it
                log.warning("Could not start %s here: %s", submission.name, exc)

    def _cancel_run(self, run_id: str) -> None:
        try:
            self.orchestrator.cancel_run(run_id)
        except Exception as exc:  # its runner finds the deploy over when it starts
            log.warning("Could not cancel run %s: %s", run_id, exc)


def _submission(deploy: Deploy) -> Submission:
    assert deploy.claim is not None
    return Submission(
        deploy_id=deploy.id,
        name=deploy.name,
        app=deploy.app.name,
        environment=deploy.environment,
        claim=deploy.claim,
        work_queue=deploys.work_queue_of(deploy),
        idempotency_key=f"freight-{deploy.id}-{deploy.claim}",
    )
