"""What a check receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import httpx

from freight.plugins import PluginConfig, ServiceUrls


@dataclass(frozen=True)
class CheckContext:
    app: str
    environment: str
    sha: str
    output: Callable[[str], None]
    client: httpx.Client | None = None
    urls: ServiceUrls = field(default_factory=ServiceUrls)
    repository: str = ""  # the app's git remote

    def http(self) -> httpx.Client:
        assert self.client is not None, "this check talks HTTP: give the context a client"
        return self.client


class Verdict(StrEnum):
    PASSED = "passed"
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    # One line a person can act on: what failed (with a link) or what is still awaited.
    summary: str = ""
    # Look again no sooner than this (a rate limit's reset), when the service said so.
    retry_after: float | None = None


class Check(Protocol):
    def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
        """Look once at the sha's state; waiting for a pending result is the caller's job."""
        ...
