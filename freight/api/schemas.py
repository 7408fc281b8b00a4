"""Wire shapes of Freight API 0 (field names as the clients read them) and the serialisers that
build them from database rows, a page at a time (one query per related table, not per row).
The shapes are TypedDicts: plain dicts to build, as a page of hundreds of rows needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy.orm import Session

from freight.catalogue import AppSpec
from freight.db import ApiKey, App, Deploy, Lock, User
from freight.github import repo_of
from freight.service import apps, deploys, locks, releases


def wire_date(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def github_repo_url(url: str) -> str | None:
    """https://github.com/OWNER/REPO for a GitHub remote in any of its forms, else None."""
    repo = repo_of(url)
    return f"https://github.com/{repo}" if repo else None


# -- apps -------------------------------------------------------------------------------------


class EnvironmentPublic(TypedDict):
    defaultRef: str


class PluginPublic(TypedDict):
    type: str
    config: dict[str, Any]


class AppPublic(TypedDict):
    id: str
    name: str
    environments: dict[str, EnvironmentPublic]
    repository: str
    changeLabels: list[str]
    lockedReason: str | None
    source: str


class AppDetails(AppPublic):
    provider: str
    provider_config: dict[str, Any]
    notifiers: list[PluginPublic]
    checks: list[PluginPublic]
    sourceFile: str | None


def _plugins(configs: list[Any]) -> list[PluginPublic]:
    out = []
    for config in configs:
        data = config.model_dump(mode="json")
        out.append(PluginPublic(type=data.pop("type"), config=data))
    return out


def app_public(session: Session, app: App) -> AppPublic:
    spec = apps.spec_of(app)
    return AppPublic(
        id=str(app.id),
        name=app.name,
        environments={
            name: EnvironmentPublic(defaultRef=env.default_ref)
            for name, env in spec.environments.items()
        },
        repository=spec.repository,
        changeLabels=[],
        lockedReason=locks.app_locked_reason(session, app.id),
        source=str(app.source),
    )


def app_details(session: Session, app: App) -> AppDetails:
    spec: AppSpec = apps.spec_of(app)
    provider = spec.provider.model_dump(mode="json")
    return AppDetails(
        **app_public(session, app),
        provider=provider.pop("type"),
        provider_config=provider,
        notifiers=_plugins(spec.notifiers),
        checks=_plugins(spec.checks),
        sourceFile=app.source_file,
    )


# -- deploys ----------------------------------------------------------------------------------


class AppRef(TypedDict):
    id: str
    name: str


class Remote(TypedDict):
    name: str
    url: str


class UserPublic(TypedDict):
    id: str
    name: str
    dateCreated: str | None


class DeployPublic(TypedDict):
    id: str
    name: str
    app: AppRef
    remote: Remote
    user: UserPublic | None
    environment: str
    sha: str | None
    sha_url: str
    ref: str
    number: int
    status: str
    duration: float | None
    estimatedDuration: float | None
    dateCreated: str | None
    dateStarted: str | None
    dateFinished: str | None
    reason: str | None
    flowRunId: str | None
    # Why its run has not started, when no worker is there to start it (not a client field of
    # classic Freight: its clients ignore it).
    waitingFor: str | None


def _user(user: User | None) -> UserPublic | None:
    if user is None:
        return None
    return UserPublic(id=str(user.id), name=user.name, dateCreated=wire_date(user.date_created))


def deploy_page(session: Session, rows: list[Deploy]) -> list[DeployPublic]:
    """Serialise a page of deploys; the estimates come from one query for the whole page."""
    # A finished deploy's estimate is its own duration: only the others need the history.
    unfinished = {(d.app_id, d.environment) for d in rows if d.date_finished is None}
    estimates = deploys.estimated_durations(session, unfinished)
    out = []
    for deploy in rows:
        github = github_repo_url(deploy.app.repository.url)
        duration = round(deploy.duration, 2) if deploy.duration is not None else None
        estimate = estimates.get((deploy.app_id, deploy.environment))
        out.append(
            DeployPublic(
                id=str(deploy.id),
                name=deploy.name,
                app=AppRef(id=str(deploy.app_id), name=deploy.app.name),
                remote=Remote(name="github.com", url=github)
                if github
                else Remote(name="git", url=""),
                user=_user(deploy.user),
                environment=deploy.environment,
                sha=deploy.sha,
                sha_url=f"{github}/commit/{deploy.sha}" if github and deploy.sha else "",
                ref=deploy.ref,
                number=deploy.number,
                status=str(deploy.status),
                duration=duration,
                estimatedDuration=(
                    duration
                    if deploy.date_finished is not None
                    else (round(estimate, 2) if estimate is not None else None)
                ),
                dateCreated=wire_date(deploy.date_created),
                dateStarted=wire_date(deploy.date_started),
                dateFinished=wire_date(deploy.date_finished),
                reason=deploy.reason,
                flowRunId=deploy.flow_run_id,
                waitingFor=deploy.waiting_for,
            )
        )
    return out


def deploy_public(session: Session, deploy: Deploy) -> DeployPublic:
    return deploy_page(session, [deploy])[0]


# -- logs -------------------------------------------------------------------------------------


class ChunkPublic(TypedDict):
    text: str
    date: str | None


class LogPublic(TypedDict):
    nextOffset: int
    chunks: list[ChunkPublic]


# -- locks, releases, keys -----------------------------------------------------------------------


class LockPublic(TypedDict):
    id: str
    app: str
    environment: str | None
    reason: str
    owner: str
    active: bool
    # A freeze holds its owner too, from dateStarts (None: its creation) to dateExpires.
    freeze: bool
    # A freeze that has not begun yet.
    scheduled: bool
    dateStarts: str | None
    dateCreated: str | None
    dateExpires: str | None
    releasedBy: str | None
    dateReleased: str | None


def lock_public(lock: Lock) -> LockPublic:
    return LockPublic(
        id=str(lock.id),
        app=lock.app.name,
        environment=lock.environment,
        reason=lock.reason,
        owner=lock.owner,
        active=locks.in_force(lock),
        freeze=lock.freeze,
        scheduled=locks.scheduled(lock),
        dateStarts=wire_date(lock.date_starts),
        dateCreated=wire_date(lock.date_created),
        dateExpires=wire_date(lock.date_expires),
        releasedBy=lock.released_by,
        dateReleased=wire_date(lock.date_released),
    )


class AutoDeployPublic(TypedDict):
    branch: str
    enabled: bool
    state: str
    reason: str
    sha: str | None
    dateChecked: str | None


class WindowPublic(TypedDict):
    open: bool
    # When it next opens (closed) or closes (open); None: not within a year.
    dateChanges: str | None
    text: str


class ReleasePublic(TypedDict):
    app: str
    environment: str
    sha: str | None
    ref: str | None
    deploy: DeployPublic | None
    user: str | None
    dateFinished: str | None
    running: DeployPublic | None
    queued: int
    locks: list[LockPublic]
    autoDeploy: AutoDeployPublic | None
    # Its deploy windows now; None when it has none.
    window: WindowPublic | None


def release_page(session: Session, state: list[releases.Release]) -> list[ReleasePublic]:
    rows = [d for r in state for d in (r.live, r.running) if d is not None]
    wire = {int(d["id"]): d for d in deploy_page(session, rows)}
    out = []
    for release in state:
        live = release.live
        out.append(
            ReleasePublic(
                app=release.app,
                environment=release.environment,
                sha=live.sha if live else None,
                ref=live.ref if live else None,
                deploy=wire[live.id] if live else None,
                user=live.user.name if live and live.user else None,
                dateFinished=wire_date(live.date_finished) if live else None,
                running=wire[release.running.id] if release.running else None,
                queued=release.queued,
                locks=[lock_public(lock) for lock in release.locks],
                autoDeploy=_auto_deploy(release.auto_deploy),
                window=WindowPublic(
                    open=release.window.open,
                    dateChanges=wire_date(release.window.change),
                    text=release.window.describe(),
                )
                if release.window
                else None,
            )
        )
    return out


def _auto_deploy(auto: releases.AutoDeploy | None) -> AutoDeployPublic | None:
    if auto is None:
        return None
    return AutoDeployPublic(
        branch=auto.branch,
        enabled=auto.enabled,
        state=auto.state,
        reason=auto.reason,
        sha=auto.sha,
        dateChecked=wire_date(auto.checked),
    )


class KeyPublic(TypedDict):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    apps: list[str] | None
    createdBy: str | None
    dateCreated: str | None
    dateLastUsed: str | None
    revokedBy: str | None
    dateRevoked: str | None


class KeyCreated(KeyPublic):
    key: str


def key_public(row: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=str(row.id),
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        apps=row.apps,
        createdBy=row.created_by,
        dateCreated=wire_date(row.date_created),
        dateLastUsed=wire_date(row.date_last_used),
        revokedBy=row.revoked_by,
        dateRevoked=wire_date(row.date_revoked),
    )
