"""What every provider receives: a frozen description of the deploy (DeployContext, shared with
the agent) and the means to report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from freight.commands import DeployContext
from freight.plugins import PluginConfig, ServiceUrls
from freight.system_users import RunAs


@dataclass(frozen=True)
class ProviderRuntime:
    """Limits and sinks for one provider run; the flow builds it from settings and the app."""

    output: Callable[[str], None]
    should_cancel: Callable[[], bool]
    timeout: float
    read_timeout: float
    grace: float
    base_env: Mapping[str, str] = field(default_factory=dict)
    # Whom a local command runs as (None: as Freight's own user), and its own TMPDIR and HOME.
    run_as: RunAs | None = None
    temp_dir: Path | None = None
    # Told the process group id of a started command, so it can be stopped if the runner dies.
    on_start: Callable[[int], None] | None = None
    # For providers that talk to a service (Heroku): a client, and where the services are.
    client: httpx.Client | None = None
    urls: ServiceUrls = field(default_factory=ServiceUrls)

    def command_env(self, *layers: Mapping[str, str]) -> dict[str, str]:
        """A local command's environment: the inherited variables, its own home and temporary
        directory, its user's name, then `layers` (config, FREIGHT_* variables) on top."""
        env = dict(self.base_env)
        if self.temp_dir is not None:
            env.update(HOME=str(self.temp_dir), TMPDIR=str(self.temp_dir))
        if self.run_as is not None:
            env.update(USER=self.run_as.name, LOGNAME=self.run_as.name)
        for layer in layers:
            env.update(layer)
        return env

    def http(self) -> httpx.Client:
        assert self.client is not None, "this provider talks HTTP: give the runtime a client"
        return self.client


class Provider(Protocol):
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        """Deploy, streaming output; raise an ExternalError subclass on failure."""
        ...
