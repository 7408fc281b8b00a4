"""What a notifier receives: one deploy event, and an HTTP client to reach its service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from freight.plugins import PluginConfig


@dataclass(frozen=True)
class DeployEvent:
    event: str  # queued, started, finished, failed, cancelled
    deploy_id: int
    app: str
    environment: str
    number: int
    ref: str
    sha: str | None
    status: str
    user: str
    duration: float | None
    link: str
    reason: str | None = None

    @property
    def name(self) -> str:
        return f"{self.app}/{self.environment}#{self.number}"


class Notifier(Protocol):
    def send(self, config: PluginConfig, event: DeployEvent, client: httpx.Client) -> None:
        """Deliver the event; raise IntegrationError when the service refused it."""
        ...
