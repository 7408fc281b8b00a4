"""Sending the notification outbox: each event once, in order, to each notifier, with retries.

No transaction is held while a notifier is talked to (SQLite would stay write-locked
meanwhile). A notifier that keeps failing is logged and skipped: notifications never fail a
deploy.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine

from freight import notifiers, secrets
from freight.db import session_scope
from freight.errors import FreightError
from freight.notifiers import DeployEvent, Notice, NotifyContext
from freight.plugins import PluginConfig, ServiceUrls
from freight.service import notifications
from freight.settings import Settings, secret_source


@dataclass(frozen=True)
class Courier:
    """What sending needs: the HTTP client, where the services are, where `${NAME}` secrets
    come from, and how often to retry."""

    client: httpx.Client
    urls: ServiceUrls
    secrets_from: Mapping[str, str]
    retry_delays: tuple[float, ...]
    workspace_root: Path
    public_url: str


def deliver(
    engine: Engine, deploy_id: int, courier: Courier, output: Callable[[str], None]
) -> list[str]:
    """Send every undelivered event of the deploy, oldest first; the events sent."""
    with session_scope(engine) as session:
        box = notifications.outbox(
            session,
            deploy_id,
            workspace_root=courier.workspace_root,
            public_url=courier.public_url,
        )
    resolved = [secrets.resolve_config(c, courier.secrets_from)[0] for c in box.configs]
    states = dict(box.states)
    for notification_id, event in box.events:
        for index, config in enumerate(resolved):
            key = notifications.state_key(index, config)
            context = NotifyContext(
                client=courier.client, urls=courier.urls, state=states.get(key, {})
            )
            kept = _send(config, event, context, output, courier.retry_delays)
            if kept is not None:
                states[key] = dict(kept)
                with session_scope(engine) as session:
                    notifications.save_state(session, deploy_id, key, states[key])
        with session_scope(engine) as session:
            notifications.mark_delivered(session, notification_id)
    return [event.event for _, event in box.events]


def announce(
    configs: list[PluginConfig],
    notice: Notice,
    courier: Courier,
    output: Callable[[str], None],
) -> None:
    """Tell each notifier of a lock or of the fleet's news; one that keeps failing is logged
    and skipped."""
    resolved, _ = secrets.resolve_all(configs, courier.secrets_from)
    context = NotifyContext(client=courier.client, urls=courier.urls)
    for config in resolved:
        notifier = notifiers.registry.get(config.type)
        _with_retries(
            functools.partial(notifier.announce, config, notice, context),
            f"{config.type} failed on '{notice.event}'",
            output,
            courier.retry_delays,
        )


def _send(
    config: PluginConfig,
    event: DeployEvent,
    context: NotifyContext,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
) -> Mapping[str, Any] | None:
    notifier = notifiers.registry.get(config.type)
    return _with_retries(
        lambda: notifier.send(config, event, context),
        f"{config.type} failed on '{event.event}'",
        output,
        retry_delays,
    )


T = TypeVar("T")


def _with_retries(
    call: Callable[[], T],
    failed: str,
    output: Callable[[str], None],
    retry_delays: tuple[float, ...],
) -> T | None:
    for attempt, delay in enumerate((0.0, *retry_delays)):
        time.sleep(delay)
        try:
            return call()
        except Exception as exc:  # a notifier's bug must not stop the deploy either
            last = attempt == len(retry_delays)
            message = (
                exc.message if isinstance(exc, FreightError) else f"{type(exc).__name__}: {exc}"
            )
            output(f">> Notifier {failed}: {message}" + (" (giving up)" if last else ", retrying"))
    return None


def courier(settings: Settings, client: httpx.Client) -> Courier:
    return Courier(
        client=client,
        urls=settings.service_urls(),
        secrets_from=secret_source(),
        retry_delays=settings.notify_retry_delays,
        workspace_root=settings.workspaces,
        public_url=settings.public_url,
    )
