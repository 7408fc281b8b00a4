"""Deploy windows: when an environment may be deployed, from its catalogue's `windows`.

A window opens at each time its cron expression names and stays open for its duration, on the
wall clock of its timezone (so "Friday 16:00 for 64h" ends Monday 08:00 on a weekend whose
clocks change too). Deny wins over allow; without allow windows every time not denied is open.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from freight.durations import parse_duration
from freight.errors import InvalidRequest

# How far ahead an opening is looked for, and how many window edges at most: a window set that
# never opens within it says so instead of searching on.
HORIZON = timedelta(days=366)
MAX_EDGES = 20_000


def _duration(value: str) -> str:
    # Kept as written (`8h`), so that a config read back from the database validates again.
    try:
        parse_duration(value)
    except InvalidRequest as exc:
        raise PydanticCustomError("invalid_duration", exc.message) from None
    return value


# A duration as people write it (`30m`, `8h`), kept as written.
Duration = Annotated[str, AfterValidator(_duration)]


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: str | None = None
    deny: str | None = None
    duration: Duration
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if (self.allow is None) == (self.deny is None):
            raise PydanticCustomError(
                "invalid_window", "a window has either `allow` or `deny`: a cron expression"
            )
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "invalid_window", "unknown timezone '{zone}'", {"zone": self.timezone}
            ) from None
        try:
            CronSim(self.cron, datetime.now(zone))
        except CronSimError as exc:
            raise PydanticCustomError(
                "invalid_window",
                "'{cron}' is not a cron expression: {problem}",
                {"cron": self.cron, "problem": str(exc)},
            ) from None
        return self

    @property
    def cron(self) -> str:
        return self.allow if self.allow is not None else str(self.deny)

    @property
    def length(self) -> timedelta:
        return parse_duration(self.duration)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def covering(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The opening of this window that covers `at` (start, end), if one does."""
        local = at.astimezone(self.zone)
        # Only an opening that started after `at - duration` is still open at `at`.
        start = next(iter(CronSim(self.cron, local - self.length)))
        return (start, start + self.length) if start <= local else None

    def starts(self, after: datetime) -> Iterator[datetime]:
        return iter(CronSim(self.cron, after.astimezone(self.zone)))

    def ends(self, after: datetime) -> Iterator[datetime]:
        """The ends of its openings, after `after`, in order."""
        local = after.astimezone(self.zone)
        return (start + self.length for start in CronSim(self.cron, local - self.length))


@dataclass(frozen=True)
class Verdict:
    at: datetime
    open: bool
    # When closed, when it next opens; when open, when it next closes (None: not within a year,
    # or never).
    change: datetime | None
    # The zone its times are shown in: that of the first window.
    zone: ZoneInfo

    def when(self) -> str:
        """`Mon 09:00 Europe/Berlin` within six days, else with its date; `not within a year`."""
        if self.change is None:
            return "not within a year"
        local = self.change.astimezone(self.zone)
        soon = self.change - self.at < timedelta(days=6)
        shown = f"{local:%a %H:%M}" if soon else f"{local:%a %Y-%m-%d %H:%M}"
        return f"{shown} {self.zone.key}"

    def describe(self) -> str:
        """`open until Thu 17:00 Europe/Berlin`, `closed, opens Mon 09:00 Europe/Berlin`."""
        if self.open:
            return "open" if self.change is None else f"open until {self.when()}"
        return f"closed, opens {self.when()}" if self.change else "closed for over a year"


def is_open(windows: Sequence[Window], at: datetime) -> bool:
    if any(w.deny is not None and w.covering(at) for w in windows):
        return False
    allows = [w for w in windows if w.allow is not None]
    return not allows or any(w.covering(at) for w in allows)


def judge(windows: Sequence[Window], at: datetime) -> Verdict | None:
    """Whether the windows are open at `at` and when that changes; None without windows."""
    if not windows:
        return None
    now_open = is_open(windows, at)
    change = None
    edges = heapq.merge(*(_edges(w, at, opening=not now_open) for w in windows))
    for edge in itertools.islice(edges, MAX_EDGES):
        if edge - at > HORIZON:
            break
        if is_open(windows, edge) != now_open:
            change = edge
            break
    return Verdict(at, now_open, change, windows[0].zone)


def _edges(window: Window, at: datetime, *, opening: bool) -> Iterator[datetime]:
    # Windows open only where a deny ends or an allow starts, and close the other way round.
    return window.ends(at) if (window.deny is not None) == opening else window.starts(at)
