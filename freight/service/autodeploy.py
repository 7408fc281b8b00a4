"""What automatic deploys decide from the database: which environments follow a branch, when
a branch's head is not to be deployed (live already, under way, held by a person's decision or
a lock), which queued automatic deploys the branch left behind, and what each environment's
last look found. The looking itself (git ls-remote, checks) is freight/execution/autodeploy.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.db import App, AutoDeployState, Deploy, DeployStatus, utcnow
from freight.errors import NotPromoted, OutsideWindow
from freight.service import apps, barriers, deploys, promotion, queue, releases
from freight.service.releases import AutoState

AUTODEPLOY_USER = "autodeploy"


@dataclass(frozen=True)
class Target:
    app_id: int
    app: str
    environment: str
    url: str
    branch: str
    # Only changes under these paths are deployed (none: every change).
    paths: tuple[str, ...] = ()
    # An environment with `promote: auto` follows what is live on this one, not a branch.
    promote_from: str | None = None


@dataclass(frozen=True)
class Outcome:
    app: str
    environment: str
    branch: str
    sha: str | None
    state: AutoState
    reason: str


def targets(session: Session) -> list[Target]:
    found = []
    for app in session.scalars(select(App).order_by(App.name)):
        spec = apps.spec_of(app)
        for name in spec.environments:
            config = spec.environment(name)
            auto = config.auto_deploy
            if auto is not None and auto.enabled:
                found.append(
                    Target(
                        app.id, app.name, name, app.repository.url, auto.branch, tuple(auto.paths)
                    )
                )
            elif config.promote == "auto":
                (source,) = config.requires
                found.append(
                    Target(
                        app.id, app.name, name, app.repository.url, promotion.label(source),
                        promote_from=source,
                    )
                )  # fmt: skip
    return found


def outcome(target: Target, sha: str | None, state: AutoState, reason: str) -> Outcome:
    return Outcome(target.app, target.environment, target.branch, sha, state, reason)


def supersede(session: Session, target: Target, head: str) -> None:
    """The branch moved on: automatic deploys of older commits still queued will not run."""
    for older in queue.pending(session, target.app_id, target.environment):
        if older.sha != head and older.user is not None and older.user.name == AUTODEPLOY_USER:
            by = f"{AUTODEPLOY_USER} (superseded: {target.branch} is at {head[:7]})"
            deploys.cancel_deploy(session, older, by=by)


def held(session: Session, target: Target, head: str) -> Outcome | None:
    """Why the branch's head is not to be deployed now, if it is not."""
    short = head[:7]
    live = releases.live_deploy(session, target.app_id, target.environment)
    if live is not None and live.sha == head:
        return outcome(target, head, AutoState.UP_TO_DATE, "up to date")
    of_head = (
        select(Deploy)
        .where(
            Deploy.app_id == target.app_id,
            Deploy.environment == target.environment,
            Deploy.sha == head,
        )
        .order_by(Deploy.id.desc())
    )
    under_way = session.scalar(
        of_head.where(Deploy.status.in_([DeployStatus.PENDING, DeployStatus.IN_PROGRESS]))
    )
    if under_way is not None:
        return outcome(target, head, AutoState.DEPLOYING, f"deploying {under_way.name}")
    # The last word on this sha, by a person or by how its deploy went, stands until a person
    # deploys (or the branch moves): a failure, a cancel, a rollback away from it.
    for ended in session.scalars(of_head.where(Deploy.status.in_(FINAL)).limit(5)):
        if ended.status == DeployStatus.FAILED:
            why = f"sha {short} failed"
        elif ended.status == DeployStatus.FINISHED and live is not None:
            who = f" by {live.user.name}" if live.user else ""
            why = f"sha {short} was replaced by {live.name}{who}"
        elif ended.status == DeployStatus.CANCELLED and _cancelled_by_a_person(ended):
            why = f"sha {short} was cancelled by {ended.cancelled_by}"
        else:
            continue
        return outcome(target, head, AutoState.BLOCKED, f"{why}, deploy manually to resume")
    in_force = barriers.barriers(
        session, session.get_one(App, target.app_id), target.environment, None, sha=head
    )
    if in_force:
        # A window opens and a commit bakes by themselves; a lock or a freeze is someone's
        # decision.
        passes = isinstance(in_force[0].error, (OutsideWindow, NotPromoted))
        state = AutoState.WAITING if passes else AutoState.BLOCKED
        return outcome(target, head, state, in_force[0].holding)
    return None


FINAL = [DeployStatus.FINISHED, DeployStatus.FAILED, DeployStatus.CANCELLED]


def _cancelled_by_a_person(deploy: Deploy) -> bool:
    by = deploy.cancelled_by or ""
    return by not in barriers.REFUSERS and not by.startswith(AUTODEPLOY_USER)


def remember(session: Session, target: Target, found: Outcome) -> None:
    """Keep what the last look decided, for the API, the CLI and the dashboard."""
    row = session.get(AutoDeployState, (target.app_id, target.environment))
    if row is None:
        row = AutoDeployState(app_id=target.app_id, environment=target.environment)
        session.add(row)
    row.branch, row.sha = target.branch, found.sha
    row.state, row.reason, row.date_checked = str(found.state), found.reason, utcnow()
