"""The maintenance flow (interval schedule): reap lost runs, remove stray checkouts."""

from __future__ import annotations

import httpx
from prefect import flow, get_run_logger

from freight.db import get_engine
from freight.orchestrator import PrefectOrchestrator
from freight.service import maintenance as housekeeping
from freight.settings import get_settings
from freight.telemetry import report_errors


@flow(name="maintenance", persist_result=False)
def maintenance() -> None:
    settings = get_settings()
    report_errors(settings, "maintenance")
    logger = get_run_logger()
    with (
        PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
        httpx.Client(timeout=settings.notify_timeout) as client,
    ):
        report = housekeeping.run_maintenance(
            get_engine(settings.database_url),
            orchestrator,
            settings,
            client=client,
            output=logger.info,
        )
    for name in report.reaped:
        logger.warning("Runner of %s lost: deploy failed, run marked Crashed", name)
    for path in report.removed_workspaces:
        logger.info("Removed stray checkout %s", path)
    for name in report.handed_over:
        logger.info("Handed %s over to a worker", name)
    for scope in report.expired_locks:
        logger.info("The lock on %s expired", scope)


if __name__ == "__main__":
    maintenance()
