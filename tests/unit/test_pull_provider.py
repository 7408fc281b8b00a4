"""The pull provider's decisions, against a scripted fleet: when a pull deploy finishes, fails
(at once when success can no longer come, or at its timeout naming who never reported), and how
a cancel reaches the agents; every machine's line reaches the log, prefixed with its name."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from freight.errors import CommandFailed, DeployCancelled, DeployTimeout
from freight.providers import DeployContext, ProviderRuntime, pull
from freight.providers.base import FleetReport
from freight.providers.pull import PullConfig, PullProvider

CONTEXT = DeployContext(
    deploy_id=7,
    app="web",
    environment="production",
    number=3,
    ref="main",
    sha="a" * 40,
    prev_sha=None,
    user="ana",
    workspace=Path("/nonexistent"),
)


class ScriptedFleet:
    """Machines whose runs move as `script` says: called with the number of looks so far, it
    returns (new lines, runs, statuses)."""

    def __init__(
        self,
        machines: list[str],
        script: Callable[[int], tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]],
    ) -> None:
        self.machines = machines
        self.script = script
        self.looks = 0
        self.cancelled = threading.Event()
        self.published: int | str | None = "never"
        self._next_id = 0

    def publish(self, min_ready: int | None) -> tuple[list[str], int]:
        self.published = min_ready
        return list(self.machines), len(self.machines) if min_ready is None else min_ready

    def report(self, after: int) -> FleetReport:
        self.looks += 1
        lines, runs, statuses = self.script(self.looks)
        numbered = []
        for machine, text in lines:
            self._next_id += 1
            numbered.append((self._next_id, machine, text))
        return FleetReport(
            lines=numbered,
            runs={m: (s, "exit 3" if s == "failed" else None) for m, s in runs.items()},
            machines={m: statuses.get(m, "online") for m in self.machines},
        )

    def cancel(self) -> None:
        self.cancelled.set()


def run(
    fleet: ScriptedFleet,
    *,
    min_ready: int | str = "all",
    timeout: float = 60,
    should_cancel: Callable[[], bool] = lambda: False,
    output: list[str] | None = None,
) -> list[str]:
    """The log lines of the deploy (also in `output`, when given, should it raise)."""
    output = [] if output is None else output
    runtime = ProviderRuntime(
        output=output.append,
        should_cancel=should_cancel,
        timeout=3600,
        read_timeout=600,
        grace=0.1,
        fleet=fleet,
    )
    config = PullConfig(min_ready=min_ready, timeout=timeout)  # type: ignore[arg-type]
    PullProvider().run(config, CONTEXT, runtime)
    return output


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull, "POLL", 0.001)
    monkeypatch.setattr(pull, "STOP_REPORT_WAIT", 0.5)


def all_succeed(look: int) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    if look == 1:
        return [("m1", "step 1"), ("m2", "step 1")], {"m1": "running", "m2": "running"}, {}
    if look == 2:
        return [("m2", "step 2"), ("m1", "step 2")], {"m1": "succeeded", "m2": "running"}, {}
    return [], {"m1": "succeeded", "m2": "succeeded"}, {}


def test_it_finishes_when_every_machine_succeeded_with_their_lines_in_order() -> None:
    fleet = ScriptedFleet(["m1", "m2"], all_succeed)
    output = run(fleet)
    assert fleet.published is None
    assert [line for line in output if line.startswith("[")] == [
        "[m1] step 1",
        "[m2] step 1",
        "[m2] step 2",
        "[m1] step 2",
    ]
    assert ">> m1: succeeded" in output and ">> m2: succeeded" in output
    assert output[-1] == ">> 2 of 2 machine(s) deployed it (m1, m2); 2 needed"
    assert not fleet.cancelled.is_set()


def test_no_machine_to_deploy_fails_at_once() -> None:
    with pytest.raises(CommandFailed, match="No machine that can deploy web/production"):
        run(ScriptedFleet([], all_succeed))


def test_fewer_machines_than_min_ready_fails_at_once() -> None:
    with pytest.raises(CommandFailed, match=r"Only 2 machine\(s\) can deploy .*min_ready is 3"):
        run(ScriptedFleet(["m1", "m2"], all_succeed), min_ready=3)


def test_one_failure_fails_all_at_once_and_stops_the_others() -> None:
    fleet = ScriptedFleet(["m1", "m2", "m3"], lambda look: ([], {"m2": "failed"}, {}))
    with pytest.raises(CommandFailed, match=r"3 machine\(s\) can no longer succeed \(failed: m2\)"):
        run(fleet)
    assert fleet.looks == 1
    assert fleet.cancelled.is_set()


def test_min_ready_tolerates_failures_until_success_is_out_of_reach() -> None:
    def script(look: int) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
        runs = {"m1": "failed", "m2": "succeeded", "m3": "running"}
        return [], runs | ({"m3": "succeeded"} if look >= 3 else {}), {}

    output = run(ScriptedFleet(["m1", "m2", "m3"], script), min_ready=2)
    assert output[-1] == ">> 2 of 3 machine(s) deployed it (m2, m3); 2 needed"
    failing = ScriptedFleet(["m1", "m2", "m3"], lambda look: ([], {"m1": "failed"}, {"m3": "lost"}))
    with pytest.raises(CommandFailed, match=r"\(failed: m1; lost: m3\)"):
        run(failing, min_ready=2)


def test_a_lost_machine_that_already_succeeded_still_counts() -> None:
    fleet = ScriptedFleet(
        ["m1", "m2"], lambda look: ([], {"m1": "succeeded", "m2": "succeeded"}, {"m1": "lost"})
    )
    assert run(fleet)[-1].startswith(">> 2 of 2")


def test_the_timeout_names_who_never_reported_and_who_still_runs() -> None:
    fleet = ScriptedFleet(
        ["m1", "m2", "m3"], lambda look: ([], {"m1": "succeeded", "m2": "running"}, {})
    )
    with pytest.raises(DeployTimeout) as caught:
        run(fleet, timeout=0.05)
    assert caught.value.message == (
        "Timed out after 0.05s with 1 of 3 machine(s) ready; never reported: m3; still running: m2"
    )
    assert fleet.cancelled.is_set()


def test_a_machine_that_joined_during_the_deploy_counts() -> None:
    fleet = ScriptedFleet(["m1"], lambda look: ([], {"m1": "succeeded", "late": "succeeded"}, {}))
    assert run(fleet, min_ready=1)[-1] == ">> 2 of 2 machine(s) deployed it (late, m1); 1 needed"


def test_cancel_tells_the_agents_and_waits_for_their_stop() -> None:
    asked = threading.Event()

    def script(look: int) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
        if not fleet.cancelled.is_set():
            asked.set()
            return [("m1", "working")], {"m1": "running", "m2": "running"}, {}
        return [("m1", "Terminated")], {"m1": "cancelled", "m2": "cancelled"}, {}

    fleet = ScriptedFleet(["m1", "m2"], script)
    output: list[str] = []
    with pytest.raises(DeployCancelled):
        run(fleet, should_cancel=asked.is_set, output=output)
    assert ">> Told the agents to stop (m1, m2)" in output
    assert output.index(">> Told the agents to stop (m1, m2)") < output.index("[m1] Terminated")
    assert ">> m1: cancelled" in output and ">> m2: cancelled" in output


def test_min_ready_must_be_all_or_a_positive_number() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        PullConfig(min_ready=0)
    with pytest.raises(ValueError):
        PullConfig(min_ready="most")  # type: ignore[arg-type]
    assert PullConfig().needed() is None and PullConfig(min_ready=3).needed() == 3
