"""The deploy flow: one Freight deploy as a Prefect flow run named APP/ENV#N.

Started by Freight with `deploy_id` when the deploy reaches the head of its queue, or from Prefect
(Run button, `prefect deployment run deploy/deploy --param app=demo --param env=staging`, a
schedule) with `app`/`env`, in which case it registers a Freight deploy and waits for its turn.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed, State

from freight.db import DeployStatus, get_engine
from freight.orchestrator import PrefectOrchestrator
from freight.service import runs
from freight.service.runs import DeployRun
from freight.settings import get_settings
from freight.telemetry import report_errors

step = task(cache_policy=NONE, persist_result=False)


@step(name="check-lock")
def check_lock(run: DeployRun) -> None:
    run.check_lock()


@step(name="check-github-status")
def check_github_status(run: DeployRun) -> None:
    run.run_checks()


@step(name="prepare-workspace")
def prepare_workspace(run: DeployRun) -> None:
    run.prepare_workspace()


@step(name="run-provider")
def run_provider(run: DeployRun) -> None:
    run.run_provider()


@step(name="cleanup-workspace")
def cleanup_workspace(run: DeployRun) -> None:
    run.cleanup_workspace()


@step(name="notify")
def notify(run: DeployRun) -> None:
    run.notify()


STEPS = runs.Steps(
    check_lock=check_lock,
    check_github_status=check_github_status,
    prepare_workspace=prepare_workspace,
    run_provider=run_provider,
    cleanup_workspace=cleanup_workspace,
    notify=notify,
)


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
) -> State:
    settings = get_settings()
    report_errors(settings, "deploy")
    engine = get_engine(settings.database_url)
    run_id = str(flow_run.id)
    logger = get_run_logger()
    with PrefectOrchestrator(settings.deploy_deployment) as orchestrator:
        started_in_prefect = deploy_id is None
        if deploy_id is None:
            if not app:
                return Failed(message="Give the app to deploy (parameter 'app') or a deploy_id")
            deploy_id = runs.register(
                engine,
                settings,
                app=app,
                environment=env,
                ref=ref,
                user=user,
                params=params,
                force=force,
                reason=reason,
                run_id=run_id,
            )
        run = DeployRun(engine, settings, deploy_id, run_id=run_id, echo=logger.info)
        if started_in_prefect:  # runs Freight hands over are named and tagged at creation
            orchestrator.label_run(run_id, name=run.name, app=run.app, environment=run.environment)
        status = runs.execute(run, orchestrator, STEPS)
    message = f"{run.name} {status}"
    if status == DeployStatus.FINISHED:
        return Completed(message=message)
    if status == DeployStatus.CANCELLED:
        return Cancelled(message=message)
    return Failed(message=message)


if __name__ == "__main__":
    deploy(app="demo", env="staging")
