"""What the dashboard's pages show, built from the service functions the API uses: the
overview (every app and environment, what runs now, the last deploys, deploys per day) and a
deploy's page (its times, commits, steps and log)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from freight import vcs
from freight.api import schemas
from freight.api.deps import Runtime
from freight.dashboard import charts
from freight.db import App, Deploy, DeployStatus, utcnow
from freight.errors import FreightError
from freight.execution import refs
from freight.service import apps, deploys, releases, steps, workers
from freight.service.keys import Principal, Scope

RECENT = 12
SHOWN_COMMITS = 50
# What a person reads for each status (the wire keeps the classic names).
STATUS_WORDS = {
    "pending": "queued",
    "in_progress": "in progress",
    "finished": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
}


def can_act(who: Principal, app: str) -> bool:
    """Whether the viewer's key may deploy, lock and cancel in the app: if not, the pages show
    no controls for it."""
    return who.allows(Scope.DEPLOY) and who.allows_app(app)


def progress(deploy: schemas.DeployPublic | None) -> int | None:
    if deploy is None or not deploy["estimatedDuration"] or deploy["duration"] is None:
        return None
    return min(99, int(100 * deploy["duration"] / deploy["estimatedDuration"]))


def _unsettled(session: Session, app_ids: list[int]) -> dict[tuple[int, str], Deploy]:
    """Per app/env, its last deploy that failed or was cancelled (shown until a later one
    finishes: the caller compares it with what is live)."""
    newest = (
        select(func.max(Deploy.id))
        .where(
            Deploy.app_id.in_(app_ids),
            Deploy.status.in_([DeployStatus.FAILED, DeployStatus.CANCELLED]),
        )
        .group_by(Deploy.app_id, Deploy.environment)
    )
    return {
        (d.app_id, d.environment): d
        for d in session.scalars(select(Deploy).where(Deploy.id.in_(newest)))
    }


def release_rows(
    session: Session, rt: Runtime, who: Principal, app: str | None = None
) -> list[dict[str, Any]]:
    """Per app and environment: what is live, what runs, what waits, what holds it, and the
    last failure not yet made good."""
    state = releases.release_state(session, app, apps_allowed=who.apps)
    names = {r.app for r in state}
    rows_by_name = {a.name: a for a in session.scalars(select(App).where(App.name.in_(names)))}
    bad = _unsettled(session, [a.id for a in rows_by_name.values()])
    behind = refs.behind_default(rt.settings.workspaces)
    shown_bad = {}
    for release in state:
        app_row = rows_by_name[release.app]
        failed = bad.get((app_row.id, release.environment))
        if failed is not None and (release.live is None or failed.id > release.live.id):
            shown_bad[(release.app, release.environment)] = failed
    bad_wire = {int(d["id"]): d for d in schemas.deploy_page(session, list(shown_bad.values()))}
    rows = []
    for release, public in zip(state, schemas.release_page(session, state), strict=True):
        app_row = rows_by_name[release.app]
        failed = shown_bad.get((release.app, release.environment))
        rows.append(
            {
                **public,
                "progress": progress(public["running"]),
                "unsettled": bad_wire[failed.id] if failed else None,
                "behind": behind(app_row, release.environment, release.live.sha)
                if release.live and release.live.sha
                else None,
                "defaultRef": apps.default_ref_of(app_row, release.environment),
                "protected": apps.is_protected(app_row, release.environment),
                "canAct": can_act(who, release.app),
            }
        )
    return rows


def overview(session: Session, rt: Runtime, who: Principal) -> dict[str, Any]:
    rows = release_rows(session, rt, who)
    recent = deploys.list_deploys(session, deploys.DeployFilter(apps=who.apps), limit=RECENT)
    return {
        "workers": workers.list_workers(
            session, heartbeat_interval=rt.settings.heartbeat_interval, apps=who.apps
        ),
        "releases": rows,
        "running": [r for r in rows if r["running"]],
        "waiting": sum(r["queued"] for r in rows),
        "recent": schemas.deploy_page(session, recent),
        "per_day": charts.deploys_per_day(
            deploys.daily_outcomes(session, days=31, today=utcnow(), apps=who.apps)
        ),
    }


@dataclass(frozen=True)
class Shipped:
    """The commits a deploy took live (or, going back, took away), as its mirror knows them."""

    added: list[vcs.Commit]
    removed: list[vcs.Commit]
    error: str | None = None


def shipped(rt: Runtime, deploy: Deploy) -> Shipped:
    if deploy.sha is None:
        return Shipped([], [])
    mirror = vcs.mirror_path(rt.settings.workspaces, deploy.app.repository.url)
    if not mirror.exists():
        return Shipped([], [], "the repository's mirror is not on this host yet")
    timeout = rt.settings.git_access().timeout
    try:
        added = vcs.commits_between(
            mirror, deploy.prev_sha, deploy.sha, limit=SHOWN_COMMITS, timeout=timeout
        )
        removed = (
            vcs.commits_between(
                mirror, deploy.sha, deploy.prev_sha, limit=SHOWN_COMMITS, timeout=timeout
            )
            if deploy.prev_sha
            else []
        )
    except FreightError as exc:
        return Shipped([], [], exc.message)
    return Shipped(added, removed)


def deploy_state(session: Session, deploy: Deploy) -> dict[str, Any]:
    """The deploy as its page shows it, and as its event stream sends it."""
    public = schemas.deploy_public(session, deploy)
    shows_verify = bool((deploy.config or {}).get("verify"))
    return {
        **public,
        "statusText": STATUS_WORDS.get(public["status"], public["status"]),
        "prevSha": deploy.prev_sha,
        "steps": [
            {
                "name": step.name,
                "state": str(step.state),
                "duration": round(step.duration, 2) if step.duration is not None else None,
                "dateStarted": schemas.wire_date(step.started),
            }
            for step in steps.of(session, deploy, shows_verify=shows_verify)
        ],
    }
