"""What the dashboard's pages show, built from the service functions the API uses: the
overview (every app and environment, what runs now, the last deploys, deploys per day) and a
deploy's page (its times, commits, steps and log)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ScalarSelect, func, literal, select, true, union_all
from sqlalchemy.orm import Session

from freight import vcs
from freight.api import schemas
from freight.api.deps import Runtime
from freight.dashboard import charts
from freight.db import App, Deploy, DeployStatus, User, session_scope, utcnow
from freight.errors import FreightError
from freight.execution import refs
from freight.service import apps, deploys, releases, steps, workers
from freight.service.keys import Principal, Scope

RECENT = 12
REBUILT_EVERY = 30.0
BUILD_WAIT = 10.0  # how long a page waits on another's build before it builds its own
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


@dataclass(frozen=True)
class Unsettled:
    """An environment's last deploy that failed or was cancelled, as its row shows it."""

    id: int
    number: int
    status: str
    user: str
    reason: str | None
    dateFinished: str | None


def _unsettled(session: Session, keys: list[tuple[int, str]]) -> dict[tuple[int, str], Unsettled]:
    """Per app/env, its last deploy that failed or was cancelled (shown until a later one
    finishes: the caller compares it with what is live): an index probe per app, environment
    and outcome, instead of reading every failure of a long history."""
    if not keys:
        return {}
    # The environments' names as a table (a UNION of literals: SQLite's VALUES takes no names).
    names = union_all(
        *(select(literal(name).label("environment")) for name in sorted({e for _, e in keys}))
    ).subquery("names")

    def newest(status: DeployStatus) -> ScalarSelect[int | None]:
        return (
            select(func.max(Deploy.id))
            .where(
                Deploy.app_id == App.id,
                Deploy.environment == names.c.environment,
                Deploy.status == status,
            )
            .scalar_subquery()
        )

    rows = session.execute(
        select(
            App.id,
            names.c.environment,
            newest(DeployStatus.FAILED),
            newest(DeployStatus.CANCELLED),
        )
        .select_from(App)
        .join(names, true())
        .where(App.id.in_({app_id for app_id, _ in keys}))
    )
    wanted = set(keys)
    ids = [
        max(found)
        for app_id, environment, *outcomes in rows
        if (app_id, environment) in wanted and (found := [i for i in outcomes if i is not None])
    ]
    if not ids:
        return {}
    # Only what the row shows: not each deploy with its app's whole config.
    shown = session.execute(
        select(
            Deploy.id,
            Deploy.app_id,
            Deploy.environment,
            Deploy.number,
            Deploy.status,
            User.name,
            Deploy.reason,
            Deploy.date_finished,
        )
        .outerjoin(User, User.id == Deploy.user_id)
        .where(Deploy.id.in_(ids))
    )
    return {
        (app_id, environment): Unsettled(
            deploy_id, number, str(status), user or "", reason, schemas.wire_date(finished)
        )
        for deploy_id, app_id, environment, number, status, user, reason, finished in shown
    }


def release_rows(
    session: Session, rt: Runtime, who: Principal, app: str | None = None
) -> list[dict[str, Any]]:
    """Per app and environment: what is live, what runs, what waits, what holds it, and the
    last failure not yet made good."""
    state = releases.release_state(session, app, apps_allowed=who.apps)
    bad = _unsettled(session, [(r.app_row.id, r.environment) for r in state])
    behind = refs.behind_default(rt.settings.workspaces)
    rows = []
    for release, public in zip(state, schemas.release_page(session, state), strict=True):
        app_row, environment, live = release.app_row, release.environment, release.live
        failed = bad.get((app_row.id, environment))
        rows.append(
            {
                **public,
                "progress": progress(public["running"]),
                # A failure stands until a later deploy finishes.
                "unsettled": failed if failed and (live is None or failed.id > live.id) else None,
                "behind": behind(app_row, environment, live.sha) if live and live.sha else None,
                "defaultRef": apps.default_ref_of(app_row, environment),
                "protected": apps.is_protected(app_row, environment),
                "canAct": can_act(who, release.app),
            }
        )
    return rows


def overview(rt: Runtime, who: Principal, *, seen: Hashable) -> dict[str, Any]:
    """The overview as this viewer's key sees it, as of what this API process's reader of
    changes has `seen` (freight/dashboard/stream.py, Hub.version). Built once per change: a
    hundred open pages after the same change cost one build (see `_Overviews`), and one that
    finds it built reads no database at all."""
    # What only time changes (a window opening, a worker going silent) counts as a change too.
    version = (seen, int(time.monotonic() // REBUILT_EVERY))
    seen_as = (who.apps, who.allows(Scope.DEPLOY))

    def build() -> dict[str, Any]:
        with session_scope(rt.engine, read_only=True) as session:
            return _build_overview(session, rt, who)

    return _OVERVIEWS.get(seen_as, version, build)


def _build_overview(session: Session, rt: Runtime, who: Principal) -> dict[str, Any]:
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


class _Overviews:
    """The last overview built for each way of seeing it (the apps a key may see, whether it
    may act), with the version of the database it was built from. After a change every open
    page asks at once: one of them builds, the others wait for that build."""

    def __init__(self, size: int = 64) -> None:
        self._built: OrderedDict[Hashable, tuple[Hashable, dict[str, Any]]] = OrderedDict()
        self._building: dict[tuple[Hashable, Hashable], threading.Event] = {}
        self._lock = threading.Lock()
        self._size = size

    def get(
        self, seen_as: Hashable, version: Hashable, build: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        key = (seen_as, version)
        while True:
            with self._lock:
                kept = self._built.get(seen_as)
                if kept is not None and kept[0] == version:
                    return kept[1]
                underway = self._building.get(key)
                if underway is None:
                    self._building[key] = threading.Event()
                    break
            underway.wait(BUILD_WAIT)  # then look again (or build, if that one failed)
        try:
            made = build()
            with self._lock:
                self._built[seen_as] = (version, made)
                self._built.move_to_end(seen_as)
                while len(self._built) > self._size:
                    self._built.popitem(last=False)
            return made
        finally:
            with self._lock:
                self._building.pop(key).set()


_OVERVIEWS = _Overviews()


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
