"""Freight's own errors, reported to Sentry with sentry-sdk when FREIGHT_SENTRY_DSN is set."""

from __future__ import annotations

import socket
from importlib.metadata import version

import sentry_sdk

from freight.settings import Settings


def report_errors(settings: Settings, component: str) -> bool:
    """Send unhandled exceptions and error logs of this process to Sentry; False if no DSN."""
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        release=f"freight@{version('freight')}",
        server_name=socket.gethostname(),
        # Deploy logs and request bodies can hold what a team would rather not send away.
        send_default_pii=False,
        traces_sample_rate=0,
    )
    sentry_sdk.set_tag("component", component)
    return True
