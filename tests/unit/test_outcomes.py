"""How a deploy ends, from what stopped its steps (freight/execution/outcomes.py)."""

from __future__ import annotations

import pytest

from freight.db import DeployStatus
from freight.errors import (
    AppLocked,
    CheckFailed,
    CommandFailed,
    DeployCancelled,
    DeployTimeout,
    OutsideWindow,
    VcsError,
)
from freight.execution.outcomes import Outcome, outcome_of


class Signal(BaseException):
    """What Prefect's TerminationSignal is to the steps: not an Exception."""


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, Outcome(DeployStatus.FINISHED)),
        (
            AppLocked("web/production is locked by ana: audit"),
            Outcome(
                DeployStatus.CANCELLED,
                "Not run: web/production is locked by ana: audit",
                "a lock",
            ),
        ),
        (
            OutsideWindow("web/production is outside its deploy windows; the next opens Mon"),
            Outcome(
                DeployStatus.CANCELLED,
                "Not run: web/production is outside its deploy windows; the next opens Mon",
                "a deploy window",
            ),
        ),
        (
            CommandFailed("Command exited with status 3", returncode=3),
            Outcome(DeployStatus.FAILED, "Command exited with status 3", told=True),
        ),
        (
            DeployTimeout("Process exceeded time limit of 5s"),
            Outcome(DeployStatus.FAILED, "Process exceeded time limit of 5s", told=True),
        ),
        (
            CheckFailed("Check github failed: [failure] ci/build"),
            Outcome(DeployStatus.FAILED, "Check github failed: [failure] ci/build"),
        ),
        (VcsError("git fetch failed"), Outcome(DeployStatus.FAILED, "git fetch failed")),
        (
            KeyError("provider"),
            Outcome(DeployStatus.FAILED, "Internal error: KeyError: 'provider'"),
        ),
        (Signal(), Outcome(DeployStatus.CANCELLED, "Cancelled by Prefect", "Prefect")),
    ],
    ids=lambda v: type(v).__name__,
)
def test_each_kind_of_stop_has_one_outcome(error: BaseException | None, expected: Outcome) -> None:
    assert outcome_of(error) == expected


def test_a_cancel_someone_asked_for_is_the_outcome_whatever_the_steps_raised() -> None:
    for error in (DeployCancelled("Deploy cancelled"), CommandFailed("killed"), Signal()):
        assert outcome_of(error, cancelled_by="bob") == Outcome(
            DeployStatus.CANCELLED, "Cancelled by bob", "bob"
        )
    # The command finished just as the cancel came: it finished.
    assert outcome_of(None, cancelled_by="bob") == Outcome(DeployStatus.FINISHED)
