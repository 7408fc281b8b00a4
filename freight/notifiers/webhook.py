"""The webhook notifier: a JSON POST of the deploy event to a URL."""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import AnyHttpUrl, Field

from freight.errors import IntegrationError
from freight.notifiers import registry
from freight.notifiers.base import DeployEvent
from freight.plugins import PluginConfig


class WebhookConfig(PluginConfig):
    type: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)


def payload(event: DeployEvent) -> dict[str, object]:
    return {
        "event": event.event,
        "name": event.name,
        "app": event.app,
        "env": event.environment,
        "number": event.number,
        "ref": event.ref,
        "sha": event.sha,
        "status": event.status,
        "user": event.user,
        "duration": event.duration,
        "link": event.link,
        "reason": event.reason,
    }


class WebhookNotifier:
    def send(self, config: PluginConfig, event: DeployEvent, client: httpx.Client) -> None:
        assert isinstance(config, WebhookConfig)
        try:
            response = client.post(str(config.url), json=payload(event), headers=config.headers)
        except httpx.HTTPError as exc:
            raise IntegrationError(f"Webhook {config.url} unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise IntegrationError(f"Webhook {config.url} answered {response.status_code}")


registry.register("webhook", WebhookConfig)(WebhookNotifier())
