"""Durations as people write them: `90s`, `30m`, `8h`, `2d`, `1w`."""

from __future__ import annotations

import re
from datetime import timedelta

from freight.errors import InvalidRequest

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or int(match[1]) == 0:
        raise InvalidRequest(f"Invalid duration '{text}': use e.g. 30m, 2h, 1d")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])
