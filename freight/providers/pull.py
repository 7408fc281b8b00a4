"""The pull provider: the deploy sets the desired version of its environment, and the agents
of the machines (`freight agent` with a `deploy` command for it) deploy it themselves and
report back. Nothing reaches into the machines: they ask, as workers do.

The deploy finishes when `min_ready` machines report success, fails as soon as that can no
longer happen (failures, machines lost) or at `timeout` (naming the machines that never
reported), and a cancel tells the agents to stop their commands."""

from __future__ import annotations

import time
from typing import Annotated, Literal, NoReturn

from pydantic import Field

from freight.errors import CommandFailed, DeployCancelled, DeployTimeout
from freight.plugins import PluginConfig
from freight.providers import registry
from freight.providers.base import DeployContext, Fleet, FleetReport, ProviderRuntime

# How often the deploy looks at what the agents reported: their lines reach the log this late.
POLL = 0.25
# After a cancel, how long past the grace period to wait for agents to report their stop.
STOP_REPORT_WAIT = 15.0


class PullConfig(PluginConfig):
    type: Literal["pull"] = "pull"
    # How many machines must report success: all of those that can deploy it, or a number.
    min_ready: Annotated[int, Field(ge=1)] | Literal["all"] = "all"
    timeout: float = Field(default=600, gt=0)

    def needed(self) -> int | None:
        return None if self.min_ready == "all" else self.min_ready


def _names(machines: list[str] | set[str]) -> str:
    return ", ".join(sorted(machines)) or "none"


class PullProvider:
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        assert isinstance(config, PullConfig)
        fleet = runtime.agents()
        machines, need = fleet.publish(config.needed())
        place = f"{context.app}/{context.environment}"
        runtime.output(
            f">> Desired version of {place} is now {context.sha}; "
            f"{len(machines)} machine(s) can deploy it ({_names(machines)}), "
            f"{need} must report success"
        )
        if not machines:
            raise CommandFailed(f"No machine that can deploy {place} has checked in")
        if len(machines) < need:
            raise CommandFailed(
                f"Only {len(machines)} machine(s) can deploy {place}; min_ready is {need}"
            )
        Watch(fleet, runtime, set(machines), need).until_done(min(config.timeout, runtime.timeout))


class Watch:
    """One pull deploy's wait on its machines, streaming their lines into the log."""

    def __init__(self, fleet: Fleet, runtime: ProviderRuntime, machines: set[str], need: int):
        self.fleet = fleet
        self.runtime = runtime
        self.machines = machines
        self.need = need
        self.after = 0
        self.told: set[str] = set()

    def look(self) -> FleetReport:
        report = self.fleet.report(self.after)
        for line_id, machine, text in report.lines:
            self.runtime.output(f"[{machine}] {text}")
            self.after = line_id
        for machine, (status, message) in sorted(report.runs.items()):
            if status != "running" and machine not in self.told:
                self.told.add(machine)
                self.runtime.output(
                    f">> {machine}: {status}" + (f" ({message})" if message else "")
                )
        return report

    def until_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            report = self.look()
            # A machine that joined while the deploy ran (and took the order) counts too.
            known = self.machines | set(report.runs)
            ended = {m: s for m, (s, _) in report.runs.items() if s != "running"}
            succeeded = {m for m, s in ended.items() if s == "succeeded"}
            failed = {m for m, s in ended.items() if s != "succeeded"}
            lost = {m for m in known - set(ended) if report.machines.get(m) == "lost"}
            if len(succeeded) >= self.need:
                self.runtime.output(
                    f">> {len(succeeded)} of {len(known)} machine(s) deployed it "
                    f"({_names(succeeded)}); {self.need} needed"
                )
                return
            if len(known) - len(failed) - len(lost) < self.need:
                why = [f"failed: {_names(failed)}"] if failed else []
                why += [f"lost: {_names(lost)}"] if lost else []
                self.fail(
                    CommandFailed(
                        f"{self.need} machine(s) can no longer succeed ({'; '.join(why)})"
                    )
                )
            if self.runtime.should_cancel():
                self.stop(known - set(ended))
            if time.monotonic() >= deadline:
                silent = known - set(report.runs)
                running = known - set(ended) - silent
                self.fail(
                    DeployTimeout(
                        f"Timed out after {timeout:g}s with {len(succeeded)} of {self.need} "
                        f"machine(s) ready; never reported: {_names(silent)}"
                        + (f"; still running: {_names(running)}" if running else "")
                    )
                )
            time.sleep(POLL)

    def fail(self, error: CommandFailed | DeployTimeout) -> NoReturn:
        """Stop the machines that still run (nobody waits on them now), and say why."""
        self.fleet.cancel()
        self.runtime.output(f">> {error.message}")
        raise error

    def stop(self, running: set[str]) -> None:
        """Cancel: the agents stop their commands (process group, grace, kill); wait for them
        to say so, streaming their last lines, then end cancelled."""
        self.fleet.cancel()
        self.runtime.output(f">> Told the agents to stop ({_names(running)})")
        deadline = time.monotonic() + self.runtime.grace + STOP_REPORT_WAIT
        while time.monotonic() < deadline:
            report = self.look()
            if not any(report.runs.get(m, ("", None))[0] == "running" for m in running):
                break
            time.sleep(POLL)
        raise DeployCancelled("Deploy cancelled")


registry.register("pull", PullConfig)(PullProvider())
