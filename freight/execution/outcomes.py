"""How a deploy ends, from what stopped it: one table, most specific first (as an adapter maps
a lower library's errors)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from freight.db import DeployStatus
from freight.errors import Barred, CommandFailed, DeployTimeout, FreightError


@dataclass(frozen=True)
class Outcome:
    status: DeployStatus
    reason: str | None = None
    cancelled_by: str | None = None
    # The reason is in the log already (the command runner said why it stopped).
    told: bool = False


FINISHED = Outcome(DeployStatus.FINISHED)

RULES: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[..., Outcome]], ...
] = (
    # A lock or freeze taken, or its window closed, while it waited: it never ran, so it did
    # not fail (automatic deploys resume when that passes).
    (
        Barred,
        lambda e: Outcome(DeployStatus.CANCELLED, f"Not run: {e.message}", e.refused_by),
    ),
    ((CommandFailed, DeployTimeout), lambda e: Outcome(DeployStatus.FAILED, e.message, told=True)),
    (FreightError, lambda e: Outcome(DeployStatus.FAILED, e.message)),
    (
        Exception,
        lambda e: Outcome(DeployStatus.FAILED, f"Internal error: {type(e).__name__}: {e}"),
    ),
    # A signal to the runner (Prefect's TerminationSignal, Ctrl-C) is how the engine cancels;
    # the command was already stopped on the way out.
    (BaseException, lambda e: Outcome(DeployStatus.CANCELLED, "Cancelled by Prefect", "Prefect")),
)


def outcome_of(error: BaseException | None, *, cancelled_by: str | None = None) -> Outcome:
    """The outcome of a deploy that stopped with `error` (None: it went through). When someone
    asked it to stop (`cancelled_by`), whatever the steps raised on the way is that cancel."""
    if cancelled_by is not None and error is not None:
        return Outcome(DeployStatus.CANCELLED, f"Cancelled by {cancelled_by}", cancelled_by)
    if error is None:
        return FINISHED
    for kinds, make in RULES:
        if isinstance(error, kinds):
            return make(error)
    raise AssertionError("BaseException matches every error")  # pragma: no cover
