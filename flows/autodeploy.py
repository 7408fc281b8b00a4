"""The poll-vcs flow (interval schedule): deploy what changed on auto-deployed branches."""

from __future__ import annotations

import os

import httpx
from prefect import flow, get_run_logger

from freight.db import get_engine
from freight.orchestrator import PrefectOrchestrator
from freight.service import autodeploy
from freight.settings import get_settings
from freight.telemetry import report_errors


@flow(name="poll-vcs", persist_result=False)
def poll_vcs() -> None:
    settings = get_settings()
    report_errors(settings, "poll-vcs")
    logger = get_run_logger()
    with (
        PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
        httpx.Client(timeout=settings.notify_timeout) as client,
    ):
        outcomes = autodeploy.poll(
            get_engine(settings.database_url),
            orchestrator,
            autodeploy.PollContext(
                workspace_root=settings.workspaces,
                client=client,
                urls=settings.service_urls(),
                secrets_from=os.environ,
            ),
        )
    for outcome in outcomes:
        logger.info("%s/%s %s: %s", outcome.app, outcome.environment, outcome.state, outcome.reason)


if __name__ == "__main__":
    poll_vcs()
