"""What a notifier receives: one deploy event, and the means to reach its service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from freight.plugins import PluginConfig, ServiceUrls


@dataclass(frozen=True)
class DeployEvent:
    event: str  # queued, started, finished, failed, cancelled
    deploy_id: int
    app: str
    environment: str
    number: int
    ref: str
    sha: str | None
    status: str  # the deploy's status as of the event: pending, in_progress, finished, ...
    user: str
    duration: float | None
    link: str
    reason: str | None = None
    prev_sha: str | None = None  # what was live before this deploy
    repository: str = ""
    commits: int | None = None  # how many commits it ships (None: unknown)
    date_created: str | None = None
    date_started: str | None = None
    date_finished: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    log_tail: tuple[str, ...] = ()  # the last lines of the log, for failures
    # What forcing it went past (a lock, a freeze, a closed deploy window), and why.
    forced_past: str | None = None
    force_reason: str | None = None

    @property
    def name(self) -> str:
        return f"{self.app}/{self.environment}#{self.number}"

    @property
    def final(self) -> bool:
        return self.event in ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class LockNotice:
    """A lock put on, taken off, or run out: `event` is locked, unlocked or expired; a freeze
    that starts later is also announced as it begins (`frozen`)."""

    event: str
    app: str
    environment: str | None  # None: every environment of the app
    reason: str
    owner: str
    by: str  # who locked or unlocked it ("expired" for a lock that ran out)
    expires: str | None = None
    freeze: bool = False
    starts: str | None = None  # a freeze's start, when it was set

    @property
    def scope(self) -> str:
        return self.app if self.environment is None else f"{self.app}/{self.environment}"

    def sentence(self) -> str:
        if self.freeze:
            return self._freeze_sentence()
        if self.event == "locked":
            until = f" until {self.expires}" if self.expires else ""
            return f"{self.scope} locked by {self.owner}{until}: {self.reason}"
        if self.event == "expired":
            return f"{self.scope} unlocked: the lock by {self.owner} expired ({self.reason})"
        return f"{self.scope} unlocked by {self.by} (was {self.owner}: {self.reason})"

    def _freeze_sentence(self) -> str:
        if self.event == "locked" and self.starts:
            return (
                f"{self.scope} will be frozen from {self.starts} until {self.expires} by "
                f"{self.owner}: {self.reason}"
            )
        if self.event in ("locked", "frozen"):
            return f"{self.scope} frozen until {self.expires} by {self.owner}: {self.reason}"
        if self.event == "expired":
            return f"{self.scope} thawed: the freeze by {self.owner} ended ({self.reason})"
        return f"{self.scope} thawed by {self.by} (the freeze by {self.owner}: {self.reason})"

    def payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "app": self.app,
            "env": self.environment,
            "reason": self.reason,
            "owner": self.owner,
            "by": self.by,
            "expires": self.expires,
            "freeze": self.freeze,
            "starts": self.starts,
            "title": self.sentence(),
        }


@dataclass(frozen=True)
class MachineNotice:
    """What the fleet did: `event` is drift_found, drift_resolved or machine_lost."""

    event: str
    machine: str
    app: str
    environment: str
    detail: str
    date: str

    def sentence(self) -> str:
        what = {
            "drift_found": "Drift found",
            "drift_resolved": "Drift resolved",
            "machine_lost": "Machine lost",
        }.get(self.event, self.event)
        return f"{what} in {self.app}/{self.environment}: {self.detail}"

    def payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "machine": self.machine,
            "app": self.app,
            "env": self.environment,
            "detail": self.detail,
            "date": self.date,
            "title": self.sentence(),
        }


# What `announce` tells of: anything but a deploy's own events.
Notice = LockNotice | MachineNotice


@dataclass(frozen=True)
class NotifyContext:
    client: httpx.Client
    urls: ServiceUrls
    # What this notifier kept from this deploy's earlier events (Slack's message, GitHub's
    # deployment id); empty for the first.
    state: Mapping[str, Any] = field(default_factory=dict)


class Notifier(Protocol):
    def send(
        self, config: PluginConfig, event: DeployEvent, context: NotifyContext
    ) -> Mapping[str, Any] | None:
        """Deliver the event; return what to keep for later events (None: keep what was).

        Raise IntegrationError when the service refused it (it is retried, and logged)."""
        ...

    def announce(self, config: PluginConfig, notice: Notice, context: NotifyContext) -> None:
        """Tell of a lock or of the fleet's news (a notifier with nothing to say about them
        does nothing)."""
        ...
