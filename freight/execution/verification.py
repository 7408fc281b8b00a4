"""Verifying a deploy over HTTP: the URL must answer the expected status every time it is
asked, `interval` apart. (A `command` verification runs as the shell provider's commands do.)"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from freight.catalogue import VerifySpec
from freight.durations import parse_duration
from freight.errors import DeployCancelled, VerifyFailed


def check_http(
    spec: VerifySpec,
    client: httpx.Client,
    output: Callable[[str], None],
    wait: Callable[[float], bool],
) -> None:
    """Raise VerifyFailed at the first answer other than `spec.expect` (or none at all);
    `wait(seconds)` returns True when the deploy was cancelled meanwhile."""
    assert spec.http is not None
    timeout = parse_duration(spec.timeout).total_seconds()
    for attempt in range(1, spec.times + 1):
        where = f"GET {spec.http} ({attempt} of {spec.times})"
        try:
            answer = client.get(spec.http, timeout=timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise VerifyFailed(f"{where}: no answer: {exc or type(exc).__name__}") from None
        output(f">> Verify: {where} answered {answer.status_code}")
        if answer.status_code != spec.expect:
            raise VerifyFailed(f"{where} answered {answer.status_code}, not {spec.expect}")
        if attempt < spec.times and wait(parse_duration(spec.interval).total_seconds()):
            raise DeployCancelled("Cancelled while verifying")
