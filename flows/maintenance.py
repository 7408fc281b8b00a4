"""The maintenance flow (interval schedule): stray checkouts, locks that ran out, notifications
no runner is left to send, logged-out sessions that expired. One run at a time works, under a
lease that dies with its holder."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from freight import tls
from freight.db import get_engine
from freight.execution import delivery, housekeeping
from freight.execution.leased import holding
from freight.settings import get_settings
from freight.telemetry import report_errors


@flow(name="maintenance", persist_result=False)
def maintenance() -> None:
    settings = get_settings()
    report_errors(settings, "maintenance")
    logger = get_run_logger()
    engine = get_engine(settings.database_url)
    with (
        holding(
            engine, "flow:maintenance", str(flow_run.id), ttl=settings.reconciler_lease
        ) as mine,
        tls.client(timeout=settings.notify_timeout) as client,
    ):
        if not mine:
            logger.info("Another maintenance run is at work; this one has nothing to do")
            return
        report = housekeeping.run_maintenance(
            engine,
            delivery.courier(settings, client),
            logger.info,
            history_days=settings.machine_history_days,
        )
    for path in report.removed_workspaces:
        logger.info("Removed stray checkout %s", path)
    for scope in report.expired_locks:
        logger.info("The lock on %s expired", scope)
    for scope in report.begun_freezes:
        logger.info("The freeze of %s began", scope)
    for deploy_id in report.notified:
        logger.info("Delivered the notifications of deploy %s", deploy_id)
    if report.forgotten_history:
        logger.info("Dropped %d rows of machine history past retention", report.forgotten_history)
    for host, mirrors in report.git_caches.items():
        total = sum(size for _, size in mirrors)
        sizes = ", ".join(f"{name} {size / 2**20:.1f} MB" for name, size in mirrors)
        logger.info(
            "Git cache of %s: %d mirror(s), %.1f MB: %s",
            host, len(mirrors), total / 2**20, sizes,
        )  # fmt: skip
    if report.forgotten_sessions:
        logger.info("Forgot %d logged-out sessions that expired", report.forgotten_sessions)


if __name__ == "__main__":
    maintenance()
