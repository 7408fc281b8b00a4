"""The poll-vcs flow (interval schedule): deploy what changed on auto-deployed branches. One
run at a time works, under a lease that dies with its holder."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from freight import tls, wiring
from freight.execution import autodeploy
from freight.execution.leased import holding
from freight.orchestrator import PrefectOrchestrator
from freight.settings import get_settings, secret_source
from freight.telemetry import report_errors


@flow(name="poll-vcs", persist_result=False)
def poll_vcs() -> None:
    settings = get_settings()
    report_errors(settings, "poll-vcs")
    logger = get_run_logger()
    with (
        PrefectOrchestrator.within_run(settings.deploy_deployment) as orchestrator,
        tls.client(timeout=settings.notify_timeout) as client,
    ):
        handover = wiring.hand_over(settings, orchestrator)
        lease = holding(
            handover.engine, "flow:poll-vcs", str(flow_run.id), ttl=settings.reconciler_lease
        )
        with lease as mine:
            if not mine:
                logger.info("Another poll-vcs run is at work; this one has nothing to do")
                return
            outcomes = autodeploy.poll(
                handover,
                autodeploy.PollContext(
                    client=client, urls=settings.service_urls(), secrets_from=secret_source()
                ),
            )
    for found in outcomes:
        logger.info("%s/%s %s: %s", found.app, found.environment, found.state, found.reason)


if __name__ == "__main__":
    poll_vcs()
