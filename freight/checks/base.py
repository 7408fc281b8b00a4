"""What a check receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from freight.plugins import PluginConfig


@dataclass(frozen=True)
class CheckContext:
    app: str
    environment: str
    sha: str
    output: Callable[[str], None]


class Check(Protocol):
    def check(self, config: PluginConfig, context: CheckContext) -> None:
        """Return when the sha may be deployed; raise CheckFailed when it may not."""
        ...
