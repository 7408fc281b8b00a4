"""Notifiers: who hears about deploys. Each kind is one module registered here."""

from freight.errors import InvalidNotifier
from freight.notifiers.base import (
    DeployEvent,
    LockNotice,
    MachineNotice,
    Notice,
    Notifier,
    NotifyContext,
)
from freight.plugins import Registry

registry: Registry[Notifier] = Registry("notifier", InvalidNotifier)

from freight.notifiers import github, sentry, slack, webhook  # noqa: E402  (each registers itself)

__all__ = [
    "DeployEvent",
    "LockNotice",
    "MachineNotice",
    "Notice",
    "Notifier",
    "NotifyContext",
    "github",
    "registry",
    "sentry",
    "slack",
    "webhook",
]
