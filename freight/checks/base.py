"""What a check receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from freight.plugins import PluginConfig


@dataclass(frozen=True)
class CheckContext:
    app: str
    environment: str
    sha: str
    output: Callable[[str], None]


class Verdict(StrEnum):
    PASSED = "passed"
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    # One line a person can act on: what failed (with a link) or what is still awaited.
    summary: str = ""


class Check(Protocol):
    def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
        """Look once at the sha's state; waiting for a pending result is the caller's job."""
        ...
