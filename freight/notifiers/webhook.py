"""The webhook notifier: a JSON POST of the deploy event to a URL, signed when a secret is set
(`X-Freight-Signature-256: sha256=HEX`, the HMAC-SHA256 of the exact body, as GitHub signs)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import AnyHttpUrl, Field

from freight.errors import IntegrationError
from freight.notifiers import registry
from freight.notifiers.base import DeployEvent, Notice, NotifyContext
from freight.plugins import PluginConfig

SIGNATURE_HEADER = "X-Freight-Signature-256"


class WebhookConfig(PluginConfig):
    type: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    secret: str | None = None
    secret_fields: ClassVar[tuple[str, ...]] = ("secret", "headers")


def payload(event: DeployEvent) -> dict[str, object]:
    return {
        "event": event.event,
        "name": event.name,
        "app": event.app,
        "env": event.environment,
        "number": event.number,
        "ref": event.ref,
        "sha": event.sha,
        "previous_sha": event.prev_sha,
        "status": event.status,
        "user": event.user,
        "duration": event.duration,
        "link": event.link,
        "reason": event.reason,
        "params": dict(event.params),
        "date_created": event.date_created,
        "date_started": event.date_started,
        "date_finished": event.date_finished,
        "force_reason": event.force_reason,
        "forced_past": event.forced_past,
        # Freight's own webhook fields, for receivers written for it.
        "app_name": event.app,
        "environment": event.environment,
        "deploy_number": event.number,
        "title": event.name,
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def send(
        self, config: PluginConfig, event: DeployEvent, context: NotifyContext
    ) -> Mapping[str, Any] | None:
        assert isinstance(config, WebhookConfig)
        self._post(config, payload(event), context)
        return None

    def announce(self, config: PluginConfig, notice: Notice, context: NotifyContext) -> None:
        assert isinstance(config, WebhookConfig)
        self._post(config, notice.payload(), context)

    def _post(self, config: WebhookConfig, data: dict[str, object], context: NotifyContext) -> None:
        body = json.dumps(data).encode()
        headers = {**config.headers, "Content-Type": "application/json"}
        if config.secret:
            headers[SIGNATURE_HEADER] = signature(config.secret, body)
        try:
            response = context.client.post(str(config.url), content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise IntegrationError(f"Webhook {config.url} unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise IntegrationError(f"Webhook {config.url} answered {response.status_code}")


registry.register("webhook", WebhookConfig)(WebhookNotifier())
