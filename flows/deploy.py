"""The deploy flow: one Freight deploy as a Prefect flow run named APP/ENV#N.

Started by Freight with `deploy_id` and `claim` when the deploy reaches the head of its queue,
or from Prefect (Run button, `prefect deployment run deploy/deploy --param app=demo --param
env=staging`, a schedule) with `app`/`env`, in which case it registers a Freight deploy and
waits for its turn. The body below is the deploy, step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed, State

from freight import wiring
from freight.db import DeployStatus
from freight.execution import steps
from freight.execution.context import RunContext
from freight.execution.intake import DeployRequest, create
from freight.execution.run import DeployRun
from freight.orchestrator import PrefectOrchestrator
from freight.service.steps import ORDER
from freight.settings import get_settings
from freight.telemetry import report_errors

task_of = task(cache_policy=NONE, persist_result=False)

Step = Callable[[RunContext], object]


@dataclass(frozen=True)
class Steps:
    """The seven steps, as Prefect tasks (`TASKS`) or as the plain functions (`PLAIN`, for tests
    that run deploys without a Prefect server)."""

    check_lock: Step
    check_github_status: Step
    prepare_workspace: Step
    run_provider: Step
    verify: Step
    cleanup_workspace: Step
    notify: Step


PLAIN = Steps(
    steps.check_lock,
    steps.check_github_status,
    steps.prepare_workspace,
    steps.run_provider,
    steps.verify,
    steps.cleanup_workspace,
    steps.notify,
)
# Each task is named as the deploy page lists it.
TASKS = Steps(*(task_of(step, name=name) for step, name in zip(astuple(PLAIN), ORDER, strict=True)))


def run_deploy(run: DeployRun, do: Steps) -> DeployStatus | None:
    """The deploy, in order: wait for its turn, the steps, the outcome, the notices."""
    with run.steps():  # what stops them (a failure, a cancel, a signal) decides the outcome
        if run.wait_for_turn(announce=lambda: do.notify(run.context)) and run.start():
            ctx = run.context
            do.notify(ctx)  # that it started; the step "notify" is the notices at the end
            with run.step("check-lock"):
                do.check_lock(ctx)
            with run.step("check-github-status"):
                do.check_github_status(ctx)
            with run.step("prepare-workspace"):
                do.prepare_workspace(ctx)
            try:
                with run.step("run-provider"):
                    do.run_provider(ctx)
                if ctx.config.verify is not None:
                    with run.step("verify"):
                        do.verify(ctx)
            finally:
                with run.step("cleanup-workspace"):
                    do.cleanup_workspace(ctx)
    with run.step("notify"):  # begun before the outcome is recorded: a page waits for it
        status = run.finish()
        if status is not None:
            do.notify(run.context)
    if status is not None:
        run.keep_release_notes()
    return status


@flow(name="deploy", persist_result=False)
def deploy(
    app: str | None = None,
    env: str = "production",
    ref: str | None = None,
    user: str = "prefect",
    force: bool = False,
    reason: str | None = None,
    params: dict[str, str] | None = None,
    deploy_id: int | None = None,
    claim: str | None = None,
) -> State:
    settings = get_settings()
    report_errors(settings, "deploy")
    run_id = str(flow_run.id)
    with PrefectOrchestrator.within_run(settings.deploy_deployment) as orchestrator:
        handover = wiring.hand_over(settings, orchestrator)
        if deploy_id is None:  # started in Prefect: the deploy is registered by its own run
            if not app:
                return Failed(message="Give the app to deploy (parameter 'app') or a deploy_id")
            request = DeployRequest(
                app=app,
                environment=env,
                user=user,
                ref=ref,
                params=params,
                force=force,
                reason=reason,
                run_id=run_id,
            )
            deploy_id = create(
                handover.engine, request, workspace_root=settings.workspaces, git=handover.git
            ).deploy_id
        with DeployRun(
            settings, handover, deploy_id, run_id=run_id, claim=claim, echo=get_run_logger().info
        ) as run:
            if claim is None:  # runs Freight hands over are named and tagged when made
                orchestrator.label_run(
                    run_id, name=run.name, app=run.context.app, environment=run.context.environment
                )
            status = run_deploy(run, TASKS)
        run.reraise_signal()
    return _state(run.name, status, run.reason)


def _state(name: str, status: DeployStatus | None, reason: str | None) -> State:
    """The run's state, its message saying why where Freight knows (the Prefect UI shows it)."""
    if status is None:
        return Cancelled(message=f"{name} was handed to another run")
    message = f"{name} {status}: {reason}" if reason else f"{name} {status}"
    if status == DeployStatus.FINISHED:
        return Completed(message=message)
    if status == DeployStatus.CANCELLED:
        return Cancelled(message=message)
    return Failed(message=message)


if __name__ == "__main__":
    deploy(app="demo", env="staging")
