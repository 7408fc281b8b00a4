"""What stands between a deploy and its environment now: someone else's lock, a freeze, a
closed deploy window, and for a given commit the promotion rules (freight/service/promotion.py).
A person's deploy is refused by each of them unless forced with a reason
(checked when it is asked for, and again when its run starts); an automatic deploy waits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from freight import windows
from freight.db import App, Deploy, utcnow
from freight.errors import (
    AppLocked,
    Barred,
    Frozen,
    MissingArgument,
    NotPromoted,
    OutsideWindow,
)
from freight.service import apps, locks, promotion

# Who cancelled a deploy that a barrier stopped before it ran: not a person's decision, so it
# holds no automatic deploy once the barrier is gone.
REFUSERS = frozenset(kind.refused_by for kind in (AppLocked, Frozen, OutsideWindow, NotPromoted))


@dataclass(frozen=True)
class Barrier:
    error: Barred
    # What it does to automatic deploys, in a few words ("waiting for window, opens Mon 09:00").
    holding: str

    @property
    def text(self) -> str:
        return self.error.message


def barriers(
    session: Session,
    app: App,
    environment: str,
    user: str | None,
    *,
    sha: str | None = None,
    at: datetime | None = None,
) -> list[Barrier]:
    """Every barrier in force for `user`'s deploy of the environment (None: anyone's), and
    with `sha` the promotion rules it does not meet yet."""
    at = at or utcnow()
    found = []
    for lock in locks.active_locks(session, app.id, environment, at=at):
        if lock.freeze:
            found.append(Barrier(Frozen(locks.describe(lock)), locks.holding(lock)))
        elif lock.owner != user:
            found.append(Barrier(AppLocked(locks.describe(lock)), locks.holding(lock)))
    verdict = window(app, environment, at=at)
    if verdict is not None and not verdict.open:
        opens = f"opens {verdict.when()}" if verdict.change else "none opens within a year"
        found.append(
            Barrier(
                OutsideWindow(
                    f"{app.name}/{environment} is outside its deploy windows; "
                    + (f"the next {opens}" if verdict.change else opens)
                ),
                f"waiting for window, {opens}",
            )
        )
    if sha is not None:
        found += promotion_barriers(session, app, environment, sha, at=at)
    return found


def promotion_barriers(
    session: Session, app: App, environment: str, sha: str, *, at: datetime | None = None
) -> list[Barrier]:
    return [
        Barrier(NotPromoted(unmet.text), f"not promoted yet: {unmet.missing}")
        for unmet in promotion.unmet(session, app, environment, sha, at=at or utcnow())
    ]


def window(app: App, environment: str, *, at: datetime | None = None) -> windows.Verdict | None:
    """The environment's deploy windows at `at` (default now): open or not, and until when."""
    return windows.judge(apps.windows_of(app, environment), at or utcnow())


def screen(found: list[Barrier], *, force: bool, reason: str | None) -> str | None:
    """`passed`, for a request a person makes: forcing without a reason is a missing argument
    (the request is refused, nothing was written)."""
    if found and force and not reason:
        raise MissingArgument(f"{found[0].text}: forcing past it needs a reason")
    return passed(found, force=force, reason=reason)


def passed(found: list[Barrier], *, force: bool, reason: str | None) -> str | None:
    """Refuse what the barriers refuse, unless forced with a reason; what forcing went past,
    described (None: nothing stood in the way)."""
    if not found:
        return None
    if not force:
        raise found[0].error
    if not reason:
        first = found[0].error
        raise type(first)(f"{first.message}: forcing past it needs a reason")
    return "; ".join(barrier.text for barrier in found)


def assert_clear(session: Session, deploy: Deploy) -> str | None:
    """The check a deploy's run makes before it starts: refused as `barriers` says (unless it
    was forced with a reason); what forcing went past, described."""
    user = deploy.user.name if deploy.user else None
    found = barriers(session, deploy.app, deploy.environment, user, sha=deploy.sha)
    return passed(found, force=deploy.force, reason=deploy.force_reason)
