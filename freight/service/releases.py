"""Release state: which commit is live where (the last finished deploy), and what came before."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from freight import vcs, windows
from freight.db import App, AutoDeployState, Deploy, DeployStatus, LiveRelease, Lock
from freight.errors import FreightError
from freight.service import apps, barriers, locks, promotion


def live_deploy(session: Session, app_id: int, environment: str) -> Deploy | None:
    release = session.get(LiveRelease, (app_id, environment))
    return release.deploy if release else None


def live_sha_since(session: Session, app_id: int, environment: str) -> tuple[str, datetime] | None:
    """The live sha and when its deploy finished, without loading the deploy (a check-in asks
    this for each app it reports)."""
    row = session.execute(
        select(Deploy.sha, Deploy.date_finished)
        .join(LiveRelease, LiveRelease.deploy_id == Deploy.id)
        .where(LiveRelease.app_id == app_id, LiveRelease.environment == environment)
    ).first()
    if row is None or row.sha is None or row.date_finished is None:
        return None
    return row.sha, row.date_finished


def record_finished(session: Session, deploy: Deploy) -> None:
    """A finished deploy is what is live in its environment now."""
    release = session.get(LiveRelease, (deploy.app_id, deploy.environment))
    if release is None:
        session.add(
            LiveRelease(app_id=deploy.app_id, environment=deploy.environment, deploy_id=deploy.id)
        )
    else:
        release.deploy_id = deploy.id
        session.expire(release, ["deploy"])


def rebuild(session: Session) -> None:
    """Work out what is live everywhere again from the whole history (after a bulk import).
    One app/env's deploys run one at a time in id order: the latest finished has the top id."""
    session.execute(delete(LiveRelease))
    newest = (
        select(Deploy.app_id, Deploy.environment, func.max(Deploy.id))
        .where(Deploy.status == DeployStatus.FINISHED)
        .group_by(Deploy.app_id, Deploy.environment)
    )
    session.execute(insert(LiveRelease).from_select(["app_id", "environment", "deploy_id"], newest))


def current_sha(session: Session, app_id: int, environment: str) -> str | None:
    deploy = live_deploy(session, app_id, environment)
    return deploy.sha if deploy else None


def previous_sha(session: Session, app_id: int, environment: str) -> str | None:
    """The last finished sha other than the live one: what a rollback goes back to."""
    current = current_sha(session, app_id, environment)
    if current is None:
        return None
    return session.scalar(
        select(Deploy.sha)
        .where(
            Deploy.app_id == app_id,
            Deploy.environment == environment,
            Deploy.status == DeployStatus.FINISHED,
            Deploy.sha != current,
        )
        .order_by(Deploy.date_finished.desc(), Deploy.id.desc())
        .limit(1)
    )


class AutoState(StrEnum):
    UP_TO_DATE = "up_to_date"
    DEPLOYING = "deploying"  # a deploy of the branch's head is queued or running
    QUEUED = "queued"  # this poll queued one
    WAITING = "waiting"  # for checks, or for a deploy window to open
    BLOCKED = "blocked"  # a lock, a failed sha, failed checks
    ERROR = "error"  # the remote could not be read
    DISABLED = "disabled"  # by the app's config
    UNKNOWN = ""  # not looked at yet


@dataclass(frozen=True)
class AutoDeploy:
    """An environment's automatic deploys: on which branch, and what they did at last look."""

    branch: str
    enabled: bool
    state: AutoState
    reason: str
    sha: str | None
    checked: datetime | None


@dataclass(frozen=True)
class Release:
    app_row: App
    environment: str
    live: Deploy | None
    running: Deploy | None
    queued: int
    locks: list[Lock] = field(default_factory=list)
    auto_deploy: AutoDeploy | None = None
    # Its deploy windows now (None: it has none).
    window: windows.Verdict | None = None

    @property
    def app(self) -> str:
        return self.app_row.name


def release_state(
    session: Session, app_name: str | None = None, *, apps_allowed: frozenset[str] | None = None
) -> list[Release]:
    """Per app and environment: the live deploy, the running one, the queue length and the
    locks in force; a handful of queries whatever the number of apps."""
    query = select(App).order_by(App.name)
    if app_name is not None:
        query = query.where(App.name == app_name)
    if apps_allowed is not None:
        query = query.where(App.name.in_(apps_allowed))
    app_rows = list(session.scalars(query))
    ids = [app.id for app in app_rows]
    live = _live_deploys(session, {app.id: app for app in app_rows})
    running = {
        (d.app_id, d.environment): d
        for d in session.scalars(
            select(Deploy).where(Deploy.app_id.in_(ids), Deploy.status == DeployStatus.IN_PROGRESS)
        )
    }
    queued = {
        (app_id, environment): count
        for app_id, environment, count in session.execute(
            select(Deploy.app_id, Deploy.environment, func.count(Deploy.id))
            .where(Deploy.app_id.in_(ids), Deploy.status == DeployStatus.PENDING)
            .group_by(Deploy.app_id, Deploy.environment)
        )
    }
    looked = {
        (row.app_id, row.environment): row
        for row in session.scalars(select(AutoDeployState).where(AutoDeployState.app_id.in_(ids)))
    }
    in_force: dict[int, list[Lock]] = {}
    for lock in locks.active_for_apps(session, ids):
        in_force.setdefault(lock.app_id, []).append(lock)
    result = []
    for app in app_rows:
        for environment in apps.environment_names(app):
            key = (app.id, environment)
            held = [
                lock for lock in in_force.get(app.id, []) if lock.environment in (None, environment)
            ]
            result.append(
                Release(
                    app_row=app,
                    environment=environment,
                    live=live.get(key),
                    running=running.get(key),
                    queued=queued.get(key, 0),
                    locks=held,
                    auto_deploy=_auto_deploy(app, environment, looked.get(key), held),
                    window=barriers.window(app, environment),
                )
            )
    return result


def _auto_deploy(
    app: App, environment: str, looked: AutoDeployState | None, held: list[Lock]
) -> AutoDeploy | None:
    """What the last poll saw, except what is known now without one: the config turned it
    off, or a lock holds it (the poll would only say so up to a minute later)."""
    settings = app.config["environments"][environment]
    configured = settings.get("auto_deploy")
    if configured:
        branch, enabled = configured["branch"], configured.get("enabled", True)
    elif settings.get("promote") == "auto":
        (source,) = settings["requires"]
        branch, enabled = promotion.label(source), True
    else:
        return None
    seen = looked if looked is not None and looked.branch == branch else None
    sha, checked = (seen.sha, seen.date_checked) if seen else (None, None)
    if not enabled:
        reason = "turned off in the app's config"
        return AutoDeploy(branch, False, AutoState.DISABLED, reason, sha, checked)
    if held:
        return AutoDeploy(branch, True, AutoState.BLOCKED, locks.holding(held[0]), sha, checked)
    if seen is None:
        return AutoDeploy(branch, True, AutoState.UNKNOWN, "not checked yet", None, None)
    return AutoDeploy(branch, True, AutoState(seen.state), seen.reason, sha, checked)


def _live_deploys(session: Session, apps_by_id: dict[int, App]) -> dict[tuple[int, str], Deploy]:
    # The apps are loaded already: each deploy is given its app, instead of every row carrying
    # (and decoding) its app's whole config again.
    rows = session.scalars(
        select(LiveRelease)
        .where(LiveRelease.app_id.in_(list(apps_by_id)))
        .options(joinedload(LiveRelease.deploy).noload(Deploy.app))
    )
    live = {}
    for row in rows:
        set_committed_value(row.deploy, "app", apps_by_id[row.app_id])
        live[(row.app_id, row.environment)] = row.deploy
    return live


def history(
    session: Session, *, app: str, environment: str, offset: int = 0, limit: int = 25
) -> list[Deploy]:
    """The finished deploys of one app/env, newest first: what was live, and when."""
    return list(
        session.scalars(
            select(Deploy)
            .join(App)
            .where(
                App.name == app,
                Deploy.environment == environment,
                Deploy.status == DeployStatus.FINISHED,
            )
            .order_by(Deploy.date_finished.desc(), Deploy.id.desc())
            .offset(offset)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class ReleaseNotes:
    """One deploy's outcome as a page for the orchestrator's UI (a versioned history per env)."""

    key: str
    markdown: str
    description: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def release_notes(session: Session, deploy: Deploy, *, workspace_root: Path) -> ReleaseNotes:
    """What was deployed where, by whom, how it went, and the commits it shipped."""
    commits: list[vcs.Commit] = []
    heading = "Commits"
    if deploy.sha:
        mirror = vcs.mirror_path(workspace_root, deploy.app.repository.url)
        with contextlib.suppress(FreightError):
            commits = vcs.commits_between(mirror, deploy.prev_sha, deploy.sha, limit=50)
            if not commits and deploy.prev_sha and deploy.prev_sha != deploy.sha:
                # Nothing new: a step back, and what it took away is the news.
                commits = vcs.commits_between(mirror, deploy.sha, deploy.prev_sha, limit=50)
                heading = "Rolled back"
    duration = f"{deploy.duration:.0f} s" if deploy.duration is not None else "-"
    rows = [
        ("outcome", str(deploy.status) + (f": {deploy.reason}" if deploy.reason else "")),
        ("sha", f"`{deploy.sha}`"),
        ("ref", f"`{deploy.ref}`"),
        ("previous sha", f"`{deploy.prev_sha}`" if deploy.prev_sha else "none (first deploy)"),
        ("by", deploy.user.name if deploy.user else "-"),
        ("duration", duration),
    ]
    lines = [f"## {deploy.name} {deploy.status}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value.replace('|', '/')} |" for name, value in rows]
    lines += ["", f"### {heading} ({len(commits)}{'+' if len(commits) == 50 else ''})", ""]
    lines += [
        f"- `{c.sha[:7]}` {c.subject.replace('|', '/')} ({c.author_name})" for c in commits
    ] or ["- none"]
    return ReleaseNotes(
        key=f"release-{_slug(deploy.app.name)}-{_slug(deploy.environment)}",
        markdown="\n".join(lines) + "\n",
        description=f"{deploy.name}: {deploy.status} at {(deploy.sha or '')[:7]}",
    )
