"""What stands between a deploy request and its run: locks and checks.

A request is screened once when it is made (refused at once if a lock or a failing check
stands in the way), and the run waits for pending checks before it touches a workspace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from freight import checks
from freight.checks import CheckContext, CheckResult, Verdict
from freight.errors import CheckFailed, DeployCancelled
from freight.plugins import PluginConfig

# Back-off between looks at a pending check, and how often an unchanged wait is repeated in the
# log so that someone watching knows the deploy is alive.
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
REPEAT_AFTER = 60.0


def look_once(
    configs: Sequence[PluginConfig], context: CheckContext
) -> list[tuple[PluginConfig, CheckResult]]:
    """Every check's verdict on the sha, as of now."""
    return [(c, checks.registry.get(c.type).evaluate(c, context)) for c in configs]


def check_once(configs: Sequence[PluginConfig], context: CheckContext) -> None:
    """Refuse a sha that a check reports as failed; pending is fine at request time."""
    for config, result in look_once(configs, context):
        if result.verdict == Verdict.FAILED:
            raise CheckFailed(f"Check {config.type} failed: {result.summary}")


def wait_for_checks(
    configs: Sequence[PluginConfig],
    context: CheckContext,
    *,
    timeout: float,
    wait: Callable[[float], bool],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run each check until it passes; raise CheckFailed on failure or when pending too long.

    `wait(seconds)` sleeps and returns True if the deploy was cancelled meanwhile. A check's
    own `timeout` field, when its config has one, replaces the default.
    """
    for config in configs:
        check = checks.registry.get(config.type)
        limit = float(getattr(config, "timeout", None) or timeout)
        context.output(f">> Running check {config.type}")
        deadline = clock() + limit
        delay = FIRST_DELAY
        said, said_at = "", 0.0
        while True:
            result = check.evaluate(config, context)
            if result.verdict == Verdict.PASSED:
                break
            if result.verdict == Verdict.FAILED:
                raise CheckFailed(f"Check {config.type} failed: {result.summary}")
            now = clock()
            if now >= deadline:
                raise CheckFailed(
                    f"Check {config.type} still pending after {limit:.0f}s: {result.summary}"
                )
            if result.summary != said or now - said_at >= REPEAT_AFTER:
                context.output(f">> Waiting for check {config.type}: {result.summary}")
                said, said_at = result.summary, now
            pause = max(delay, result.retry_after or 0.0)
            if wait(min(pause, deadline - now)):
                raise DeployCancelled("Deploy cancelled")
            delay = min(delay * 2, MAX_DELAY)
