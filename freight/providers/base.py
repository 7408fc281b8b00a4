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
class FleetReport:
    """How a pull deploy stands: new output lines, each machine's run, and the status of each
    machine that can deploy the environment."""

    # (line id, machine, text), oldest first; ask again after the last id
    lines: list[tuple[int, str, str]]
    # machine -> (running | succeeded | failed | cancelled, message)
    runs: Mapping[str, tuple[str, str | None]]
    # machine -> online | stale | lost
    machines: Mapping[str, str]


class Fleet(Protocol):
    """The machines' agents as a pull deploy reaches them (through the Freight database)."""

    def publish(self, min_ready: int | None) -> tuple[list[str], int]:
        """Make the deploy's sha the desired version; the machines counted on, and how many
        must succeed (None: all of them)."""
        ...

    def report(self, after: int) -> FleetReport: ...

    def cancel(self) -> None:
        """Tell the agents to stop their command."""
        ...


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
    # For the pull provider: the agents of the machines.
    fleet: Fleet | None = None

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

    def agents(self) -> Fleet:
        assert self.fleet is not None, "this provider deploys by pull: give the runtime a fleet"
        return self.fleet

    def http(self) -> httpx.Client:
        assert self.client is not None, "this provider talks HTTP: give the runtime a client"
        return self.client


class Provider(Protocol):
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        """Deploy, streaming output; raise an ExternalError subclass on failure."""
        ...
