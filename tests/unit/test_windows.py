"""Deploy windows judged at given times (a fake clock): allow and deny, deny winning, when they
next open or close (also across a change of the clocks), and bad windows refused by field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from freight.catalogue import load_file
from freight.errors import CatalogueError
from freight.windows import Window, judge

BERLIN = ZoneInfo("Europe/Berlin")
# Mon-Thu 09:00-17:00, and nothing from Friday 16:00 to Monday 08:00, in Berlin.
WORKWEEK = [
    Window(allow="0 9 * * 1-4", duration="8h", timezone="Europe/Berlin"),  # type: ignore[arg-type]
    Window(deny="0 16 * * 5", duration="64h", timezone="Europe/Berlin"),  # type: ignore[arg-type]
]


def at(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("moment", "is_open", "change", "shown"),
    [
        (at(3, 10), True, at(3, 17), "Thu 17:00 Europe/Berlin"),  # Thursday morning
        (at(3, 9), True, at(3, 17), "Thu 17:00 Europe/Berlin"),  # the very minute it opens
        (at(3, 17), False, at(7, 9), "Mon 09:00 Europe/Berlin"),  # the minute it closes
        (at(4, 10), False, at(7, 9), "Mon 09:00 Europe/Berlin"),  # Friday: no allow window
        (at(6, 23, 30), False, at(7, 9), "Mon 09:00 Europe/Berlin"),  # Saturday night
    ],
)
def test_allow_windows_open_and_close_on_their_wall_clock(
    moment: datetime, is_open: bool, change: datetime, shown: str
) -> None:
    verdict = judge(WORKWEEK, moment)
    assert verdict is not None
    assert (verdict.open, verdict.change, verdict.when()) == (is_open, change, shown)


def test_deny_wins_over_allow_and_the_opening_is_where_both_agree() -> None:
    daily = [
        Window(allow="0 9 * * *", duration="10h", timezone="Europe/Berlin"),  # type: ignore[arg-type]
        Window(deny="0 16 * * 5", duration="64h", timezone="Europe/Berlin"),  # type: ignore[arg-type]
    ]
    friday = judge(daily, at(4, 17))  # allowed until 19:00, denied since 16:00
    assert friday is not None and not friday.open
    # The deny ends Monday 08:00, outside the allow window: it opens at 09:00.
    assert friday.change == at(7, 9)
    noon = judge(daily, at(4, 12))
    assert noon is not None and noon.open and noon.change == at(4, 16)


def test_a_deny_only_window_leaves_every_other_time_open() -> None:
    nights = [Window(deny="0 22 * * *", duration="9h")]  # type: ignore[arg-type]
    assert judge(nights, datetime(2026, 12, 3, 12, tzinfo=UTC)).open  # type: ignore[union-attr]
    late = judge(nights, datetime(2026, 12, 3, 23, tzinfo=UTC))
    assert late is not None and not late.open
    assert late.change == datetime(2026, 12, 4, 7, tzinfo=UTC)
    assert judge([], datetime(2026, 12, 3, tzinfo=UTC)) is None


def test_a_window_across_a_change_of_the_clocks_keeps_its_wall_clock_end() -> None:
    # Berlin's clocks go back on Sunday 2026-10-25: 64 hours from Friday 16:00 still end at
    # Monday 08:00 on the wall (65 hours of real time).
    verdict = judge(WORKWEEK, at(24, 12, month=10))
    assert verdict is not None and not verdict.open
    assert verdict.change == at(26, 9, month=10)
    weekend = [Window(deny="0 16 * * 5", duration="64h", timezone="Europe/Berlin")]  # type: ignore[arg-type]
    ends = judge(weekend, at(24, 12, month=10))
    assert ends is not None and ends.change == at(26, 8, month=10)


def test_windows_that_never_open_say_so() -> None:
    shut = [Window(deny="* * * * *", duration="1h")]  # type: ignore[arg-type]
    verdict = judge(shut, datetime(2026, 12, 3, tzinfo=UTC))
    assert verdict is not None and not verdict.open
    assert verdict.when() == "not within a year"


def test_far_openings_are_shown_with_their_date() -> None:
    new_year = [Window(allow="0 10 1 1 *", duration="1h")]  # type: ignore[arg-type]
    verdict = judge(new_year, datetime(2026, 12, 3, tzinfo=UTC))
    assert verdict is not None and verdict.when() == "Fri 2027-01-01 10:00 UTC"


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        (
            {"allow": "0 25 * * *", "duration": "1h"},
            "'0 25 * * *' is not a cron expression: Bad hour",
        ),
        ({"duration": "1h"}, "a window has either `allow` or `deny`"),
        ({"allow": "* * * * *", "deny": "* * * * *", "duration": "1h"}, "either `allow` or `deny`"),
        ({"allow": "* * * * *", "duration": "eight hours"}, "Invalid duration 'eight hours'"),
        ({"allow": "* * * * *", "duration": "1h", "timezone": "Mars/Base"}, "unknown timezone"),
        ({"allow": "* * * * *", "duration": "1h", "timezone": "../../etc"}, "unknown timezone"),
        ({"allow": "* * * * *", "duration": "1h", "at": "9"}, "unknown key"),
    ],
)
def test_a_bad_window_is_refused_naming_its_field(
    tmp_path: Path, window: dict[str, str], problem: str
) -> None:
    path = tmp_path / "deployments" / "web.yaml"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "name": "web",
                "repository": "https://example.com/web.git",
                "provider": {"type": "shell", "command": "true"},
                "environments": {"production": {"windows": [window]}},
            }
        )
    )
    with pytest.raises(CatalogueError) as caught:
        load_file(path, allow_local=False)
    assert caught.value.field is not None
    assert caught.value.field.startswith("environments.production.windows[0]")
    assert problem in caught.value.message
